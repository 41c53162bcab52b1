"""The stage-2 baselines: settings translation, SFT rows, the recipe switch, and both trainers for real."""

import pytest

from edit_grpo_trl.recipe import RecipeError, load_recipe
from edit_grpo_trl.stage2.baselines import grpo_settings, sft_rows, sft_settings

SETTINGS = {
    "alignment_coef": 0.2,
    "alignment_layer": 1,
    "agt_reward_funcs": ["anchor_accuracy"],
    "exclude_anchor_from_baseline": True,
    "num_generations": 4,
    "per_device_train_batch_size": 40,
    "temperature": 1.0,
    "learning_rate": 1e-4,
    "max_steps": 200,
    "seed": 3,
}


def test_grpo_settings_drop_only_pgaa_fields():
    settings = grpo_settings(SETTINGS)
    assert not {
        "alignment_coef",
        "alignment_layer",
        "agt_reward_funcs",
        "exclude_anchor_from_baseline",
    } & set(settings)
    assert settings["num_generations"] == 4 and settings["per_device_train_batch_size"] == 40
    assert settings["temperature"] == 1.0 and settings["seed"] == 3


def test_sft_sees_each_prompt_as_often_as_grpo():
    settings = sft_settings(SETTINGS)
    # 40 completions = 10 prompts x 4 generations under GRPO; SFT takes the 10 prompts once each.
    assert settings["per_device_train_batch_size"] == 10
    assert settings["max_steps"] == 200 and settings["learning_rate"] == 1e-4 and settings["seed"] == 3
    assert "temperature" not in settings and "num_generations" not in settings


def test_sft_rows_complete_plain_and_chat_prompts_with_the_first_answer():
    rows = sft_rows(
        [
            {"prompt": "Ada was born in", "answers": ["Lyon", "Lugdunum"], "case_id": "c", "role": "anchor"},
            {"prompt": [{"role": "user", "content": "Where?"}], "answers": ["Lyon"], "case_id": "c"},
        ]
    )
    assert rows[0] == {"prompt": "Ada was born in", "completion": " Lyon ."}
    assert rows[1]["completion"] == [{"role": "assistant", "content": "\\boxed{Lyon}"}]


def test_sft_rows_refuse_a_row_without_answers():
    with pytest.raises(ValueError, match="row 1 .*'c2'"):
        sft_rows([{"prompt": "a", "answers": ["x"]}, {"prompt": "b", "answers": [], "case_id": "c2"}])


def test_recipe_refinement_switch_is_validated():
    assert load_recipe(None).refinement == "edit_grpo"
    assert load_recipe(None, ["--refinement", "sft"]).refinement == "sft"
    with pytest.raises(RecipeError, match="refinement must be one of .*Did you mean 'grpo'"):
        load_recipe(None, ["--refinement", "grp"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grpo", "sft"])
def test_baseline_trainers_train_the_edited_model(tmp_path, tiny_world, method):
    """Each baseline runs for real on the tiny world's AGT data and changes the model's weights."""
    import datasets
    import torch

    from edit_grpo_trl.data.agt import AGTDataConfig, agt_features, build_agt_records
    from edit_grpo_trl.stage2.training import build_trainer, build_training_config

    recipe = load_recipe(
        "recipes/world-tiny/rome.yaml",
        ["--refinement", method, "--training.max_steps", "2", "--training.temperature", "3.0"]
        + ["--training.alignment_layer", "1"],  # EditGRPOConfig asks for it; the baselines ignore it
    )
    cases = tiny_world.world.edit_cases(num_cases=2, seed=5)
    records = build_agt_records(
        cases, AGTDataConfig(num_generalization=3, num_locality=1, locality_answers="dataset")
    )
    # Reward the facts the unedited model already states: at temperature 3 some samples hit and some miss,
    # so GRPO's groups have a spread and a gradient (new objects would score 0 everywhere, and move nothing).
    true_object = {case.case_id: case.target_true for case in cases}
    rows = [
        row if row["role"] == "locality" else {**row, "answers": [true_object[row["case_id"]]]}
        for row in records.rows
    ]
    dataset = datasets.Dataset.from_list(rows, features=agt_features("plain"))
    args = build_training_config(recipe, tmp_path / "train")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_world.path, dtype=torch.float32)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    tokenizer = AutoTokenizer.from_pretrained(tiny_world.path, padding_side="left")
    trainer = build_trainer(recipe, args, model, tokenizer, dataset)
    from trl import GRPOTrainer, SFTTrainer

    from edit_grpo_trl.stage2.trainer import EditGRPOTrainer

    expected = {"grpo": GRPOTrainer, "sft": SFTTrainer}[method]
    assert isinstance(trainer, expected) and not isinstance(trainer, EditGRPOTrainer)
    result = trainer.train()
    assert result.global_step == 2
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach().cpu(), before[n])]
    assert changed, f"{method} training left every weight unchanged"
    if method == "sft":
        # SFT batch: 20 GRPO completions / 4 generations = 5 prompts per step.
        assert trainer.args.per_device_train_batch_size == 5
