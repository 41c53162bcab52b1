"""The dense locality loss and the train scope: the math by hand, then on the three stage-2 trainers."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, SFTConfig

from edit_grpo_trl import EditGRPOConfig, EditGRPOTrainer
from edit_grpo_trl.stage2.layer_features import AlignmentModuleError
from edit_grpo_trl.stage2.locality import (
    IGNORE_INDEX,
    LocalityPool,
    LocalitySFTTrainer,
    answer_nll,
    teacher_forced_batch,
)
from edit_grpo_trl.stage2.scope import apply_train_scope, scope_prefixes
from edit_grpo_trl.stage2.vanilla_grpo import VanillaGRPOTrainer

from .conftest import make_agt_rows, make_model

POOL = [
    {"prompt": "Eli lives in", "answers": ["Doha"], "answer_style": "plain"},
    {"prompt": "the home town of Fay is", "answers": ["Kiev"], "answer_style": "plain"},
    {"prompt": "Dee was born in", "answers": ["Lima"], "answer_style": "plain"},
]
COMMON = dict(
    per_device_train_batch_size=8,
    steps_per_generation=2,
    num_generations=2,
    max_completion_length=3,
    learning_rate=5e-2,
    report_to="none",
    save_strategy="no",
    use_cpu=True,
    bf16=False,
    seed=0,
    max_steps=2,
    logging_steps=1,
)


def constant_reward(completions, **_):
    """Every completion scores the same: every advantage is 0, so the policy loss has no gradient."""
    return [1.0] * len(completions)


def test_teacher_forced_batch_labels_only_the_answer_tokens():
    input_ids, mask, labels = teacher_forced_batch([[5, 6, 7], [5]], [[8], [9, 10]], pad_token_id=0)
    assert input_ids.tolist() == [[5, 6, 7, 8], [5, 9, 10, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert labels.tolist() == [[IGNORE_INDEX] * 3 + [8], [IGNORE_INDEX, 9, 10, IGNORE_INDEX]]


def test_answer_nll_by_hand_weighs_rows_equally():
    vocab = 4
    logits = torch.zeros(2, 3, vocab)
    logits[0, 1, 2] = math.log(3.0)  # position 1 predicts token 2 with p = 3 / 6 = 0.5
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2], [IGNORE_INDEX, 1, 3]])
    # row 0: -log 0.5; row 1: two uniform tokens, -log 0.25 each, averaged within the row
    expected = (math.log(2.0) + math.log(4.0)) / 2
    assert answer_nll(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_pool_visits_every_row_before_repeating_and_boxes_chat_answers(tokenizer):
    pool = LocalityPool(POOL, tokenizer, seed=3)
    seen = []
    for _ in range(3):
        input_ids, _, labels = pool.next_batch(1)
        seen.append(tuple(input_ids[0][labels[0] != IGNORE_INDEX].tolist()))
    assert sorted(seen) == sorted(
        tuple(tokenizer(" " + row["answers"][0], add_special_tokens=False)["input_ids"]) for row in POOL
    )
    with pytest.raises(ValueError, match="empty"):
        LocalityPool([], tokenizer)


def _logged(trainer, key: str) -> list[float]:
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def _pool_nll(model, tokenizer) -> float:
    input_ids, mask, labels = LocalityPool(POOL, tokenizer).next_batch(len(POOL))
    with torch.no_grad():
        return answer_nll(model(input_ids=input_ids, attention_mask=mask).logits, labels).item()


def _edit_grpo(tmp_path, tokenizer, model, coef, **overrides):
    args = EditGRPOConfig(
        output_dir=str(tmp_path),
        **{**COMMON, "alignment_coef": 0.0, "locality_coef": coef, "locality_batch_size": 3, **overrides},
    )
    return EditGRPOTrainer(
        model,
        reward_funcs=[constant_reward],
        args=args,
        train_dataset=Dataset.from_dict(make_agt_rows()),
        processing_class=tokenizer,
        locality_pool=POOL,
    )


@pytest.mark.parametrize("coef", [0.0, 2.0])
def test_edit_grpo_trains_the_pool_answers_only_when_the_coefficient_is_on(tmp_path, tokenizer, coef):
    model = make_model()
    before = _pool_nll(model, tokenizer)
    trainer = _edit_grpo(tmp_path, tokenizer, model, coef)
    trainer.train()
    after = _pool_nll(trainer.model, tokenizer)
    if coef == 0:  # zero advantages, no locality term: nothing moves
        assert after == pytest.approx(before, abs=1e-6)
        assert not _logged(trainer, "locality/nll")
    else:
        assert after < before - 0.1
        assert len(_logged(trainer, "locality/nll")) == 2


def test_baselines_get_the_same_term(tmp_path, tokenizer):
    model = make_model()
    before = _pool_nll(model, tokenizer)
    grpo = VanillaGRPOTrainer(
        model,
        reward_funcs=[constant_reward],
        args=GRPOConfig(output_dir=str(tmp_path / "grpo"), **COMMON),
        train_dataset=Dataset.from_dict(make_agt_rows()),
        processing_class=tokenizer,
        locality_pool=POOL,
        locality_coef=2.0,
        locality_batch_size=3,
    )
    grpo.train()
    assert _pool_nll(grpo.model, tokenizer) < before - 0.1

    rows = [{"prompt": "Ana was born in", "completion": " Paris ."}] * 4
    sft_settings = {k: v for k, v in COMMON.items() if k not in ("steps_per_generation", "num_generations")}
    sft_settings.pop("max_completion_length")
    sft = LocalitySFTTrainer(
        make_model(),
        args=SFTConfig(
            output_dir=str(tmp_path / "sft"), **{**sft_settings, "per_device_train_batch_size": 2}
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        locality_pool=POOL,
        locality_coef=1.0,
        locality_batch_size=3,
    )
    sft.train()
    assert _logged(sft, "locality/nll")


def test_a_coefficient_without_a_pool_is_refused(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="no locality pool"):
        EditGRPOTrainer(
            make_model(),
            reward_funcs=[constant_reward],
            args=EditGRPOConfig(
                output_dir=str(tmp_path), **{**COMMON, "alignment_coef": 0.0, "locality_coef": 1.0}
            ),
            train_dataset=Dataset.from_dict(make_agt_rows()),
            processing_class=tokenizer,
        )
    with pytest.raises(ValueError, match="locality_coef must be a number >= 0"):
        EditGRPOConfig(output_dir=str(tmp_path), **{**COMMON, "alignment_coef": 0.0, "locality_coef": -1.0})


def test_scope_prefixes_and_errors():
    model = make_model(layers=3)
    assert scope_prefixes(model, "all", [1], "mlp.down_proj") == []
    assert scope_prefixes(model, "edited_layers", [2, 1, 2], "mlp.down_proj") == [
        "model.layers.1",
        "model.layers.2",
    ]
    assert scope_prefixes(model, "edited_modules", [1], "mlp.down_proj") == ["model.layers.1.mlp.down_proj"]
    with pytest.raises(AlignmentModuleError, match="past the model's 3 decoder layers"):
        scope_prefixes(model, "edited_layers", [3], "mlp.down_proj")
    with pytest.raises(AlignmentModuleError, match="names none"):
        scope_prefixes(model, "edited_layers", [], "mlp.down_proj")
    with pytest.raises(AlignmentModuleError, match="no parameter"):
        apply_train_scope(model, "edited_modules", [1], "mlp.no_such_proj")


def test_training_in_the_edited_modules_scope_changes_those_weights_only(tmp_path, tokenizer):
    model = make_model(layers=3)
    trainable = apply_train_scope(model, "edited_modules", [1], "mlp.down_proj")
    assert trainable == model.model.layers[1].mlp.down_proj.weight.numel()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = _edit_grpo(tmp_path, tokenizer, model, 2.0)
    trainer.train()
    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {"model.layers.1.mlp.down_proj.weight"}
