"""``early_stop_reward``: the window over logged reward means, the stop itself, and both GRPO trainers
stopping on the same figures."""

import math

import pytest
from datasets import Dataset
from transformers import TrainerControl, TrainerState

from edit_grpo_trl import EditGRPOConfig, EditGRPOTrainer
from edit_grpo_trl.recipe import RecipeError
from edit_grpo_trl.stage2.early_stop import (
    ANCHOR_REWARD_KEY,
    GENERALIZATION_REWARD_KEY,
    RewardSaturationStop,
    attach_reward_saturation_stop,
    early_stop_step,
    saturated_means,
)
from edit_grpo_trl.stage2.training import refuse_sft_switches

from .conftest import WORDS, make_agt_rows, make_model
from .test_trainer import COMMON

A, G = ANCHOR_REWARD_KEY, GENERALIZATION_REWARD_KEY


def test_the_window_counts_only_logs_that_carry_both_figures():
    history = [
        {A: 0.2, G: 0.0, "step": 1},
        {"loss": 0.1, "step": 2},  # a step that did not generate: no reward figures
        {A: 1.0, "step": 3},  # one figure only
        {A: 0.8, G: 0.6, "step": 4},
        {A: 1.0, G: float("nan"), "step": 5},  # NaN: the function scored no row
        {A: 0.6, G: 1.0, "step": 6},
    ]
    assert saturated_means(history, 4) is None
    anchor, generalization = saturated_means(history, 2)
    assert math.isclose(anchor, 0.7) and math.isclose(generalization, 0.8)
    anchor, generalization = saturated_means(history, 3)
    assert math.isclose(anchor, (0.2 + 0.8 + 0.6) / 3) and math.isclose(generalization, (0.0 + 0.6 + 1.0) / 3)


def run_logs(callback, history):
    """Feed logs one at a time, as Trainer.log does (the entry is in log_history before on_log)."""
    state, control = TrainerState(), TrainerControl()
    for step, entry in enumerate(history, start=1):
        state.global_step = step
        state.log_history.append({**entry, "step": step})
        control = callback.on_log(None, state, control, logs=entry)
        if control.should_training_stop:
            return step
    return None


def test_stops_only_when_both_means_reach_the_threshold():
    saturated_anchor = [{A: 1.0, G: 0.5}] * 5
    assert run_logs(RewardSaturationStop(0.9, 2), saturated_anchor) is None
    climbing = [{A: 0.9, G: 0.7}, {A: 1.0, G: 0.9}, {A: 1.0, G: 0.95}, {A: 1.0, G: 1.0}]
    callback = RewardSaturationStop(0.9, 2)
    # step 2: generalization (0.7 + 0.9) / 2 = 0.8 < 0.9; step 3: (0.9 + 0.95) / 2 = 0.925
    assert run_logs(callback, climbing) == 3 and callback.stopped_at_step == 3
    assert math.isclose(callback.means[1], 0.925)
    # a window of one stops at the first log at the threshold
    assert run_logs(RewardSaturationStop(0.9, 1), climbing) == 2


def test_config_range_and_reward_functions(tmp_path):
    def config(**overrides):
        return EditGRPOConfig(output_dir=str(tmp_path), **{**COMMON, "alignment_coef": 0.0, **overrides})

    assert config().early_stop_reward is None
    for bad in (0.0, 1.5, -0.1, True):
        with pytest.raises(ValueError, match="early_stop_reward is a share"):
            config(early_stop_reward=bad)
    with pytest.raises(ValueError, match="early_stop_window must be a number >= 1"):
        config(early_stop_window=0)
    with pytest.raises(ValueError, match="whole number of logs"):
        config(early_stop_window=2.5)
    with pytest.raises(ValueError, match=r"agt_reward_funcs lacks \['generalization_accuracy'\]"):
        config(early_stop_reward=0.9, agt_reward_funcs=["anchor_accuracy", "locality_preservation"])
    with pytest.raises(RecipeError, match="SFT"):
        refuse_sft_switches(config(early_stop_reward=0.9))
    refuse_sft_switches(config())


def any_word_dataset(accept_anything: bool) -> Dataset:
    """Two cases; with ``accept_anything`` every vocabulary word is an accepted answer, so a random model's
    anchor and generalization accuracies are near 1; without it, the one real answer (near 0)."""
    rows = make_agt_rows(num_cases=2)
    if accept_anything:
        words = [w for w in WORDS if not w.startswith("<")]
        rows["answers"] = [
            words if role != "locality" else answers
            for role, answers in zip(rows["role"], rows["answers"], strict=True)
        ]
    return Dataset.from_dict(rows)


SHORT = {
    **COMMON,
    "log_completions": False,
    "max_completion_length": 1,
    "alignment_coef": 0.0,
    "max_steps": 6,
}


@pytest.mark.parametrize("accept_anything", [True, False])
def test_edit_grpo_stops_at_the_logged_step_once_saturated(tmp_path, tokenizer, accept_anything):
    trainer = EditGRPOTrainer(
        make_model(seed=2),
        args=EditGRPOConfig(output_dir=str(tmp_path), **SHORT, early_stop_reward=0.5, early_stop_window=1),
        train_dataset=any_word_dataset(accept_anything),
        processing_class=tokenizer,
    )
    result = trainer.train()
    stopped = early_stop_step(trainer)
    figures = [e for e in trainer.state.log_history if A in e and G in e]
    assert figures and all(0 <= e[A] <= 1 and 0 <= e[G] <= 1 for e in figures)
    if accept_anything:  # the first log with rewards ends it
        assert figures[0][A] >= 0.5 and figures[0][G] >= 0.5
        assert stopped == result.global_step == figures[0]["step"] == 1
    else:
        assert stopped is None and result.global_step == 6
        assert all(e[A] < 0.5 or e[G] < 0.5 for e in figures)


def test_vanilla_grpo_stops_on_the_same_figures(tmp_path, tokenizer):
    from trl import GRPOConfig

    from edit_grpo_trl.stage2.rewards import resolve_reward_functions
    from edit_grpo_trl.stage2.vanilla_grpo import VanillaGRPOTrainer

    settings = {k: v for k, v in SHORT.items() if k != "alignment_coef"}
    trainer = VanillaGRPOTrainer(
        make_model(seed=2),
        reward_funcs=resolve_reward_functions(["anchor_accuracy", "generalization_accuracy"]),
        args=GRPOConfig(output_dir=str(tmp_path), **settings),
        train_dataset=any_word_dataset(True),
        processing_class=tokenizer,
    )
    attach_reward_saturation_stop(trainer, 0.5, 1)
    assert trainer.train().global_step == early_stop_step(trainer) == 1

    only_anchor = VanillaGRPOTrainer(
        make_model(seed=2),
        reward_funcs=resolve_reward_functions(["anchor_accuracy"]),
        args=GRPOConfig(output_dir=str(tmp_path), **settings),
        train_dataset=any_word_dataset(True),
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match=r"missing \['generalization_accuracy'\]"):
        attach_reward_saturation_stop(only_anchor, 0.5, 1)
    assert attach_reward_saturation_stop(only_anchor, None, 1) is None
