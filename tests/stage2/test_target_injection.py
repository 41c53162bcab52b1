"""Target injection: which rows get the new object, its importance weight, and that it teaches an answer no
sample reaches, in Edit-GRPO and in the vanilla-GRPO baseline."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig

from edit_grpo_trl import EditGRPOConfig, EditGRPOTrainer
from edit_grpo_trl.recipe import RecipeError
from edit_grpo_trl.stage2.rewards import anchor_accuracy, generalization_accuracy
from edit_grpo_trl.stage2.target_injection import WEIGHT_KEY, importance_weight, rows_to_inject
from edit_grpo_trl.stage2.training import refuse_sft_switches
from edit_grpo_trl.stage2.vanilla_grpo import VanillaGRPOTrainer

from .conftest import CITIES, make_agt_rows, make_model
from .test_locality import COMMON as SETTINGS

REWARDS = [anchor_accuracy, generalization_accuracy]


def unreachable_rows(num_cases: int = 2) -> dict[str, list]:
    """AGT rows whose new objects are three cities in a row: a random model never samples one exactly, so
    every group misses and only injection can reward anything."""
    rows = make_agt_rows(num_cases)
    for row, (case_id, role) in enumerate(zip(rows["case_id"], rows["role"], strict=True)):
        if role != "locality":
            case = int(case_id.split("-")[1])
            rows["answers"][row] = [" ".join(CITIES[case : case + 3])]
    return rows


def target_logp(model, tokenizer, rows, case: int) -> float:
    """Mean log-probability of case ``case``'s new-object tokens after its anchor prompt, by hand."""
    anchor = rows["role"].index("anchor", 4 * case)  # make_agt_rows: 4 rows per case, the anchor first
    prompt = tokenizer(rows["prompt"][anchor])["input_ids"]
    target = tokenizer(" " + rows["answers"][anchor][0], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + target])
    with torch.no_grad():
        logps = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
    positions = range(len(prompt) - 1, len(prompt) - 1 + len(target))
    return sum(logps[p, t].item() for p, t in zip(positions, target, strict=True)) / len(target)


def test_rows_to_inject_takes_the_last_anchor_row_of_cases_that_all_missed():
    case_ids = ["a", "a", "a", "a", "b", "b", "b", "b", "c", "c"]
    roles = ["anchor", "anchor", "generalization", "generalization"] * 2 + [
        "generalization",
        "generalization",
    ]
    hits = [False, False, True, True, False, True, False, False, False, False]
    # a: both anchor samples missed (its generalization hits do not count); b: one anchor hit; c: no anchor
    assert rows_to_inject(case_ids, roles, hits) == [1]
    assert rows_to_inject(["a", "b", "a"], ["anchor", "anchor", "anchor"], [False, False, False]) == [1, 2]


def test_importance_weight_is_p_over_p_plus_gamma():
    logp = torch.log(torch.tensor([0.5, 0.01]))
    assert importance_weight(logp, 0.1).tolist() == pytest.approx([0.5 / 0.6, 0.01 / 0.11])
    assert importance_weight(logp, 0.0).tolist() == [1.0, 1.0]


def test_config_and_sft_refuse_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="target_injection_gamma"):
        EditGRPOConfig(
            **{**SETTINGS, "output_dir": str(tmp_path), "alignment_coef": 0.0, "target_injection_gamma": -0.5}
        )
    args = EditGRPOConfig(
        **{**SETTINGS, "output_dir": str(tmp_path), "alignment_coef": 0.0, "target_injection": True}
    )
    with pytest.raises(RecipeError, match="target_injection"):
        refuse_sft_switches(args)


def _edit_grpo(tmp_path, tokenizer, rows, injection: bool, **overrides) -> EditGRPOTrainer:
    args = EditGRPOConfig(
        output_dir=str(tmp_path),
        **{**SETTINGS, "alignment_coef": 0.0, "target_injection": injection, **overrides},
    )
    return EditGRPOTrainer(
        make_model(),
        reward_funcs=REWARDS,
        args=args,
        train_dataset=Dataset.from_dict(rows),
        processing_class=tokenizer,
    )


def test_the_generation_batch_carries_the_target_and_its_weight(tmp_path, tokenizer):
    rows = unreachable_rows()
    trainer = _edit_grpo(tmp_path, tokenizer, rows, injection=True, target_injection_gamma=0.1)
    batch = next(iter(trainer.get_train_dataloader()))
    output = trainer._generate_and_score_completions(batch)

    weights = output[WEIGHT_KEY]
    ids, mask = output["completion_ids"], output["completion_mask"]
    injected = [row for row in range(len(batch)) if weights[row] != 1]
    anchors = {}
    for row, example in enumerate(batch):
        if example["role"] == "anchor":
            anchors[example["case_id"]] = row  # the last anchor row of each case
    assert injected == sorted(anchors.values())
    for case_id, row in anchors.items():
        case = int(case_id.split("-")[1])
        target = tokenizer(" " + rows["answers"][4 * case][0], add_special_tokens=False)["input_ids"]
        assert ids[row][mask[row].bool()].tolist() == target
        expected = importance_weight(torch.tensor(target_logp(trainer.model, tokenizer, rows, case)), 0.1)
        assert weights[row].item() == pytest.approx(expected.item(), abs=1e-5)
        assert output["advantages"][row] > 0  # the only rewarded sample of its case
    assert trainer._metrics["train"]["injection/rows"] == [len(anchors)]


def test_the_loss_scales_the_advantages_by_the_weights(tmp_path, tokenizer):
    trainer = _edit_grpo(tmp_path, tokenizer, unreachable_rows(), injection=True)
    batch = next(iter(trainer.get_train_dataloader()))
    output = trainer._generate_and_score_completions(batch)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this test skips
    plain = {key: value for key, value in output.items() if key != WEIGHT_KEY}
    zero = trainer._compute_loss(
        trainer.model, {**plain, "advantages": torch.zeros_like(output["advantages"])}
    )
    weighted = trainer._compute_loss(
        trainer.model, {**output, WEIGHT_KEY: torch.zeros_like(output[WEIGHT_KEY])}
    )
    assert weighted.item() == pytest.approx(zero.item())
    unit = trainer._compute_loss(trainer.model, {**output, WEIGHT_KEY: torch.ones_like(output[WEIGHT_KEY])})
    assert unit.item() == pytest.approx(trainer._compute_loss(trainer.model, plain).item())
    assert unit.item() != pytest.approx(zero.item())


@pytest.mark.parametrize("trainer_kind", ["edit_grpo", "grpo"])
def test_injection_teaches_an_answer_no_sample_reaches(tmp_path, tokenizer, trainer_kind):
    rows = unreachable_rows()
    before = target_logp(make_model(), tokenizer, rows, case=0)
    after = {}
    for injection in (False, True):
        if trainer_kind == "edit_grpo":
            trainer = _edit_grpo(tmp_path / str(injection), tokenizer, rows, injection)
        else:
            trainer = VanillaGRPOTrainer(
                make_model(),
                reward_funcs=REWARDS,
                args=GRPOConfig(output_dir=str(tmp_path / str(injection)), **SETTINGS),
                train_dataset=Dataset.from_dict(rows),
                processing_class=tokenizer,
                target_injection=injection,
                target_injection_gamma=0.0,
            )
        trainer.train()
        after[injection] = target_logp(trainer.model, tokenizer, rows, case=0)
    assert after[False] == pytest.approx(before, abs=1e-6)  # every reward 0: no advantage, no change
    assert after[True] > before + 0.1
