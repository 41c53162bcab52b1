"""run_stage1: settings are checked before any weight loads; a full run writes a loadable checkpoint."""

from __future__ import annotations

import pytest
import transformers

from edit_grpo_trl.editors.arch import EditorConfigError
from edit_grpo_trl.editors.checkpoint import CheckpointError, load_edited
from edit_grpo_trl.editors.stage1 import run_stage1


@pytest.fixture
def no_weight_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the settings were checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


@pytest.mark.slow
def test_bad_settings_fail_before_loading_weights(tiny_world, tmp_path, no_weight_loading):
    cases = tiny_world.world.edit_cases(num_cases=2, seed=0)
    layers = tiny_world.model.config.num_hidden_layers
    with pytest.raises(
        EditorConfigError, match=rf"layer 40 is past the model: Qwen3 has {layers} layers \(0-{layers - 1}\)"
    ):
        run_stage1(tiny_world.path, cases, "rome", overrides={"layers": [40]}, output_dir=tmp_path / "out")
    with pytest.raises(EditorConfigError, match=r"expected 'model.layers.\{\}.mlp.down_proj'"):
        run_stage1(
            tiny_world.path,
            cases,
            "ft",
            overrides={"rewrite_module_tmp": "model.layers.{}.mlp.up_proj"},
            output_dir=tmp_path / "out",
        )
    with pytest.raises(EditorConfigError, match="rome has no batch mode"):
        run_stage1(tiny_world.path, cases, "rome", mode="batch", output_dir=tmp_path / "out")
    with pytest.raises(CheckpointError, match="source model's folder"):
        run_stage1(tiny_world.path, cases, "ft", output_dir=tiny_world.path)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_run_stage1_writes_an_edited_checkpoint(tiny_world, tmp_path):
    cases = tiny_world.world.edit_cases(num_cases=2, seed=0)
    result = run_stage1(
        tiny_world.path, cases, "ft", output_dir=tmp_path / "edited", device="cpu", show_progress=False
    )
    checkpoint = load_edited(result["output_dir"])
    assert checkpoint.manifest.case_ids == [case.case_id for case in cases]
    assert checkpoint.manifest.editor == "ft" and checkpoint.manifest.source_model == str(tiny_world.path)
    assert result["hparams_source"].endswith("ft/world-tiny.yaml")
    model, _ = checkpoint.load()
    layer = checkpoint.manifest.layers[0]
    edited = model.model.layers[layer].mlp.down_proj.weight
    original = tiny_world.model.model.layers[layer].mlp.down_proj.weight
    assert float((edited - original).norm()) == pytest.approx(result["update_norms"][str(layer)], rel=1e-3)
    with pytest.raises(CheckpointError, match="not empty"):
        run_stage1(tiny_world.path, cases, "ft", output_dir=tmp_path / "edited", device="cpu")


@pytest.mark.slow
def test_the_edited_checkpoint_keeps_the_source_models_dtype(tiny_world, tmp_path):
    import copy
    import shutil

    import torch

    source = tmp_path / "bf16"
    shutil.copytree(tiny_world.path, source)
    # the same model, saved in bfloat16 (a copy: the session's model stays as it is)
    copy.deepcopy(tiny_world.model).to(torch.bfloat16).save_pretrained(source)
    cases = tiny_world.world.edit_cases(num_cases=1, seed=0)
    result = run_stage1(
        source, cases, "ft", output_dir=tmp_path / "edited", device="cpu", show_progress=False
    )
    model, _ = load_edited(result["output_dir"]).load()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
