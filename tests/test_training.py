"""Stage 2 from a recipe: settings that must fail before any model is loaded."""

import sys

import pytest

from edit_grpo_trl.pipeline import Pipeline
from edit_grpo_trl.recipe import RecipeError, load_recipe
from edit_grpo_trl.training import build_training_config

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
            "--model.name_or_path",
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
