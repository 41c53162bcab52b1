"""Every shipped recipe parses, maps onto the config dataclasses, and fits its model's real configuration."""

import json
from pathlib import Path

import pytest
from transformers import AutoConfig

from edit_grpo_trl.editors.presets import load_hparams_file, preset_dir
from edit_grpo_trl.recipe import load_recipe
from edit_grpo_trl.stage2.layer_features import count_decoder_layers

ROOT = Path(__file__).parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*/*.yaml"))
CONFIG_FIXTURES = ROOT / "tests" / "editors" / "fixtures"


def test_recipes_cover_every_model_and_editor():
    names = {(path.parent.name, path.stem) for path in RECIPES}
    for model in ("qwen3-8b", "llama3-8b", "qwen2.5-7b", "smollm2-135m", "world-tiny", "world-small"):
        for editor in ("rome", "memit", "ft", "alphaedit"):
            assert (model, editor) in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_parses_and_fits_its_model(path):
    recipe = load_recipe(path)
    model = path.parent.name
    assert recipe.editor.name == path.stem.partition("-")[0]  # memit-chat.yaml: a variant of memit
    hparams = load_hparams_file(preset_dir() / recipe.editor.name / f"{recipe.editor.hparams}.yaml")
    layers = list(hparams.hparams.layers)
    fixture = CONFIG_FIXTURES / f"{model}.json"
    if fixture.is_file():  # a real model: its public config values
        values = {k: v for k, v in json.loads(fixture.read_text()).items() if not k.startswith("_")}
        config = AutoConfig.for_model(values.pop("model_type"), **values)
        num_layers = count_decoder_layers(type("M", (), {"config": config})())
        assert all(0 <= layer < num_layers for layer in layers)
        # Real data holds no training paraphrases: every real-model recipe builds a pool, with a source
        # (templates with a {prompt} slot) that yields prompts for any case.
        assert "templates" in recipe.data.train_prompts.sources
        assert any("{prompt}" in template for template in recipe.data.train_prompts.templates)
    # The alignment layer is never written down twice: it comes from the editor (its edit manifest).
    assert "alignment_layer" not in recipe.training


def test_smollm2_chat_recipe_asks_chat_prompts_everywhere_and_reads_them_plainly():
    recipe = load_recipe(ROOT / "recipes" / "smollm2-135m" / "memit-chat.yaml")
    data = recipe.data
    assert data.prompt_style == "chat" and data.chat_answer == "plain" and data.answer_style == "plain"
    assert "boxed" not in data.chat_instruction  # SmolLM2-135M does not box its answers
    assert recipe.evaluation.prompts == "data" and data.keep_known  # known, trained and scored on chat
    assert "boxed_format" not in recipe.training["agt_reward_funcs"]
    assert recipe.training["max_completion_length"] > 8  # the answer restates the prompt
