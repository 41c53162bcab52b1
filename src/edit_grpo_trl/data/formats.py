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

The three flat formats (``easyedit``, ``zsre_mend``, ``qaedit``) are one converter,
:func:`flat_record_to_case`, read through a table of fields: :data:`FLAT_FORMATS`, one :class:`FlatFormat`
row per format, plus a hook for what only one format has (ZsRE's one-hop portability, QAEdit's list of
locality items and ``<source>/<id>`` case ids). KnowEdit's converter
(:func:`~edit_grpo_trl.data.knowedit.knowedit_record_to_case`) is not a row: its records are not flat
(portability and locality are objects of probe lists, by key), one file's records name a field two ways
(``prompt`` or WikiBio's ``text``, ``target_new`` or ``labels``, ``subject`` or ``concept``), which fields
are required depends on the split, and the case id is the file's name and the record's position, not a
field: a row would be mostly hooks.
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


def _zsre_portability(record: dict, stats: RecordStats) -> tuple[list[Probe], dict[str, Any]]:
    """EasyEdit's one-hop ZsRE ``portability``: its question and answer become a ``one_hop`` probe."""
    portability = record.get("portability")
    if portability is None:
        return [], {}
    if not isinstance(portability, dict):
        raise FieldError("portability", f"must be an object, got {type(portability).__name__}")
    probes = _paired_probes(
        portability.get("New Question"),
        portability.get("New Answer"),
        "portability.New Question",
        "portability.New Answer",
        ProbeKind.PORTABILITY,
        "one_hop",
        stats,
    )
    # EasyEdit's one-hop file also writes "Recalled Relation" (the fact the question chains through).
    kept = _extra(portability, {"New Question", "New Answer"})
    return probes, {"portability": kept} if kept else {}


def _qaedit_locality(record: dict, stats: RecordStats) -> tuple[list[Probe], dict[str, Any]]:
    """QAEdit's ``locality``: a list of ``{loc, loc_ans}`` items (or one item without its list)."""
    locality = record.get("locality")
    if isinstance(locality, dict):  # a single item written without its list
        locality = [locality]
    if locality is not None and not isinstance(locality, list):
        raise FieldError(
            "locality", f"must be a list of {{loc, loc_ans}} objects, got {type(locality).__name__}"
        )
    probes: list[Probe] = []
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
    return probes, {}


def _qaedit_case_id(record: dict, index: int, metadata: dict) -> str:
    """``<source>/<id>``: QAEdit numbers its records within each source QA set, so an id recurs across them."""
    case_id = _case_id(record, "id", index)
    if "source" in record:
        metadata["dataset"] = require_text(record, "source")
        if "id" in record:
            metadata["qaedit_id"] = record["id"]
        case_id = f"{metadata['dataset']}/{case_id}"
    return case_id


@dataclass(frozen=True)
class FlatFormat:
    """Where one flat format's records keep each part of an edit case: a row of :data:`FLAT_FORMATS`.

    :func:`flat_record_to_case` reads, in this order: ``subject`` and ``prompt`` (non-empty strings),
    ``target_new`` (at least one answer), ``ground_truth`` (the old object's answers, optional; None: the
    format has no old object), ``rephrase`` (held-out paraphrases, a string or a list), ``locality`` (a
    prompt field and its answer field, a string each or two lists of one length: ``neighborhood``
    locality probes), the format's own probes (``more_probes``, from ``own_fields``), and last the case id
    (``case_id``; by default the ``id_field`` value, or the record's position when absent). Every field not
    named here is kept in ``metadata["record_extra"]``.
    """

    name: str
    id_field: str
    subject: str
    prompt: str
    target_new: str
    ground_truth: str | None
    rephrase: str
    locality: tuple[str, str] | None = None
    own_fields: tuple[str, ...] = ()
    # (record, stats) -> (probes, fields to add to record_extra)
    more_probes: Callable[[dict, RecordStats], tuple[list[Probe], dict[str, Any]]] | None = None
    # (record, index, metadata) -> case id; may add to metadata
    case_id: Callable[[dict, int, dict], str] | None = None

    @property
    def mapped_fields(self) -> set[str]:
        named = (self.id_field, self.subject, self.prompt, self.target_new, self.ground_truth, self.rephrase)
        return {name for name in named if name} | set(self.locality or ()) | set(self.own_fields)


FLAT_FORMATS: dict[str, FlatFormat] = {
    fields.name: fields
    for fields in (
        FlatFormat(
            name="easyedit",
            id_field="case_id",
            subject="subject",
            prompt="prompt",
            target_new="target_new",
            ground_truth="ground_truth",
            rephrase="rephrase_prompt",
            locality=("locality_prompt", "locality_ground_truth"),
        ),
        FlatFormat(
            name="zsre_mend",
            id_field="case_id",
            subject="subject",
            prompt="src",
            target_new="alt",
            ground_truth="answers",
            rephrase="rephrase",
            locality=("loc", "loc_ans"),
            own_fields=("portability",),
            more_probes=_zsre_portability,
        ),
        FlatFormat(
            name="qaedit",
            id_field="id",
            subject="subject",
            prompt="prompt",
            target_new="target",
            ground_truth=None,
            rephrase="rephrase",
            own_fields=("source", "locality"),
            more_probes=_qaedit_locality,
            case_id=_qaedit_case_id,
        ),
    )
}


def flat_record_to_case(
    fields: FlatFormat, record: dict, index: int, file: str = ""
) -> tuple[EditCase, RecordStats]:
    """One record of a flat format as an :class:`EditCase`, read as ``fields`` says (:class:`FlatFormat`)."""
    stats = RecordStats()
    subject = require_text(record, fields.subject)
    prompt = require_text(record, fields.prompt)
    target_new = _required_answers(record, fields.target_new, stats, "target_new")
    if fields.ground_truth is None:
        old_answers: tuple[str, ...] = ()
        stats.shape("ground_truth", parse_answers(None, "ground_truth")[1])
    else:
        old_answers = _optional_answers(record, fields.ground_truth, stats, "ground_truth")
    rephrases = text_list(record[fields.rephrase], fields.rephrase) if fields.rephrase in record else []
    probes = [Probe(text, target_new, ProbeKind.EVAL_GENERALIZATION) for text in rephrases]
    if fields.locality is not None:
        prompt_field, answer_field = fields.locality
        probes += _paired_probes(
            record.get(prompt_field),
            record.get(answer_field),
            prompt_field,
            answer_field,
            ProbeKind.LOCALITY,
            NEIGHBORHOOD,
            stats,
        )
    own_extra: dict[str, Any] = {}
    if fields.more_probes is not None:
        more, own_extra = fields.more_probes(record, stats)
        probes += more
    metadata: dict[str, Any] = {"index": index, **({"file": file} if file else {})}
    if fields.case_id is not None:
        case_id = fields.case_id(record, index, metadata)
    else:
        case_id = _case_id(record, fields.id_field, index)
    extra = {**_extra(record, fields.mapped_fields), **own_extra}
    if extra:
        metadata["record_extra"] = extra
    case = _build_case(
        case_id=case_id,
        subject=subject,
        prompt=prompt,
        target_new=target_new,
        old_answers=old_answers,
        probes=probes,
        source=fields.name,
        metadata=metadata,
        stats=stats,
    )
    return case, stats


def easyedit_record_to_case(record: dict, index: int, file: str = "") -> tuple[EditCase, RecordStats]:
    """One record of EasyEdit's flat format as an :class:`EditCase`."""
    return flat_record_to_case(FLAT_FORMATS["easyedit"], record, index, file)


def zsre_mend_record_to_case(record: dict, index: int, file: str = "") -> tuple[EditCase, RecordStats]:
    """One record of the MEND/ROME ZsRE files (``src``/``alt``/``answers``/``rephrase``/``loc``/``loc_ans``)."""
    return flat_record_to_case(FLAT_FORMATS["zsre_mend"], record, index, file)


def qaedit_record_to_case(record: dict, index: int, file: str = "") -> tuple[EditCase, RecordStats]:
    """One QAEdit record: a question (``prompt``) whose answer should become ``target``."""
    return flat_record_to_case(FLAT_FORMATS["qaedit"], record, index, file)


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
    if format not in FLAT_FORMATS:
        raise ValueError(f"load_format_file reads {sorted(FLAT_FORMATS)}, not {format!r}")
    path = Path(path)
    records = read_records(path)
    fields = FLAT_FORMATS[format]

    def convert(record: dict, index: int) -> tuple[EditCase, RecordStats]:
        return flat_record_to_case(fields, record, index, file=str(path))

    loaded = convert_records(
        records,
        convert,
        file=path,
        format=format,
        skip_invalid=skip_invalid,
        limit=limit,
        id_field=fields.id_field,
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
    from edit_grpo_trl import world as world_module  # lazy: the world pulls in its own machinery

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
    "FLAT_FORMATS",
    "FORMATS",
    "WORLD_PREFIX",
    "FlatFormat",
    "WorldSpec",
    "detect_format",
    "easyedit_record_to_case",
    "flat_record_to_case",
    "load_edit_cases",
    "load_format_file",
    "parse_world_spec",
    "qaedit_record_to_case",
    "zsre_mend_record_to_case",
]
