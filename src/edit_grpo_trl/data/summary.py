"""A summary of a data source: cases, probes per kind and key, answer shapes, gaps.

:func:`summarize_cases` returns a JSON-ready dict; :func:`format_summary` prints it as a table (the
``edit-grpo data-summary <source>`` command).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from edit_grpo_trl.data.cases import EditCase, ProbeKind
from edit_grpo_trl.data.records import LoadedCases


def _shape(answers: Sequence[str]) -> str:
    return "single" if len(answers) == 1 else "aliases"


def summarize_cases(cases: Sequence[EditCase]) -> dict[str, Any]:
    """Counts over ``cases`` (a list, or the :class:`LoadedCases` a loader returned).

    Keys: ``cases``; ``sources``; ``probes`` {kind: {"total", "cases_with", "by_key"}};
    ``answers`` {"target_new": {"single", "aliases"}, "probes": {...}}: after loading, how many
    answers have one accepted string and how many carry aliases; ``cases_without`` {"old_object",
    "locality", "training", "eval_generalization", "portability"}. From a loader's result also ``source``,
    ``format``, ``split``, ``skipped_records``, ``dropped_probes`` and ``raw_answer_shapes`` (the shapes as
    the file wrote them: string / alias list / alias groups / absent, per field family).
    """
    probes: dict[str, dict[str, Any]] = {}
    for kind in ProbeKind:
        with_kind = [case.probes_of(kind) for case in cases]
        keys = Counter(probe.key or "-" for found in with_kind for probe in found)
        probes[kind.value] = {
            "total": sum(len(found) for found in with_kind),
            "cases_with": sum(bool(found) for found in with_kind),
            "by_key": dict(sorted(keys.items())),
        }
    target_shapes = Counter(_shape(case.target_new) for case in cases)
    probe_shapes = Counter(_shape(probe.answers) for case in cases for probe in case.probes)
    summary: dict[str, Any] = {
        "cases": len(cases),
        "sources": dict(Counter(case.source or "-" for case in cases)),
        "probes": probes,
        "answers": {
            "target_new": {"single": target_shapes["single"], "aliases": target_shapes["aliases"]},
            "probes": {"single": probe_shapes["single"], "aliases": probe_shapes["aliases"]},
        },
        "cases_without": {
            "old_object": sum(case.target_true is None for case in cases),
            "locality": sum(not case.probes_of(ProbeKind.LOCALITY) for case in cases),
            "training": sum(not case.probes_of(ProbeKind.TRAIN_GENERALIZATION) for case in cases),
            "eval_generalization": sum(not case.probes_of(ProbeKind.EVAL_GENERALIZATION) for case in cases),
            "portability": sum(not case.probes_of(ProbeKind.PORTABILITY) for case in cases),
        },
    }
    if isinstance(cases, LoadedCases):
        summary.update(
            {
                "source": cases.source,
                "format": cases.format,
                "split": cases.split,
                "skipped_records": cases.num_skipped,
                "dropped_probes": dict(cases.dropped_probes),
                "raw_answer_shapes": dict(sorted(cases.answer_shapes.items())),
            }
        )
    return summary


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def format_summary(summary: dict[str, Any]) -> str:
    """A printable table of :func:`summarize_cases`'s result."""
    lines: list[str] = []
    if "source" in summary:
        split = f", split {summary['split']}" if summary.get("split") else ""
        lines.append(f"source: {summary['source']} (format {summary['format']}{split})")
    lines.append(f"cases: {summary['cases']}")
    if summary.get("skipped_records"):
        lines.append(f"skipped invalid records: {summary['skipped_records']}")
    for reason, count in summary.get("dropped_probes", {}).items():
        lines.append(f"dropped probes ({reason}): {count}")
    lines.append("")
    rows = []
    for kind, counts in summary["probes"].items():
        rows.append([kind, "(all)", counts["total"], counts["cases_with"]])
        for key, count in counts["by_key"].items():
            if key != "-":
                rows.append(["", key, count, ""])
    lines += _table(["probe kind", "key", "probes", "cases with"], rows)
    lines.append("")
    answers = summary["answers"]
    lines += _table(
        ["answers", "single", "with aliases"],
        [[name, shapes["single"], shapes["aliases"]] for name, shapes in answers.items()],
    )
    raw = summary.get("raw_answer_shapes")
    if raw:
        lines.append("")
        by_field: dict[str, dict[str, int]] = {}
        for label, count in raw.items():
            family, _, shape = label.partition(":")
            by_field.setdefault(family, {})[shape] = count
        shapes = ["string", "alias_list", "alias_groups", "absent"]
        lines += _table(
            ["as written", *shapes],
            [[family, *(row.get(s, 0) for s in shapes)] for family, row in by_field.items()],
        )
    lines.append("")
    lines += _table(
        ["cases without", "count"], [[name, count] for name, count in summary["cases_without"].items()]
    )
    return "\n".join(lines)


__all__ = ["format_summary", "summarize_cases"]
