"""Architecture map: layer/module validation before any work, and GPT-2's transposed Conv1D weights."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Qwen3Config

from edit_grpo_trl.editors.arch import (
    EditorConfigError,
    add_to_down_proj,
    architecture_for,
    down_proj_weight,
    num_layers,
    validate_layers,
    validate_template,
)


def test_layer_past_the_model_names_the_valid_range():
    config = Qwen3Config(num_hidden_layers=36)
    with pytest.raises(EditorConfigError, match=r"layer 40 is past the model: Qwen3 has 36 layers \(0-35\)"):
        validate_layers(config, [5, 40])
    with pytest.raises(EditorConfigError, match=r"negative: Qwen3 has 36 layers \(0-35\)"):
        validate_layers(config, [-1])
    assert validate_layers(config, [0, 35]) == [0, 35]


def test_module_template_must_match_the_family():
    assert validate_template(Qwen3Config(), "rewrite_module_tmp", "model.layers.{}.mlp.down_proj.weight")
    with pytest.raises(EditorConfigError, match=r"expected 'transformer.h.\{\}.mlp.c_proj'"):
        validate_template(GPT2Config(), "rewrite_module_tmp", "model.layers.{}.mlp.down_proj")
    with pytest.raises(EditorConfigError, match="not supported"):
        architecture_for(type("Config", (), {"model_type": "bert"})())


def test_gpt2_conv1d_weight_is_seen_as_out_by_in():
    config = GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=32)
    assert num_layers(config) == 2
    model = GPT2LMHeadModel(config).eval()
    arch = architecture_for(config)
    weight = down_proj_weight(model, arch, 1)
    assert weight.shape == (16, 64)  # (out = hidden, in = 4 * hidden)
    key = torch.randn(64)
    module = model.get_submodule("transformer.h.1.mlp.c_proj")
    delta = torch.outer(torch.randn(16), torch.randn(64))
    before = module(key[None]).detach()
    add_to_down_proj(model, arch, 1, delta)
    after = module(key[None]).detach()
    assert torch.allclose(after - before, (delta @ key)[None], atol=1e-5)
    with pytest.raises(EditorConfigError, match="does not fit"):
        add_to_down_proj(model, arch, 1, delta.T)
