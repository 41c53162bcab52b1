import pytest

from edit_grpo_trl.data.agt_config import AGTDataConfig
from edit_grpo_trl.recipe import RecipeError, load_recipe, parse_overrides, recipe_from_dict


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_yaml_maps_onto_typed_sections_and_flags_override(tmp_path):
    path = write(
        tmp_path,
        """
model: {model_name_or_path: world:tiny}
editor: {name: rome, overrides: {layers: [1]}}
training: {learning_rate: 1e-4, adam_epsilon: 1e-8, alignment_layer: 1, num_generations: 4}
output_dir: runs/x
""",
    )
    recipe = load_recipe(
        path, ["--training.learning_rate", "3e-5", "--editor.name=memit", "--data.num_cases", "7"]
    )
    assert recipe.editor.name == "memit" and recipe.editor.overrides == {"layers": [1]}
    assert recipe.training == {
        "learning_rate": 3e-5,
        "adam_epsilon": 1e-8,
        "alignment_layer": 1,
        "num_generations": 4,
    }
    assert recipe.data.num_cases == 7 and recipe.output_dir == "runs/x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("modle: {}", "unknown key 'modle'. Did you mean 'model'?"),
        ("editor: {nmae: rome}", "section 'editor': unknown key 'nmae'. Did you mean 'name'?"),
        ("training: {alignment_coeff: 0.2}", "unknown key 'alignment_coeff'. Did you mean 'alignment_coef'?"),
        ("data: [1, 2]", "section 'data' must be a mapping"),
        ("model: {model_name_or_path: [", "not valid YAML"),
    ],
)
def test_bad_recipes_name_the_key_and_the_nearest_valid_one(tmp_path, text, message):
    with pytest.raises(
        RecipeError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        load_recipe(write(tmp_path, text))


def test_missing_recipe_file_is_named(tmp_path):
    with pytest.raises(RecipeError, match="no recipe file at .*absent.yaml"):
        load_recipe(tmp_path / "absent.yaml")


def test_override_syntax_errors():
    with pytest.raises(RecipeError, match="has no value"):
        parse_overrides(["--training.learning_rate"])
    with pytest.raises(RecipeError, match="unexpected argument"):
        parse_overrides(["learning_rate=3"])
    assert parse_overrides(["--lora.enabled", "true", "--lora.target-modules", "[q_proj]"]) == {
        "lora": {"enabled": True, "target_modules": ["q_proj"]}
    }


def test_only_true_and_false_are_booleans():
    """YAML 1.1 would turn `save_strategy: no` into False and fail inside TrainingArguments."""
    recipe = load_recipe(
        None, ["--training.save_strategy", "no", "--lora.enabled", "true", "--wandb.run_name", "off"]
    )
    assert recipe.training["save_strategy"] == "no"
    assert recipe.lora.enabled is True
    assert recipe.wandb.run_name == "off"


def test_data_section_is_the_agt_config_with_its_defaults():
    """The AGT builder gets the recipe's data section itself: every AGT setting, default included, is
    AGTDataConfig's."""
    data = load_recipe(
        None, ["--data.locality_batch_size", "8", "--data.chat_template_kwargs", "{a: 1}"]
    ).data
    assert isinstance(data, AGTDataConfig)
    defaults = AGTDataConfig()
    for name in ("num_generalization", "num_locality", "on_missing", "seed", "locality_pool_size"):
        assert getattr(data, name) == getattr(defaults, name)
    assert data.locality_batch_size == 8 and data.chat_template_kwargs == {"a": 1}
    with pytest.raises(
        RecipeError, match="section 'data': unknown key 'num_localty'. Did you mean 'num_locality'"
    ):
        load_recipe(None, ["--data.num_localty", "2"])
    with pytest.raises(RecipeError, match="section 'data': num_locality must be an integer >= 0, got True"):
        load_recipe(None, ["--data.num_locality", "true"])


def test_the_written_recipe_reads_back_as_the_same_recipe():
    """recipe.json (to_dict) writes each section with the keys a recipe gives: the model section without
    TRL ModelConfig's PEFT fields, the lora section flat."""
    recipe = load_recipe("recipes/qwen3-8b/rome.yaml", ["--lora.use_dora", "true"])
    written = recipe.to_dict()
    assert "lora_r" not in written["model"] and written["lora"]["use_dora"] is True
    assert recipe_from_dict(written).to_dict() == written
