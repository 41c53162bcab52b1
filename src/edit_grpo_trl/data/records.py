"""Reading raw edit records: JSON / JSON-lines files, answer shapes, and schema errors that say where.

Shared by the KnowEdit loaders (:mod:`edit_grpo_trl.data.knowedit`) and the other formats
(:mod:`edit_grpo_trl.data.formats`). A record that breaks its schema is reported as a :class:`RecordError`
naming the file, the record's index and the field; with ``skip_invalid`` it is skipped, logged and counted
in :attr:`LoadedCases.skipped`, never dropped silently.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, overload

from edit_grpo_trl.answers import normalize_answer
from edit_grpo_trl.data.cases import CaseError, EditCase, Probe

logger = logging.getLogger(__name__)


class DataFileError(ValueError):
    """A data file cannot be read at all (missing, not JSON, not a list of records)."""


class RecordError(CaseError):
    """One record breaks its schema. ``index`` is the record's 0-based position in the file."""

    def __init__(self, file: str | Path, index: int, field: str | None, problem: str) -> None:
        self.file = str(file)
        self.index = index
        self.field = field
        self.problem = problem
        where = f"{self.file}: record {index}"
        if field:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")


class FieldError(ValueError):
    """Raised inside a record converter; the loader adds the file and the record index."""

    def __init__(self, field: str | None, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"field {field!r}: {problem}" if field else problem)


class AnswerShape(StrEnum):
    """How a source wrote an answer. Every shape keeps every alias (EasyEdit keeps only the first)."""

    STRING = "string"  # "Berlin"
    ALIASES = "alias_list"  # ["Berlin", "Berlin, Germany"]
    ALIAS_GROUPS = (
        "alias_groups"  # [["no"], ["incorrect"], ["false"]] or [["Kai Wegner", "Kai Peter Wegner"]]
    )
    ABSENT = "absent"  # field missing or null


def parse_answers(value: Any, field_name: str) -> tuple[tuple[str, ...], AnswerShape]:
    """Every answer in ``value`` (string, alias list, or list of alias lists), flattened in order.

    The first answer is the one EasyEdit would use (it follows ``[0]`` until it reaches a string), so
    teacher-forced metrics stay comparable; the rest are aliases that generation-based metrics accept too.
    Blank strings and repeats are dropped. Returns ``((), ABSENT)`` for ``None``; an answer list that is
    empty, or holds something other than strings, raises :class:`FieldError`.
    """
    if value is None:
        return (), AnswerShape.ABSENT
    if isinstance(value, str):
        return _unique([value]), AnswerShape.STRING
    if not isinstance(value, list):
        raise FieldError(field_name, f"must be a string or a list of strings, got {type(value).__name__}")
    if not value:
        raise FieldError(field_name, "is an empty list")
    flat: list[str] = []
    nested = False
    for position, item in enumerate(value):
        if isinstance(item, str):
            flat.append(item)
        elif isinstance(item, list) and all(isinstance(alias, str) for alias in item):
            nested = True
            flat.extend(item)
        else:
            raise FieldError(
                f"{field_name}[{position}]",
                f"must be a string or a list of strings, got {type(item).__name__} ({item!r:.60})",
            )
    return _unique(flat), AnswerShape.ALIAS_GROUPS if nested else AnswerShape.ALIASES


def _unique(answers: Iterable[str]) -> tuple[str, ...]:
    kept: list[str] = []
    for answer in answers:
        answer = answer.strip()
        if answer and answer not in kept:
            kept.append(answer)
    return tuple(kept)


def require_text(record: dict, name: str, *fallbacks: str) -> str:
    """The non-empty string in field ``name`` (or the first present fallback field), else FieldError."""
    for candidate in (name, *fallbacks):
        if candidate in record:
            value = record[candidate]
            if not isinstance(value, str) or not value.strip():
                raise FieldError(candidate, f"must be a non-empty string, got {value!r:.80}")
            return value.strip()
    names = " or ".join(repr(n) for n in (name, *fallbacks))
    raise FieldError(name, f"is missing (expected {names})")


def text_list(value: Any, field_name: str) -> list[str]:
    """A string or a list of strings as a list of stripped non-empty strings (FieldError otherwise)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise FieldError(field_name, f"must be a string or a list of strings, got {value!r:.80}")
    return [item.strip() for item in items if item.strip()]


@dataclass
class RecordStats:
    """What converting one record noticed: answer shapes per field family, probes it had to drop."""

    answer_shapes: Counter = field(default_factory=Counter)  # keys "target_new:string", ...
    dropped_probes: Counter = field(default_factory=Counter)  # reason -> count

    def shape(self, family: str, shape: AnswerShape) -> None:
        self.answer_shapes[f"{family}:{shape.value}"] += 1

    def merge(self, other: RecordStats) -> None:
        self.answer_shapes.update(other.answer_shapes)
        self.dropped_probes.update(other.dropped_probes)


def drop_probes_equal_to_anchor(anchor: str, probes: Iterable[Probe], stats: RecordStats) -> list[Probe]:
    """Evaluation probes whose prompt is the anchor itself measure nothing held out: drop and count them."""
    anchor_key = normalize_answer(anchor)
    kept = []
    for probe in probes:
        if normalize_answer(probe.prompt) == anchor_key:
            stats.dropped_probes[f"{probe.kind.value} prompt equals the anchor"] += 1
        else:
            kept.append(probe)
    return kept


@dataclass
class LoadedCases(Sequence[EditCase]):
    """Edit cases read from one source, with what was skipped on the way. Behaves as a list of cases."""

    cases: list[EditCase]
    source: str
    format: str
    split: str | None = None
    skipped: list[RecordError] = field(default_factory=list)
    answer_shapes: Counter = field(default_factory=Counter)
    dropped_probes: Counter = field(default_factory=Counter)

    @overload
    def __getitem__(self, index: int) -> EditCase: ...
    @overload
    def __getitem__(self, index: slice) -> list[EditCase]: ...
    def __getitem__(self, index):
        return self.cases[index]

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[EditCase]:
        return iter(self.cases)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    @classmethod
    def concatenate(cls, parts: Sequence[LoadedCases], source: str, limit: int | None = None) -> LoadedCases:
        """Several files' cases as one source (the split is kept only when all parts agree)."""
        splits = {part.split for part in parts}
        formats = {part.format for part in parts}
        merged = cls(
            cases=[case for part in parts for case in part.cases],
            source=source,
            format=formats.pop() if len(formats) == 1 else "mixed",
            split=splits.pop() if len(splits) == 1 else None,
        )
        for part in parts:
            merged.skipped.extend(part.skipped)
            merged.answer_shapes.update(part.answer_shapes)
            merged.dropped_probes.update(part.dropped_probes)
        if limit is not None:
            merged.cases = merged.cases[:limit]
        return merged


def read_records(path: str | Path) -> list[Any]:
    """The records of a JSON file holding a list, or of a JSON-lines file (one record per line)."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"no data file at {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return _read_json_lines(path, text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        # A file of several JSON objects on separate lines is JSON lines whatever its suffix.
        if error.msg == "Extra data":
            return _read_json_lines(path, text)
        raise DataFileError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, list):
        raise DataFileError(
            f"{path}: expected a JSON list of records, got a JSON {type(data).__name__}"
            + (f" with keys {sorted(data)[:8]}" if isinstance(data, dict) else "")
        )
    return data


def _read_json_lines(path: Path, text: str) -> list[Any]:
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise DataFileError(f"{path}:{line_number}: not valid JSON ({error})") from error
    return records


RecordConverter = Callable[[dict, int], tuple[EditCase, RecordStats]]


def convert_records(
    records: Sequence[Any],
    convert: RecordConverter,
    *,
    file: str | Path,
    format: str,
    split: str | None = None,
    skip_invalid: bool = False,
    limit: int | None = None,
    id_field: str = "case_id",
) -> LoadedCases:
    """Convert records in file order until ``limit`` cases; invalid ones raise, or are skipped and counted.

    A record whose case id repeats an earlier record's is invalid; the error names ``id_field`` (the record
    field the id comes from) and both record indices.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    loaded = LoadedCases(cases=[], source=str(file), format=format, split=split)
    first_index_of: dict[str, int] = {}  # case id -> record index: the AGT builder groups rows by case id
    for index, record in enumerate(records):
        if limit is not None and len(loaded.cases) >= limit:
            break
        try:
            if not isinstance(record, dict):
                raise FieldError(None, f"must be a JSON object, got {type(record).__name__}")
            case, stats = convert(record, index)
            if case.case_id in first_index_of:
                raise FieldError(
                    id_field,
                    f"case id {case.case_id!r} repeats the case id of record {first_index_of[case.case_id]}",
                )
        except FieldError as error:
            problem = RecordError(file, index, error.field, error.problem)
        except CaseError as error:  # EditCase's own checks (for example a probe overlap)
            problem = RecordError(file, index, None, str(error))
        else:
            first_index_of[case.case_id] = index
            loaded.cases.append(case)
            loaded.answer_shapes.update(stats.answer_shapes)
            loaded.dropped_probes.update(stats.dropped_probes)
            continue
        if not skip_invalid:
            raise problem
        loaded.skipped.append(problem)
    if loaded.skipped:
        logger.warning(
            "%s: skipped %d invalid record(s) of %d; first: %s",
            file,
            len(loaded.skipped),
            len(records),
            loaded.skipped[0],
        )
    for reason, count in loaded.dropped_probes.items():
        logger.warning("%s: dropped %d probe(s): %s", file, count, reason)
    return loaded
