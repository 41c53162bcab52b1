"""The benchmark's bookkeeping of case sets x training seeds (bench/knowledge_world.py), on hand-built rows."""

import importlib.util
import sys
from argparse import Namespace
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "knowledge_world.py"
spec = importlib.util.spec_from_file_location("knowledge_world_bench", SCRIPT)
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench  # its dataclasses look their module up while the class is built
spec.loader.exec_module(bench)

METRICS = (("gen_em_locality", "locality"),)


def row(condition, seed, locality_by_case, train_seed="absent"):
    """A result row; ``train_seed="absent"`` is a row written before training seeds were recorded."""
    record = {
        "size": "tiny",
        "editor": "memit",
        "seed": seed,
        "condition": condition,
        "metrics": {"gen_em_locality": sum(locality_by_case.values()) / len(locality_by_case)},
        "per_case": {case: {"gen_em_locality": value} for case, value in locality_by_case.items()},
    }
    if train_seed != "absent":
        record["train_seed"] = train_seed
    return record


def test_training_seeds_make_distinct_rows_and_old_rows_keep_their_case_seed():
    stage1 = row("stage1", 0, {"a": 1.0}, train_seed=None)
    first, second = row("grpo", 0, {"a": 1.0}, train_seed=1), row("grpo", 0, {"a": 1.0}, train_seed=2)
    old = row("grpo", 3, {"a": 1.0})
    assert bench.row_key(first) != bench.row_key(second)
    assert bench.train_seed_of(stage1) is None
    assert bench.train_seed_of(old) == 3  # trained with its case seed
    assert bench.train_seed_of(row("stage1", 3, {"a": 1.0})) is None


def test_run_folders_keep_their_old_names_when_training_uses_the_case_seed():
    pair, condition = bench.Pair("tiny", "memit", 2), bench.Condition("pgaa-0.2+training.beta=0.1")
    assert bench.run_name(pair, condition, 2) == "pgaa-0.2+training.beta=0.1"
    assert bench.run_name(pair, condition, 0) == "pgaa-0.2+training.beta=0.1@train0"


def test_the_pipeline_is_seeded_with_the_training_seed_and_the_cases_with_the_case_seed(tmp_path):
    options = Namespace(
        source=None, recipes=None, size="tiny", num_cases=4, max_steps=None, extra="", train_seeds=[5]
    )
    command = bench.pipeline_command(
        bench.Pair("tiny", "memit", 2),
        bench.Condition("grpo"),
        tmp_path / "seed2" / "grpo@train5",
        options,
        5,
    )
    assert command[command.index("--training.seed") + 1] == "5"
    assert command[command.index("--data.seed") + 1] == "2"


def test_a_conditions_own_change_wins_over_the_benchmark_wide_extra(tmp_path):
    options = Namespace(
        source=None,
        recipes=None,
        size="tiny",
        num_cases=4,
        max_steps=None,
        extra="--training.locality_coef 1",
        train_seeds=None,
    )
    command = bench.pipeline_command(
        bench.Pair("tiny", "memit", 0),
        bench.Condition("pgaa-0.2+training.locality_coef=0"),
        tmp_path / "run",
        options,
    )
    # the recipe parser keeps the last value given for a key
    last = len(command) - 1 - command[::-1].index("--training.locality_coef")
    assert command[last + 1] == "0"


def test_every_training_seed_is_matched_against_the_one_stage1_row():
    rows = [
        row("stage1", 0, {"a": 1.0}, train_seed=None),
        row("grpo", 0, {"a": 0.0}, train_seed=0),
        row("grpo", 0, {"a": 1.0}, train_seed=1),
        row("grpo", 1, {"a": 1.0}, train_seed=0),  # no stage-1 row of case set 1: unmatched
    ]
    matched = bench.matched_runs(rows, "memit", "grpo", "stage1")
    assert [(a["seed"], a["train_seed"], b["condition"]) for a, b in matched] == [
        (0, 0, "stage1"),
        (0, 1, "stage1"),
    ]
    assert len(bench.matched_runs(rows, "memit", "stage1", "grpo")) == 2  # either order


def test_two_trained_conditions_are_matched_only_on_shared_training_seeds():
    rows = [
        row("grpo", 0, {"a": 1.0}, train_seed=0),
        row("grpo", 0, {"a": 1.0}, train_seed=1),
        row("sft", 0, {"a": 1.0}, train_seed=1),
        row("sft", 0, {"a": 1.0}, train_seed=2),
    ]
    matched = bench.matched_runs(rows, "memit", "grpo", "sft")
    assert [(a["train_seed"], b["train_seed"]) for a, b in matched] == [(1, 1)]


def test_a_case_counts_once_with_its_difference_averaged_over_training_seeds():
    # Case set 0 has cases a, b; grpo - sft on a is +1 with training seed 0 and 0 with seed 1 (mean +0.5),
    # on b 0 and 0. Two units (not four), mean +0.25 -> "+25.0"; per-run means +0.5 and 0 -> std 35.4.
    rows = [
        row("grpo", 0, {"a": 1.0, "b": 1.0}, train_seed=0),
        row("grpo", 0, {"a": 0.0, "b": 1.0}, train_seed=1),
        row("sft", 0, {"a": 0.0, "b": 1.0}, train_seed=0),
        row("sft", 0, {"a": 0.0, "b": 1.0}, train_seed=1),
    ]
    table = bench.case_paired_table(rows, METRICS, ("grpo", "sft"))
    last = table.splitlines()[-1]
    assert last.startswith("| memit | 2 | 2 | +25.0 ± 35.4 (p ")


def test_paired_differences_are_taken_per_run_against_stage1():
    rows = [
        row("stage1", 0, {"a": 1.0}, train_seed=None),
        row("grpo", 0, {"a": 0.5}, train_seed=0),
        row("grpo", 0, {"a": 0.7}, train_seed=1),
    ]
    table = bench.paired_differences(rows, METRICS)
    assert table.splitlines()[-1] == "| memit | grpo | 2 | -40.0 ± 14.1 |"


def test_the_summary_counts_runs_and_case_sets():
    rows = [
        row("grpo", 0, {"a": 1.0}, train_seed=0),
        row("grpo", 0, {"a": 0.0}, train_seed=1),
        row("grpo", 1, {"a": 1.0}, train_seed=0),
    ]
    entry = bench.summarize(rows, METRICS)[("memit", "grpo")]
    assert (entry["runs"], entry["case_sets"]) == (3, 2)
    mean, _ = entry["gen_em_locality"]
    assert abs(mean - 200 / 3) < 1e-9


def test_gzipped_result_files_read_as_the_plain_ones(tmp_path):
    import gzip
    import json

    rows = [row("stage1", 0, {"a": 1.0}, train_seed=None), row("grpo", 0, {"a": 0.5}, train_seed=0)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "r.jsonl").write_text(text)
    (tmp_path / "r.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    assert bench.read_rows(tmp_path / "r.jsonl.gz") == bench.read_rows(tmp_path / "r.jsonl") == rows
