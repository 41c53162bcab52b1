"""`EditCase`: one fact to change, with the probes that train and measure it.

Every data source (KnowEdit, EasyEdit's flat files, QAEdit, the knowledge world) is read into this one
form, so the editors, the AGT dataset builder and the evaluation never look at a source's own schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from edit_grpo_trl.answers import normalize_answer


class ProbeKind(StrEnum):
    """What a probe is for. Only the TRAIN_* kinds ever reach training; the others are only evaluated.

    TRAIN_LOCALITY probes are unedited facts that stage 2 may train to keep (the locality rows and the
    locality loss); LOCALITY probes measure what was kept and are never trained on.
    """

    TRAIN_GENERALIZATION = "train_generalization"
    EVAL_GENERALIZATION = "eval_generalization"
    PORTABILITY = "portability"
    LOCALITY = "locality"
    TRAIN_LOCALITY = "train_locality"


EVALUATION_KINDS = (ProbeKind.EVAL_GENERALIZATION, ProbeKind.PORTABILITY, ProbeKind.LOCALITY)
TRAINING_KINDS = (ProbeKind.TRAIN_GENERALIZATION, ProbeKind.TRAIN_LOCALITY)


class CaseError(ValueError):
    """An edit case or one of its probes is malformed."""


def _answer_tuple(answers: str | Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(answers, str):
        answers = (answers,)
    result: list[str] = []
    for answer in answers:
        if not isinstance(answer, str):
            raise CaseError(f"{what}: answers must be strings, got {type(answer).__name__} ({answer!r})")
        answer = answer.strip()
        if answer and answer not in result:
            result.append(answer)
    if not result:
        raise CaseError(f"{what}: needs at least one non-empty answer")
    return tuple(result)


@dataclass(frozen=True)
class Probe:
    """One prompt whose answer the edit should (or, for locality, should not) change.

    ``answers`` holds every accepted answer; the first is the one teacher-forced metrics score.
    ``key`` is the KnowEdit sub-key a portability or locality item came from (``"Reasoning"``,
    ``"Subject_Aliasing"``, ``"Relation_Specificity"``, ...), or a knowledge-world probe family.
    """

    prompt: str
    answers: tuple[str, ...]
    kind: ProbeKind
    key: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise CaseError(f"probe prompt must be a non-empty string, got {self.prompt!r}")
        object.__setattr__(self, "kind", ProbeKind(self.kind))
        object.__setattr__(self, "answers", _answer_tuple(self.answers, f"probe {self.prompt!r}"))

    @property
    def answer(self) -> str:
        return self.answers[0]


@dataclass(frozen=True)
class EditCase:
    """One fact to change: ``subject`` + ``prompt`` (the anchor) -> ``target_new``, was ``target_true``.

    ``prompt`` must contain ``subject`` (the locate-then-edit editors find the subject's last token in it).
    ``target_new`` lists the new object first, then its aliases. Construction refuses a case whose training
    prompts overlap its evaluation prompts or its anchor: measurements on seen prompts mean nothing.
    """

    case_id: str
    subject: str
    prompt: str
    target_new: tuple[str, ...]
    target_true: str | None = None
    probes: tuple[Probe, ...] = ()
    relation: str | None = None
    source: str | None = None
    metadata: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        label = f"edit case {self.case_id!r}"
        if not isinstance(self.case_id, str) or not self.case_id:
            raise CaseError(f"edit case id must be a non-empty string, got {self.case_id!r}")
        for name in ("subject", "prompt"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise CaseError(f"{label}: field {name!r} must be a non-empty string, got {value!r}")
        if self.subject not in self.prompt:
            raise CaseError(
                f"{label}: the prompt {self.prompt!r} does not contain the subject {self.subject!r}"
            )
        object.__setattr__(self, "target_new", _answer_tuple(self.target_new, f"{label} target_new"))
        object.__setattr__(self, "probes", tuple(self.probes))
        for probe in self.probes:
            if not isinstance(probe, Probe):
                raise CaseError(f"{label}: probes must be Probe objects, got {type(probe).__name__}")
        self._check_disjoint(label)

    def _check_disjoint(self, label: str) -> None:
        training = {
            normalize_answer(p.prompt): p.prompt for kind in TRAINING_KINDS for p in self.probes_of(kind)
        }
        evaluation = {normalize_answer(p.prompt) for kind in EVALUATION_KINDS for p in self.probes_of(kind)}
        overlap = sorted(training[key] for key in training.keys() & evaluation)
        if overlap:
            raise CaseError(f"{label}: training prompts overlap its evaluation prompts: {overlap}")
        anchor = normalize_answer(self.prompt)
        if anchor in training:
            raise CaseError(f"{label}: the anchor prompt is also listed as a training prompt")
        if anchor in evaluation:
            raise CaseError(f"{label}: the anchor prompt is also listed as an evaluation probe")

    @property
    def new_object(self) -> str:
        return self.target_new[0]

    def probes_of(self, kind: ProbeKind | str, key: str | None = None) -> list[Probe]:
        kind = ProbeKind(kind)
        return [p for p in self.probes if p.kind == kind and (key is None or p.key == key)]

    def with_probes(self, probes: Iterable[Probe]) -> EditCase:
        """A copy with other probes (checked again for disjointness)."""
        return EditCase(**{**self.to_dict(), "probes": tuple(probes)} | {"metadata": dict(self.metadata)})

    def to_dict(self) -> dict:
        data = asdict(self)
        data["target_new"] = list(self.target_new)
        data["probes"] = [
            {"prompt": p.prompt, "answers": list(p.answers), "kind": p.kind.value, "key": p.key}
            for p in self.probes
        ]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> EditCase:
        data = dict(data)
        data["probes"] = tuple(Probe(**probe) for probe in data.get("probes", ()))
        data["target_new"] = (
            tuple(data["target_new"]) if not isinstance(data["target_new"], str) else data["target_new"]
        )
        return cls(**data)


def save_cases(cases: Iterable[EditCase], path: str | Path) -> Path:
    """Write cases as JSON lines (atomically: a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        for case in cases:
            handle.write(json.dumps(case.to_dict(), ensure_ascii=False) + "\n")
    temporary.replace(path)
    return path


def load_cases(path: str | Path) -> list[EditCase]:
    """Read cases written by :func:`save_cases`; a bad line is reported with its file and line number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no edit-case file at {path}")
    return list(_iter_cases(path))


def _iter_cases(path: Path) -> Iterator[EditCase]:
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield EditCase.from_dict(json.loads(line))
            except (json.JSONDecodeError, TypeError, KeyError, CaseError) as error:
                raise CaseError(f"{path}:{line_number}: {error}") from error
