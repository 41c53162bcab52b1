"""The pretrained tiny world (slow: the session's ``tiny_world`` fixture pretrains it once, then it is cached).

Measured on the committed settings (CPU, seed 0): recall 1.000 on anchor, training, held-out, alias and
two-hop prompts and 0.999 on boxed chat prompts. The thresholds below leave a margin for other torch builds.
"""

from __future__ import annotations

import json
import shutil

import pytest

from edit_grpo_trl.answers import exact_match, extract_answer
from edit_grpo_trl.data.cases import ProbeKind
from edit_grpo_trl.data.world import SIZES, ensure_world_model, recall
from edit_grpo_trl.data.world.cache import REPORT_FILE
from edit_grpo_trl.generation import greedy_generate

pytestmark = pytest.mark.slow

THRESHOLDS = {"heldout": 0.95, "anchor": 0.95, "train": 0.95, "alias": 0.95, "two_hop": 0.9, "chat": 0.95}


@pytest.mark.parametrize("split", sorted(THRESHOLDS))
def test_the_pretrained_model_recalls_its_facts(tiny_world, split):
    # Measured again from the saved model, not only read from the report.
    measured = recall(tiny_world.model, tiny_world.tokenizer, tiny_world.world, split)
    assert measured >= THRESHOLDS[split], f"{split} recall {measured:.3f}"
    report = json.loads((tiny_world.path / REPORT_FILE).read_text())
    assert report["recall"][split] == pytest.approx(measured, abs=0.02)


def test_the_report_describes_the_build(tiny_world):
    report = json.loads((tiny_world.path / REPORT_FILE).read_text())
    assert report["parameters"] == sum(p.numel() for p in tiny_world.model.parameters())
    assert report["people"] == len(tiny_world.world.people)
    assert report["steps"] == report["history"][-1]["step"]
    stopped_early = report["steps"] < SIZES["tiny"].max_steps
    assert report["history"][-1]["heldout"] >= report["target_recall"] or not stopped_early


def test_edit_cases_start_with_the_old_facts_known(tiny_world):
    """Before any edit the model answers every probe with the *old* facts: the edit has something to change."""
    world, model, tokenizer = tiny_world.world, tiny_world.model, tiny_world.tokenizer
    cases = world.edit_cases(num_cases=16, seed=0)
    items = []
    for case in cases:
        items.append((case.prompt, case.target_true))
        for probe in case.probes_of(ProbeKind.EVAL_GENERALIZATION) + case.probes_of(
            ProbeKind.PORTABILITY, "Subject_Aliasing"
        ):
            items.append((probe.prompt, case.target_true))
        for probe in case.probes_of(ProbeKind.PORTABILITY, "Reasoning"):
            items.append((probe.prompt, case.metadata["old_attribute"]))
        items += [(probe.prompt, probe.answer) for probe in case.probes_of(ProbeKind.LOCALITY)]
    completions = greedy_generate(model, tokenizer, [prompt for prompt, _ in items], max_new_tokens=4)
    hits = [
        exact_match(extract_answer(c), [answer]) for c, (_, answer) in zip(completions, items, strict=True)
    ]
    assert sum(hits) / len(hits) >= 0.95
    new_hits = greedy_generate(model, tokenizer, [case.prompt for case in cases], max_new_tokens=4)
    assert not any(exact_match(c, case.target_new) for c, case in zip(new_hits, cases, strict=True))


def test_a_cached_folder_is_reused_and_leftovers_ignored(tiny_world, tmp_path):
    root = tmp_path / "worlds"
    copy = root / tiny_world.path.name
    shutil.copytree(tiny_world.path, copy)
    leftover = root / f"{copy.name}.tmp-424242"
    leftover.mkdir()
    (leftover / "config.json").write_text("{broken")
    stamp = (copy / REPORT_FILE).stat().st_mtime_ns
    assert ensure_world_model("tiny", seed=0, cache_dir=root) == copy
    assert (copy / REPORT_FILE).stat().st_mtime_ns == stamp  # no second pretraining
    assert ensure_world_model("tiny", seed=0) == tiny_world.path
