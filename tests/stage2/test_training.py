"""Stage 2 from a recipe: settings that must fail before any model is loaded."""

import sys

import pytest

from edit_grpo_trl.pipeline import Pipeline
from edit_grpo_trl.recipe import RecipeError, load_recipe
from edit_grpo_trl.stage2.training import build_training_config

RECIPE = "recipes/world-tiny/rome.yaml"


@pytest.fixture
def no_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError, installed or not


def test_use_vllm_without_vllm_fails_when_the_config_is_built(tmp_path, no_vllm):
    recipe = load_recipe(RECIPE, ["--training.use_vllm", "true", "--training.vllm_mode", "colocate"])
    with pytest.raises(
        RecipeError, match=r"use_vllm is true, but vllm cannot be imported.*vllm>=0\.22\.0,<=0\.31\.0"
    ):
        build_training_config(recipe, tmp_path / "stage2")


def test_use_vllm_without_vllm_stops_the_pipeline_before_stage_one(tmp_path, no_vllm):
    recipe = load_recipe(
        RECIPE,
        [
            "--training.use_vllm",
            "true",
            "--model.model_name_or_path",
            "absent-org/absent-model",  # a Hub id: nothing is resolved or downloaded before the check
            "--output_dir",
            str(tmp_path / "run"),
        ],
    )
    with pytest.raises(RecipeError, match="vllm cannot be imported"):
        Pipeline(recipe)
    assert not (tmp_path / "run").exists()


def test_without_use_vllm_nothing_is_imported(tmp_path, no_vllm):
    args = build_training_config(
        load_recipe(RECIPE, ["--training.alignment_layer", "2"]), tmp_path / "stage2"
    )
    assert args.use_vllm is False


def test_resume_from_checkpoint_as_the_recipe_says(tmp_path):
    from edit_grpo_trl.stage2.training import resume_checkpoint

    stage2 = tmp_path / "stage2"
    assert resume_checkpoint(None, stage2) is None  # nothing there yet: a fresh start
    with pytest.raises(RecipeError, match="holds no checkpoint"):
        resume_checkpoint(True, stage2)
    for step in (2, 4):
        (stage2 / f"checkpoint-{step}").mkdir(parents=True)
    assert resume_checkpoint(None, stage2).endswith("checkpoint-4")  # an interrupted run goes on
    assert resume_checkpoint("true", stage2).endswith("checkpoint-4")
    assert resume_checkpoint(False, stage2) is None
    assert resume_checkpoint(str(stage2 / "checkpoint-2"), stage2) == str(stage2 / "checkpoint-2")
    with pytest.raises(RecipeError, match="no checkpoint folder at"):
        resume_checkpoint(str(tmp_path / "elsewhere"), stage2)
