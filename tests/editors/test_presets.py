"""Packaged hparams presets validate against each real model's public config, offline (JSON fixtures)."""

import json
from pathlib import Path

import pytest
from transformers import AutoConfig

from edit_grpo_trl.editors.arch import EditorConfigError
from edit_grpo_trl.editors.presets import default_preset, load_hparams_file, preset_names, resolve_hparams
from edit_grpo_trl.editors.registry import editor_names

FIXTURES = Path(__file__).parent / "fixtures"
REAL_MODELS = ("qwen3-8b", "llama3-8b", "qwen2.5-7b", "gpt2-xl")


def config_of(model: str):
    values = json.loads((FIXTURES / f"{model}.json").read_text())
    values.pop("_source")
    return AutoConfig.for_model(values.pop("model_type"), **values)


@pytest.mark.parametrize("editor", ["rome", "memit", "ft", "alphaedit", "wise"])
@pytest.mark.parametrize("model", REAL_MODELS)
def test_every_real_model_preset_validates_against_its_config(editor, model):
    config = config_of(model)
    loaded = resolve_hparams(editor, config, model)
    assert loaded.editor == editor
    assert max(loaded.hparams.layers) < config.num_hidden_layers
    # The config alone picks the same preset.
    assert default_preset(editor, config) == model


def test_presets_exist_for_every_editor_and_model():
    for editor in editor_names():
        assert set(REAL_MODELS) | {"world-tiny", "world-small"} <= set(preset_names(editor)), editor


def test_easyedit_defaults_are_kept():
    assert resolve_hparams("rome", config_of("qwen3-8b"), "qwen3-8b").hparams.layers == [5]
    assert resolve_hparams("rome", config_of("qwen3-8b"), "qwen3-8b").hparams.mom2_adjustment is False
    assert resolve_hparams("memit", config_of("llama3-8b"), "llama3-8b").hparams.layers == [4, 5, 6, 7, 8]
    assert resolve_hparams("ft", config_of("llama3-8b"), "llama3-8b").hparams.layers == [21]
    assert resolve_hparams("ft", config_of("qwen2.5-7b"), "qwen2.5-7b").hparams.layers == [27]


def test_override_past_the_model_fails_with_the_valid_range():
    with pytest.raises(EditorConfigError, match=r"layer 40 is past the model: Qwen3 has 36 layers \(0-35\)"):
        resolve_hparams("rome", config_of("qwen3-8b"), "qwen3-8b", overrides={"layers": [40]})
    with pytest.raises(EditorConfigError, match=r"v_loss_layer: layer 47 is past the model: Llama has 32"):
        resolve_hparams("memit", config_of("llama3-8b"), "llama3-8b", overrides={"v_loss_layer": 47})


def test_preset_for_another_model_is_refused():
    with pytest.raises(EditorConfigError, match="written for model_type='qwen3'"):
        resolve_hparams("memit", config_of("llama3-8b"), "qwen3-8b")


def test_unknown_field_and_bad_module_are_named(tmp_path):
    with pytest.raises(EditorConfigError, match=r"unknown RomeHParams field\(s\) \['layerz'\]"):
        resolve_hparams("rome", config_of("qwen3-8b"), "qwen3-8b", overrides={"layerz": [1]})
    path = tmp_path / "bad.yaml"
    path.write_text(
        "editor: rome\nhparams:\n  layers: [3]\n  rewrite_module_tmp: model.layers.{}.mlp.c_proj\n"
    )
    with pytest.raises(EditorConfigError, match=r"expected 'model.layers.\{\}.mlp.down_proj'"):
        resolve_hparams("rome", config_of("qwen3-8b"), path)
    with pytest.raises(EditorConfigError, match="unknown editor 'grace'"):
        resolve_hparams("grace", config_of("qwen3-8b"))


def test_easyedit_flat_file_is_read(tmp_path):
    path = tmp_path / "rome.yaml"
    path.write_text(
        'alg_name: "ROME"\nmodel_name: "./hugging_cache/Qwen2.5-7B"\ndevice: 0\nlayers: [5]\n'
        "fact_token: subject_last\nv_num_grad_steps: 25\nv_lr: 5e-1\nv_loss_layer: 27\nv_weight_decay: 1e-3\n"
        "clamp_norm_factor: 4\nkl_factor: 0.0625\nmom2_adjustment: false\n"
        'rewrite_module_tmp: "model.layers.{}.mlp.down_proj"\nln_f_module: "model.norm"\n'
    )
    loaded = load_hparams_file(path)
    assert loaded.editor == "rome" and loaded.hparams.v_loss_layer == 27 and loaded.hparams.v_lr == 0.5


EASYEDIT_FT = """alg_name: "FT"
model_name: "./hugging_cache/llama-3-8b"
device: 0
layers: [21]
num_steps: 25
batch_size: 1
max_length: 40
lr: 5e-4
weight_decay: 0
kl_factor: 0
norm_constraint: false
objective_optimization: "target_new"
rewrite_module_tmp: "model.layers.{}.mlp.down_proj.weight"
layer_module_tmp: "model.layers.{}"
mlp_module_tmp: "model.layers.{}.mlp"
attn_module_tmp: "model.layers.{}.self_attn"
ln_f_module: "model.norm"
lm_head_module: "lm_head"
model_parallel: false
"""

EASYEDIT_ALPHAEDIT = """alg_name: "AlphaEdit"
model_name: "./hugging_cache/llama-3-8b-instruct"
stats_dir: "./data/stats"
P_loc: "./null_space_project.pt"
device: 0
layers: [4, 5, 6, 7, 8]
clamp_norm_factor: 0.75
layer_selection: "all"
fact_token: "subject_last"
v_num_grad_steps: 25
v_lr: 1e-1
v_loss_layer: 31
v_weight_decay: 0.5
kl_factor: 0.0625
mom2_adjustment: true
mom2_update_weight: 15000
rewrite_module_tmp: "model.layers.{}.mlp.down_proj"
layer_module_tmp: "model.layers.{}"
mlp_module_tmp: "model.layers.{}.mlp"
attn_module_tmp: "model.layers.{}.self_attn"
ln_f_module: "model.norm"
lm_head_module: "lm_head"
mom2_dataset: "wikipedia"
mom2_n_samples: 100000
mom2_dtype: "float32"
nullspace_threshold: 2e-2
L2: 1
"""


def write(tmp_path, text, **changes):
    lines = [line for line in text.splitlines() if line.split(":")[0] not in changes]
    path = tmp_path / "easyedit.yaml"
    path.write_text("\n".join(lines + [f"{key}: {value}" for key, value in changes.items()]) + "\n")
    return path


def test_easyedit_files_are_read_whole(tmp_path):
    ft = resolve_hparams("ft", config_of("llama3-8b"), write(tmp_path, EASYEDIT_FT))
    assert ft.hparams.layers == [21] and ft.hparams.lr == 5e-4
    alpha = resolve_hparams("alphaedit", config_of("llama3-8b"), write(tmp_path, EASYEDIT_ALPHAEDIT))
    assert alpha.hparams.L2 == 1 and alpha.hparams.layers == [4, 5, 6, 7, 8]


@pytest.mark.parametrize(
    ("text", "key", "value", "says"),
    [
        (EASYEDIT_FT, "objective_optimization", '"prompt_last"', "FT-L"),
        (EASYEDIT_FT, "batch_size", "4", "editor.mode"),
        (EASYEDIT_FT, "fp16", "true", "float32"),
        (EASYEDIT_FT, "model_parallel", "true", "one device"),
        (EASYEDIT_ALPHAEDIT, "mom2_adjustment", "false", "second moment"),
        (EASYEDIT_ALPHAEDIT, "layer_selection", '"random"', "random"),
    ],
)
def test_easyedit_keys_that_would_change_the_edit_are_refused_by_name(tmp_path, text, key, value, says):
    with pytest.raises(EditorConfigError, match=rf"{key}: .* is not supported: .*{says}"):
        load_hparams_file(write(tmp_path, text, **{key: value}))


def test_easyedit_module_templates_are_checked_against_the_model(tmp_path):
    path = write(tmp_path, EASYEDIT_FT, attn_module_tmp='"transformer.h.{}.attn"')
    with pytest.raises(EditorConfigError, match="attn_module_tmp: module 'transformer.h.{}.attn'"):
        resolve_hparams("ft", config_of("llama3-8b"), path)
