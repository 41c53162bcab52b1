"""The other edit-data formats researchers pass around, and :func:`load_edit_cases`, the one entry point.

Formats (``format=`` names):

* ``knowedit``: KnowEdit's four splits (:mod:`edit_grpo_trl.data.knowedit`); a file, a folder, or the Hub.
* ``easyedit``: EasyEdit's flat records, as in its CounterFact runs (``counterfact-edit.json``):
  ``case_id``, ``prompt``, ``subject``, ``target_new``, ``ground_truth``, ``rephrase_prompt``,
  ``locality_prompt``, ``locality_ground_truth``. Locality probes get the key ``"neighborhood"`` (EasyEdit's
  name for them).
* ``zsre_mend``: the MEND/ROME ZsRE files EasyEdit reads with ``ZsreDataset`` (``zsre_mend_eval.json``):
  ``subject``, ``src``, ``alt``, ``answers``, ``rephrase``, ``loc``, ``loc_ans`` (plus ``pred`` and
  ``cond``, kept as extras) and, in EasyEdit's one-hop file ``zsre_mend_eval_portability_gpt4.json``,
  ``portability`` {``New Question``, ``New Answer``, ``Recalled Relation``}: the question and answer
  become a ``one_hop`` portability probe, the other keys stay in ``record_extra["portability"]``. EasyEdit silently skips records whose ``alt`` is
  empty; here they are invalid records (an error, or skipped and counted with ``skip_invalid``).
* ``qaedit``: QAEdit from "The Mirage of Model Editing" (ACL 2025): ``id`` (an integer), ``source``
  (``NQ``, ``TQA``, ``SQA``), ``prompt`` (a question), ``target``, ``subject``, ``rephrase``, ``locality``
  as a list of ``{loc, loc_ans}`` (five in the published sample). ``id`` is unique only within one source,
  so the case id is ``"<source>/<id>"`` (the plain id for a record without ``source``); a repeated source
  and id is an invalid record. Its reference code reads only the first locality item; we keep all of
  them. QAEdit has no old object (``target_true`` is None).
* ``cases``: this project's own JSON lines (:func:`edit_grpo_trl.data.cases.save_cases`).
* ``world``: the generated knowledge world, by name: ``"world:<size>[:<seed>]"`` or ``"world:<model dir>"``
  (:func:`parse_world_spec` holds the rule, and the pipeline reads model names with it too).
* ``facts:<bank>[:<seed>]`` (by name only): real-fact edit cases from a shipped fact bank
  (:mod:`edit_grpo_trl.data.facts`), e.g. ``"facts:real"``.

``format="auto"`` picks the format from the name (``world:``, ``facts:``, ``knowedit:``) or from the first
record's fields; a folder is read as KnowEdit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edit_grpo_trl.data.cases import EditCase, Probe, ProbeKind, load_cases
from edit_grpo_trl.data.knowedit import KNOWEDIT_REPO, detect_split, load_knowedit
from edit_grpo_trl.data.records import (
    DataFileError,
    FieldError,
    LoadedCases,
    RecordStats,
    convert_records,
    drop_probes_equal_to_anchor,
    parse_answers,
    read_records,
    require_text,
    text_list,
)

logger = logging.getLogger(__name__)

FORMATS = ("auto", "knowedit", "easyedit", "zsre_mend", "qaedit", "cases", "world")
WORLD_PREFIX = "world:"
NEIGHBORHOOD = "neighborhood"


def _required_answers(record: dict, name: str, stats: RecordStats, family: str) -> tuple[str, ...]:
    if name not in record:
        raise FieldError(name, "is missing")
    answers, shape = parse_answers(record[name], name)
    if not answers:
        raise FieldError(name, "has no non-empty answer")
    stats.shape(family, shape)
    return answers


def _optional_answers(record: dict, name: str, stats: RecordStats, family: str) -> tuple[str, ...]:
    answers, shape = parse_answers(record.get(name), name)
    stats.shape(family, shape)
    return answers


def _paired_probes(
    prompts_value: Any,
    answers_value: Any,
    prompt_field: str,
    answer_field: str,
    kind: ProbeKind,
    key: str,
    stats: RecordStats,
) -> list[Probe]:
    """Probes from a prompt field and its answer field: one string each, or two lists of one length."""
    if prompts_value is None and answers_value is None:
        return []
    if prompts_value is None or answers_value is None:
        missing = prompt_field if prompts_value is None else answer_field
        present = answer_field if prompts_value is None else prompt_field
        raise FieldError(missing, f"is missing while {present!r} is given")
    if isinstance(prompts_value, list):
        if not isinstance(answers_value, list) or len(answers_value) != len(prompts_value):
            raise FieldError(
                answer_field, f"must be a list as long as {prompt_field!r} ({len(prompts_value)} items)"
            )
        pairs = [
            (prompt, answer, f"{prompt_field}[{i}]", f"{answer_field}[{i}]")
            for i, (prompt, answer) in enumerate(zip(prompts_value, answers_value, strict=True))
        ]
    else:
        pairs = [(prompts_value, answers_value, prompt_field, answer_field)]
    probes = []
    for prompt_value, answer_value, prompt_where, answer_where in pairs:
        prompts = text_list(prompt_value, prompt_where)
        answers, shape = parse_answers(answer_value, answer_where)
        if not prompts or not answers:
            stats.dropped_probes[f"{kind.value} item with a blank prompt or blank answers"] += 1
            continue
        stats.shape(kind.value, shape)
        probes.extend(Probe(prompt, answers, kind, key) for prompt in prompts)
    return probes


def _build_case(
    *,
    case_id: str,
    subject: str,
    prompt: str,
    target_new: tuple[str, ...],
    old_answers: tuple[str, ...],
    probes: list[Probe],
    source: str,
    metadata: dict,
    stats: RecordStats,
) -> EditCase:
    if subject not in prompt:
        raise FieldError("subject", f"{subject!r} does not occur in the prompt {prompt!r}")
    if len(old_answers) > 1:
        metadata["target_true_aliases"] = list(old_answers)
    return EditCase(
        case_id=case_id,
        subject=subject,
        prompt=prompt,
        target_new=target_new,
        target_true=old_answers[0] if old_answers else None,
        probes=tuple(drop_probes_equal_to_anchor(prompt, probes, stats)),
        source=source,
        metadata=metadata,
    )


def _case_id(record: dict, name: str, index: int) -> str:
    value = record.get(name, index)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise FieldError(name, f"must be a non-empty string or an integer, got {value!r}")
    return str(value).strip()


def _extra(record: dict, mapped: set[str]) -> dict:
    return {name: value for name, value in record.items() if name not in mapped}


_EASYEDIT_FIELDS = {
    "case_id",
    "prompt",
    "subject",
    "target_new",
    "ground_truth",
    "rephrase_prompt",
    "locality_prompt",
    "locality_ground_truth",
}


def easyedit_record_to_case(record: dict, index: int, file: str = "") -> tuple[EditCase, RecordStats]:
    """One record of EasyEdit's flat format as an :class:`EditCase`."""
    stats = RecordStats()
    subject = require_text(record, "subject")
    prompt = require_text(record, "prompt")
    target_new = _required_answers(record, "target_new", stats, "target_new")
    old_answers = _optional_answers(record, "ground_truth", stats, "ground_truth")
    rephrases = text_list(record["rephrase_prompt"], "rephrase_prompt") if "rephrase_prompt" in record else []
    probes = [Probe(text, target_new, ProbeKind.EVAL_GENERALIZATION) for text in rephrases]
    probes += _paired_probes(
        record.get("locality_prompt"),
        record.get("locality_ground_truth"),
        "locality_prompt",
        "locality_ground_truth",
        ProbeKind.LOCALITY,
        NEIGHBORHOOD,
        stats,
    )
    metadata: dict[str, Any] = {"index": index, **({"file": file} if file else {})}
    extra = _extra(record, _EASYEDIT_FIELDS)
    if extra:
        metadata["record_extra"] = extra
    case = _build_case(
        case_id=_case_id(record, "case_id", index),
        subject=subject,
        prompt=prompt,
        target_new=target_new,
        old_answers=old_answers,
        probes=probes,
        source="easyedit",
        metadata=metadata,
        stats=stats,
    )
    return case, stats


_ZSRE_MEND_FIELDS = {
    "subject",
    "src",
    "alt",
    "answers",
    "rephrase",
    "loc",
    "loc_ans",
    "portability",
    "case_id",
}


def zsre_mend_record_to_case(record: dict, index: int, file: str = "") -> tuple[EditCase, RecordStats]:
    """One record of the MEND/ROME ZsRE files (``src``/``alt``/``answers``/``rephrase``/``loc``/``loc_ans``)."""
    stats = RecordStats()
    subject = require_text(record, "subject")
    prompt = require_text(record, "src")
    target_new = _required_answers(record, "alt", stats, "target_new")
    old_answers = _optional_answers(record, "answers", stats, "ground_truth")
    rephrases = text_list(record["rephrase"], "rephrase") if "rephrase" in record else []
    probes = [Probe(text, target_new, ProbeKind.EVAL_GENERALIZATION) for text in rephrases]
    probes += _paired_probes(
        record.get("loc"), record.get("loc_ans"), "loc", "loc_ans", ProbeKind.LOCALITY, NEIGHBORHOOD, stats
    )
    portability = record.get("portability")
    portability_extra: dict[str, Any] = {}
    if portability is not None:
        if not isinstance(portability, dict):
            raise FieldError("portability", f"must be an object, got {type(portability).__name__}")
        # EasyEdit's one-hop file also writes "Recalled Relation" (the fact the question chains through).
        portability_extra = _extra(portability, {"New Question", "New Answer"})
        probes += _paired_probes(
            portability.get("New Question"),
            portability.get("New Answer"),
            "portability.New Question",
            "portability.New Answer",
            ProbeKind.PORTABILITY,
            "one_hop",
            stats,
        )
    metadata: dict[str, Any] = {"index": index, **({"file": file} if file else {})}
    extra = _extra(record, _ZSRE_MEND_FIELDS)
    if portability_extra:
        extra["portability"] = portability_extra
    if extra:
        metadata["record_extra"] = extra
    case = _build_case(
        case_id=_case_id(record, "case_id", index),
        subject=subject,
        prompt=prompt,
        target_new=target_new,
        old_answers=old_answers,
        probes=probes,
        source="zsre_mend",
        metadata=metadata,
        stats=stats,
    )
    return case, stats


_QAEDIT_FIELDS = {"id", "source", "prompt", "target", "subject", "rephrase", "locality"}


def qaedit_record_to_case(record: dict, index: int, file: str = "") -> tuple[EditCase, RecordStats]:
    """One QAEdit record: a question (``prompt``) whose answer should become ``target``."""
    stats = RecordStats()
    subject = require_text(record, "subject")
    prompt = require_text(record, "prompt")
    target_new = _required_answers(record, "target", stats, "target_new")
    rephrases = text_list(record["rephrase"], "rephrase") if "rephrase" in record else []
    probes = [Probe(text, target_new, ProbeKind.EVAL_GENERALIZATION) for text in rephrases]
    locality = record.get("locality")
    if isinstance(locality, dict):  # a single item written without its list
        locality = [locality]
    if locality is not None and not isinstance(locality, list):
        raise FieldError(
            "locality", f"must be a list of {{loc, loc_ans}} objects, got {type(locality).__name__}"
        )
    for position, item in enumerate(locality or []):
        where = f"locality[{position}]"
        if not isinstance(item, dict):
            raise FieldError(where, f"must be an object with 'loc' and 'loc_ans', got {type(item).__name__}")
        for name in ("loc", "loc_ans"):
            if name not in item:
                raise FieldError(f"{where}.{name}", "is missing")
        probes += _paired_probes(
            item["loc"],
            item["loc_ans"],
            f"{where}.loc",
            f"{where}.loc_ans",
            ProbeKind.LOCALITY,
            NEIGHBORHOOD,
            stats,
        )
    stats.shape("ground_truth", parse_answers(None, "ground_truth")[1])
    metadata: dict[str, Any] = {"index": index, **({"file": file} if file else {})}
    case_id = _case_id(record, "id", index)
    if "source" in record:
        # QAEdit numbers its records within each source QA set, so the same id recurs across sources.
        metadata["dataset"] = require_text(record, "source")
        if "id" in record:
            metadata["qaedit_id"] = record["id"]
        case_id = f"{metadata['dataset']}/{case_id}"
    extra = _extra(record, _QAEDIT_FIELDS)
    if extra:
        metadata["record_extra"] = extra
    case = _build_case(
        case_id=case_id,
        subject=subject,
        prompt=prompt,
        target_new=target_new,
        old_answers=(),
        probes=probes,
        source="qaedit",
        metadata=metadata,
        stats=stats,
    )
    return case, stats


_CONVERTERS: dict[str, Callable[..., tuple[EditCase, RecordStats]]] = {
    "easyedit": easyedit_record_to_case,
    "zsre_mend": zsre_mend_record_to_case,
    "qaedit": qaedit_record_to_case,
}


# The record field each format's case id comes from (named when two records share one).
_ID_FIELDS = {"easyedit": "case_id", "zsre_mend": "case_id", "qaedit": "id"}


def detect_format(record: Any) -> str | None:
    """The format one record's fields point to (None when nothing matches)."""
    if not isinstance(record, dict):
        return None
    keys = record.keys()
    if "probes" in keys and "target_new" in keys and "case_id" in keys:
        return "cases"
    if "src" in keys and "alt" in keys:
        return "zsre_mend"
    if "target" in keys and "target_new" not in keys and "prompt" in keys:
        return "qaedit"
    if "locality_prompt" in keys or "locality_ground_truth" in keys:
        return "easyedit"
    if "case_id" in keys and "prompt" in keys and not isinstance(record.get("locality"), dict):
        return "easyedit"
    if detect_split(record) is not None:
        return "knowedit"
    return None


def detect_file_format(records: list[Any], file: str | Path) -> str:
    """The format of a file, from its first record that matches one."""
    for record in records[:50]:
        found = detect_format(record)
        if found is not None:
            return found
    first = records[0] if records else None
    keys = sorted(first)[:12] if isinstance(first, dict) else type(first).__name__
    raise DataFileError(
        f"{file}: cannot tell the format from the records (first record: {keys}); "
        f"pass format= one of {', '.join(FORMATS[1:])}"
    )


def load_format_file(
    path: str | Path, format: str, limit: int | None = None, skip_invalid: bool = False
) -> LoadedCases:
    """Read one file of EasyEdit's flat format, MEND ZsRE, or QAEdit."""
    if format not in _CONVERTERS:
        raise ValueError(f"load_format_file reads {sorted(_CONVERTERS)}, not {format!r}")
    path = Path(path)
    records = read_records(path)
    converter = _CONVERTERS[format]

    def convert(record: dict, index: int) -> tuple[EditCase, RecordStats]:
        return converter(record, index, file=str(path))

    loaded = convert_records(
        records,
        convert,
        file=path,
        format=format,
        skip_invalid=skip_invalid,
        limit=limit,
        id_field=_ID_FIELDS[format],
    )
    logger.info("%s: %d %s case(s)", path, len(loaded), format)
    return loaded


@dataclass(frozen=True)
class WorldSpec:
    """A ``world:`` name, parsed: a saved world's ``folder``, or a ``size`` and ``seed`` to generate."""

    size: str = "tiny"
    seed: int = 0
    folder: Path | None = None


def parse_world_spec(spec: str) -> WorldSpec:
    """Read ``world:<size>[:<seed>]`` or ``world:<folder>``, the one rule for every ``world:`` name.

    The text after ``world:`` is a folder when a folder exists at that path (a saved world or world
    model; its seed is 0). Otherwise it is a size (``tiny`` when empty), optionally followed by
    ``:<seed>``, an integer (0 when omitted).
    """
    if not spec.startswith(WORLD_PREFIX):
        raise ValueError(f"{spec!r} is not a {WORLD_PREFIX!r} name")
    body = spec[len(WORLD_PREFIX) :]
    if Path(body).is_dir():
        return WorldSpec(folder=Path(body))
    size, _, seed_text = body.partition(":")
    try:
        seed = int(seed_text) if seed_text else 0
    except ValueError as error:
        raise ValueError(f"{spec!r}: the seed after the size must be an integer") from error
    return WorldSpec(size=size or "tiny", seed=seed)


def _load_world(spec: str, limit: int | None) -> LoadedCases:
    """``world:<size>[:<seed>]`` or ``world:<model dir>``: edit cases of the generated knowledge world."""
    from edit_grpo_trl.data import world as world_module  # lazy: the world pulls in its own machinery

    parsed = parse_world_spec(spec)
    seed = parsed.seed
    if parsed.folder is not None:
        world = world_module.KnowledgeWorld.load(parsed.folder)
    else:
        world = world_module.KnowledgeWorld.generate(size=parsed.size, seed=seed)
    cases = world.edit_cases(seed=seed) if limit is None else world.edit_cases(num_cases=limit, seed=seed)
    return LoadedCases(cases=list(cases), source=spec, format="world")


def _load_facts(spec: str, limit: int | None) -> LoadedCases:
    """``facts:<bank>[:<seed>]``: real-fact edit cases drawn from a shipped fact bank."""
    from edit_grpo_trl.data import facts  # lazy: reads the bank's YAML only when asked

    bank, seed = facts.parse_facts_spec(spec)
    return LoadedCases(cases=facts.fact_cases(bank, seed=seed, limit=limit), source=spec, format="facts")


def load_edit_cases(
    path_or_name: str | Path,
    format: str = "auto",
    split: str | None = None,
    limit: int | None = None,
    skip_invalid: bool = False,
    partition: str = "test",
) -> LoadedCases:
    """Edit cases from any supported source (see the module docstring for formats and names).

    ``split`` is KnowEdit's (``zsre``, ``counterfact``, ``recent``, ``wikibio``; detected when None),
    ``partition`` its ``test``/``train`` file for folders and the Hub, ``limit`` the most cases returned
    (the first ones in file order), ``skip_invalid`` skips records that break the schema, logging them
    and listing them in the result's ``skipped`` (otherwise the first one raises :class:`RecordError`).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    name = str(path_or_name)
    if format == "world" or (format == "auto" and name.startswith(WORLD_PREFIX)):
        return _load_world(name if name.startswith(WORLD_PREFIX) else f"{WORLD_PREFIX}{name}", limit)
    if format == "auto" and name.startswith("facts:"):
        return _load_facts(name, limit)
    if format in ("auto", "knowedit") and name.startswith("knowedit:"):
        # knowedit:<split>[:<partition>] from the Hub.
        _, hub_split, *rest = name.split(":")
        return load_knowedit(
            KNOWEDIT_REPO, hub_split, rest[0] if rest else partition, limit=limit, skip_invalid=skip_invalid
        )
    path = Path(path_or_name)
    if format == "knowedit" or (format == "auto" and (path.is_dir() or name == KNOWEDIT_REPO)):
        return load_knowedit(path_or_name, split, partition, limit=limit, skip_invalid=skip_invalid)
    if not path.is_file():
        raise DataFileError(f"no data file or folder at {path} (and not a 'world:' or 'knowedit:' name)")
    if format == "auto":
        format = detect_file_format(read_records(path), path)
    if format == "knowedit":
        return load_knowedit(path, split, partition, limit=limit, skip_invalid=skip_invalid)
    if format == "cases":
        return _load_saved_cases(path, limit)
    return load_format_file(path, format, limit=limit, skip_invalid=skip_invalid)


def _load_saved_cases(path: Path, limit: int | None) -> LoadedCases:
    cases = load_cases(path)  # a bad line raises CaseError with its file and line number
    return LoadedCases(cases=cases[:limit] if limit is not None else cases, source=str(path), format="cases")


__all__ = [
    "FORMATS",
    "WORLD_PREFIX",
    "WorldSpec",
    "detect_format",
    "easyedit_record_to_case",
    "load_edit_cases",
    "load_format_file",
    "parse_world_spec",
    "qaedit_record_to_case",
    "zsre_mend_record_to_case",
]
