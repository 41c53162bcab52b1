"""WISE on the pretrained tiny knowledge world: 20 sequential edits, routing, kept facts, the checkpoint.

Greedy decoding + exact match, as the generation-based metrics read it; the untouched facts are anchor prompts
of people no case edits, with the pre-edit model's (correct) answers.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from edit_grpo_trl.answers import exact_match
from edit_grpo_trl.editors.checkpoint import EditManifest, load_edited_model, save_edited
from edit_grpo_trl.editors.presets import resolve_hparams
from edit_grpo_trl.editors.tokens import encode
from edit_grpo_trl.editors.wise import WiseEditor, wise_modules
from edit_grpo_trl.generation import greedy_generate

from .conftest import untouched_anchors

pytestmark = pytest.mark.slow
NUM_CASES = 20
# What the world-tiny preset reaches (per-token router, act_ratio 0.3, replay 8): reliability 0.95, 0.83 of 100
# untouched anchors of people neither edited nor reserved kept (without replay 0.75 / 0.64 of the first 100
# including reserved people; the mean router kept 0.55): as edits accumulate the side memory moves every prompt
# of the world (docs/editors.md, "Routing on the tiny world"). The opt-in locality settings below reach the 0.95
# asked of WISE here (not on every case draw: docs/editors.md, "Locality: hard negatives and a threshold from the
# merged memory"); the preset keeps the replay-8 values because stage 2 undoes edits under that tight threshold.
# The reserved people's facts are what those settings train on as negatives, so they are left out here.
RELIABILITY_FLOOR = 0.9
KEPT_FLOOR = 0.78
# the hard negatives and the threshold refit on the merged side memory (WiseHParams.loc_case_probes, threshold_from)
LOCALITY_SETTINGS = dict(
    loc_case_probes=8, act_margin=[5.0, 30.0, 15.0], n_iter=50, threshold_from="merged", act_ratio=0.9
)
ROUTED_EDIT_FLOOR = 0.9


@pytest.fixture(scope="module")
def cases(tiny_world):
    return tiny_world.world.edit_cases(num_cases=NUM_CASES, seed=0)


@pytest.fixture(scope="module")
def untouched(tiny_world, cases):
    return untouched_anchors(tiny_world, cases, 100, skip_reserved=True)


@pytest.fixture(scope="module")
def edited(tiny_world, cases):
    settings = resolve_hparams("wise", tiny_world.model.config, None, model_dir=tiny_world.path)
    model = copy.deepcopy(tiny_world.model)
    return WiseEditor(settings.hparams).edit(model, tiny_world.tokenizer, cases, show_progress=False)


def _reliability_and_kept(model, tokenizer, cases, untouched) -> tuple[float, float]:
    answers = greedy_generate(model, tokenizer, [case.prompt for case in cases], max_new_tokens=4)
    hits = sum(exact_match(a, case.target_new) for a, case in zip(answers, cases, strict=True))
    after = greedy_generate(model, tokenizer, [p for p, _ in untouched], max_new_tokens=4)
    kept = sum(a == before for a, (_, before) in zip(after, untouched, strict=True))
    return hits / len(cases), kept / len(untouched)


def _routed_at_last_token(model, tokenizer, prompts) -> float:
    (wise,) = wise_modules(model).values()
    routed = 0
    with torch.no_grad():
        for prompt in prompts:
            model(input_ids=torch.tensor([encode(tokenizer, prompt)]))
            routed += bool(wise.last_routes[0, -1])
    return routed / len(prompts)


def test_twenty_sequential_edits_are_reliable_and_keep_untouched_facts(tiny_world, cases, untouched, edited):
    reliability, kept = _reliability_and_kept(edited.model, tiny_world.tokenizer, cases, untouched)
    assert reliability >= RELIABILITY_FLOOR, reliability
    assert kept >= KEPT_FLOOR, kept


def test_the_locality_settings_keep_ninety_five_percent_of_untouched_facts(tiny_world, cases, untouched):
    settings = resolve_hparams("wise", tiny_world.model.config, None, model_dir=tiny_world.path)
    hparams = dataclasses.replace(settings.hparams, **LOCALITY_SETTINGS)
    model = copy.deepcopy(tiny_world.model)
    edited = WiseEditor(hparams).edit(model, tiny_world.tokenizer, cases, show_progress=False)
    reliability, kept = _reliability_and_kept(edited.model, tiny_world.tokenizer, cases, untouched)
    assert reliability >= 0.9, reliability
    assert kept >= 0.95, kept


def test_edit_prompts_reach_the_side_memory(tiny_world, cases, edited):
    # Unrelated prompts mostly do too on this world (see above); the routing contrast is tested on a
    # constructed side memory in test_wise.py.
    prompts = [case.prompt for case in cases]
    assert _routed_at_last_token(edited.model, tiny_world.tokenizer, prompts) >= ROUTED_EDIT_FLOOR


def test_checkpoint_round_trip_evaluates_the_same(tiny_world, cases, edited, tmp_path):
    model, tokenizer = edited.model, tiny_world.tokenizer
    manifest = EditManifest.from_record(edited.record, source_model=str(tiny_world.path))
    folder = save_edited(model, tokenizer, manifest, tmp_path / "wise", tiny_world.path)
    loaded = load_edited_model(folder, dtype=torch.float32).eval()
    prompts = [case.prompt for case in cases] + [p for p, _ in tiny_world.world.recall_prompts("anchor")[:40]]
    assert greedy_generate(loaded, tokenizer, prompts, max_new_tokens=4) == greedy_generate(
        model, tokenizer, prompts, max_new_tokens=4
    )


def test_pipeline_stage2_on_a_wise_model_changes_only_the_side_memory(tiny_world, tmp_path):
    from safetensors.torch import load_file

    from edit_grpo_trl.pipeline import run_pipeline
    from edit_grpo_trl.recipe import load_recipe

    quick = ["--data.num_cases", "4", "--training.max_steps", "2", "--training.save_steps", "2"]
    quick += ["--evaluation.max_new_tokens", "4", "--output_dir", str(tmp_path / "run")]
    run_pipeline(load_recipe("recipes/world-tiny/wise.yaml", quick))
    edited = load_file(tmp_path / "run" / "stage1" / "model" / "model.safetensors")
    refined = load_file(tmp_path / "run" / "stage2" / "final" / "model.safetensors")
    side = "model.layers.3.mlp.down_proj.side.weight"
    assert side in edited and edited.keys() == refined.keys()
    changed = {name for name in edited if not torch.equal(edited[name], refined[name])}
    assert changed == {side}
    # Evaluation and any later stage load the refined folder as a routed model again.
    assert wise_modules(load_edited_model(tmp_path / "run" / "stage2" / "final"))
