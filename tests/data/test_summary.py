"""The data summary: counts checked against the fixture files themselves."""

from __future__ import annotations

import json
from pathlib import Path

from edit_grpo_trl.data.formats import load_edit_cases
from edit_grpo_trl.data.pools import TemplatePromptSource, build_training_pools
from edit_grpo_trl.data.summary import format_summary, summarize_cases

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _raw_knowedit() -> list[dict]:
    return [
        record
        for path in sorted((FIXTURES / "knowedit").rglob("*.json"))
        for record in json.loads(path.read_text())
    ]


def _items(record: dict, field: str) -> list[tuple[str, dict]]:
    return [(key, item) for key, items in record.get(field, {}).items() for item in items]


def _aliases(value) -> set[str]:
    return {value} if isinstance(value, str) else {alias for item in value for alias in _aliases(item)}


def test_counts_match_the_files():
    records = _raw_knowedit()
    summary = summarize_cases(load_edit_cases(FIXTURES / "knowedit"))
    assert summary["cases"] == len(records)
    assert summary["format"] == "knowedit" and summary["skipped_records"] == 0
    for field in ("portability", "locality"):
        items = [pair for record in records for pair in _items(record, field)]
        probes = summary["probes"][field]
        assert probes["total"] == len(items)
        assert probes["cases_with"] == sum(bool(_items(record, field)) for record in records)
        for key in {key for key, _ in items}:
            assert probes["by_key"][key] == sum(k == key for k, _ in items)
    rephrased = sum("rephrase_prompt" in r or "rephrase" in r for r in records)
    assert summary["probes"]["eval_generalization"]["total"] == rephrased
    assert summary["cases_without"]["locality"] == sum("locality" not in r for r in records) == 4
    assert summary["cases_without"]["old_object"] == sum("ground_truth" not in r for r in records)
    assert summary["cases_without"]["training"] == len(records)
    answer_sets = [
        _aliases(item["ground_truth"])
        for r in records
        for f in ("portability", "locality")
        for _, item in _items(r, f)
    ]
    multi = sum(len(aliases) > 1 for aliases in answer_sets)
    assert summary["answers"]["probes"]["aliases"] == multi
    assert summary["raw_answer_shapes"]["ground_truth:absent"] == summary["cases_without"]["old_object"]


def test_training_pool_shows_up_and_plain_lists_work():
    cases = build_training_pools(
        load_edit_cases(FIXTURES / "qaedit.json"), [TemplatePromptSource(["Tell me about {subject}"])]
    ).cases
    summary = summarize_cases(cases)  # a plain list: no loader fields
    assert "format" not in summary
    assert summary["probes"]["train_generalization"] == {"total": 10, "cases_with": 10, "by_key": {"-": 10}}
    assert summary["cases_without"]["training"] == 0


def test_format_summary_prints_every_section():
    text = format_summary(summarize_cases(load_edit_cases(FIXTURES / "knowedit")))
    for expected in (
        "cases: 43",
        "Forgetfulness",
        "Logical_Generalization",
        "as written",
        "alias_groups",
        "cases without",
    ):
        assert expected in text
    locality_line = next(line for line in text.splitlines() if line.startswith("locality "))
    assert locality_line.split()[1:] == ["(all)", "68", "39"]
