"""One model loader: the recipe's ``model`` section is a TRL ModelConfig, and ``lora`` goes straight into peft."""

import pytest
import torch

from edit_grpo_trl.loading import ALL_LINEAR, load_causal_lm, lora_config, model_init_kwargs
from edit_grpo_trl.recipe import RecipeError, load_recipe

from .stage2.conftest import make_model, make_tokenizer


@pytest.fixture
def tiny_folder(tmp_path):
    model, tokenizer = make_model(seed=1), make_tokenizer()
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    return str(tmp_path / "tiny")


def test_an_8b_recipe_trains_in_bfloat16_on_a_gpu_and_float32_on_a_cpu(tiny_folder, monkeypatch):
    recipe = load_recipe("recipes/qwen3-8b/rome.yaml", ["--model.attn_implementation", "eager"])
    assert recipe.model.dtype == "bfloat16"
    # as run_training loads it (the trainer places the model): float32 on this CPU-only machine ...
    model, _ = load_causal_lm(tiny_folder, recipe.model, place=False)
    assert next(model.parameters()).dtype == torch.float32
    # ... and the recipe's bfloat16 where there is a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model, tokenizer = load_causal_lm(tiny_folder, recipe.model, place=False)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None


def test_model_section_becomes_from_pretrained_kwargs():
    recipe = load_recipe(
        None,
        [
            "--model.dtype",
            "bfloat16",
            "--model.attn_implementation",
            "sdpa",
            "--model.model_revision",
            "v2",
            "--model.trust_remote_code",
            "true",
            "--model.load_in_4bit",
            "true",
        ],
    )
    kwargs = model_init_kwargs(recipe.model, device="cuda")
    assert kwargs["dtype"] == "bfloat16" and kwargs["attn_implementation"] == "sdpa"
    assert kwargs["revision"] == "v2" and kwargs["trust_remote_code"] is True
    quantization = kwargs["quantization_config"]
    assert quantization.load_in_4bit and quantization.bnb_4bit_quant_type == "nf4"
    assert quantization.bnb_4bit_compute_dtype == torch.bfloat16
    assert model_init_kwargs(recipe.model, device="cpu")["dtype"] == "float32"
    # "auto" names no torch dtype: 4-bit layers then compute in bitsandbytes' default
    auto = load_recipe(None, ["--model.dtype", "auto", "--model.load_in_4bit", "true"])
    assert model_init_kwargs(auto.model)["quantization_config"].bnb_4bit_compute_dtype == torch.float32
    assert "quantization_config" not in model_init_kwargs(load_recipe(None, []).model)
    with pytest.raises(RecipeError, match="8 bit and 4 bit"):  # TRL's own check
        load_recipe(None, ["--model.load_in_4bit", "true", "--model.load_in_8bit", "true"])


def test_model_section_is_trl_model_config():
    from trl import ModelConfig

    model = load_recipe(None, ["--model.model_revision", "v2"]).model
    assert isinstance(model, ModelConfig) and model.model_name_or_path == "world:tiny"
    # every loading default is TRL's
    for name in (
        "model_revision",
        "dtype",
        "attn_implementation",
        "bnb_4bit_quant_type",
        "use_bnb_nested_quant",
    ):
        assert getattr(load_recipe(None, []).model, name) == getattr(ModelConfig(), name)
    assert model_init_kwargs(model)["revision"] == "v2"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--model.name_or_path", "x"], "'name_or_path': it is now 'model_name_or_path'"),
        (["--model.lora_r", "8"], "'lora_r': LoRA has its own section: set lora.r"),
        (["--model.use_peft", "true"], "set lora.enabled"),
        (["--model.dtpye", "float32"], "unknown key 'dtpye'. Did you mean 'dtype'"),
        (["--model.dtype", "float64"], "dtype must be one of auto, bfloat16, float16, float32"),
        (["--model.bnb_4bit_quant_type", "int4"], "bnb_4bit_quant_type must be one of fp4, nf4"),
        (["--model.model_name_or_path", "' '"], "model_name_or_path must name a model"),
    ],
)
def test_model_keys_are_model_config_loading_fields(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(None, override)


def test_lora_goes_straight_into_peft():
    recipe = load_recipe(
        None,
        [
            "--lora.enabled",
            "true",
            "--lora.target_modules",
            '["down_proj"]',
            "--lora.layers_to_transform",
            "[1]",
            "--lora.use_dora",
            "true",
        ],
    )
    config = lora_config(recipe.lora)
    assert config.target_modules == {"down_proj"} and config.layers_to_transform == [1] and config.use_dora
    assert (config.r, config.lora_alpha, config.task_type) == (16, 32, "CAUSAL_LM")  # the project's defaults
    assert lora_config(load_recipe(None, []).lora) is None  # LoRA off
    everything = load_recipe(None, ["--lora.enabled", "true", "--lora.target_modules", f"[{ALL_LINEAR}]"])
    assert lora_config(everything.lora).target_modules == ALL_LINEAR  # peft reads it only as a string
    # scoped fields (the train scope's) take the place of the recipe's
    assert lora_config(recipe.lora, layers_to_transform=[0]).layers_to_transform == [0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            ["--lora.layer_to_transform", "[1]"],
            "unknown key 'layer_to_transform'. Did you mean 'layers_to_transform'",
        ),
        (["--lora.enable", "true"], "unknown key 'enable'. Did you mean 'enabled'"),
        (["--lora.alpha", "8"], "'alpha': it is now 'lora_alpha'"),
        (["--lora.dropout", "0.1"], "'dropout': it is now 'lora_dropout'"),
        (["--lora.options", "{use_dora: true}"], "'options': it is gone"),
        (["--lora.task_type", "SEQ_CLS"], "'task_type': it is always CAUSAL_LM"),
        (["--lora.lora_dropout", "1.5"], r"lora_dropout must be in \[0, 1\)"),
        (["--lora.target_modules", "q_proj"], "target_modules must be a non-empty list"),
    ],
)
def test_lora_keys_are_loraconfig_fields(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(None, override)
