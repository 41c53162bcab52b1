"""Edited checkpoints: manifest round trip, atomic writes, refusals, outside-tool checkpoints."""

import json

import pytest
import torch

from edit_grpo_trl.editors.base import EditRecord
from edit_grpo_trl.editors.checkpoint import (
    MANIFEST_NAME,
    CheckpointError,
    EditManifest,
    load_edited,
    manifest_template,
    read_manifest,
    save_edited,
)


def _manifest(source) -> EditManifest:
    record = EditRecord(
        editor="rome",
        hparams={"layers": [1], "v_lr": 0.5},
        case_ids=["c1", "c2"],
        layers=[1],
        mode="sequential",
        update_norms={"1": 2.5},
        seconds=3.0,
    )
    return EditManifest.from_record(record, source_model=str(source))


def test_manifest_round_trips_and_model_reloads(small_qwen3, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "world.json").write_text("{}")
    manifest = _manifest(source)
    folder = save_edited(small_qwen3.model, small_qwen3.tokenizer, manifest, tmp_path / "edited", source)
    assert read_manifest(folder) == manifest
    checkpoint = load_edited(folder)
    assert checkpoint.manifest.case_ids == ["c1", "c2"] and checkpoint.manifest.update_norms == {"1": 2.5}
    assert (folder / "world.json").is_file()  # the world travels with the model
    model, tokenizer = checkpoint.load()
    weight = model.model.layers[1].mlp.down_proj.weight
    assert torch.equal(weight, small_qwen3.model.model.layers[1].mlp.down_proj.weight)
    assert (
        tokenizer("Kalo was born in")["input_ids"] == small_qwen3.tokenizer("Kalo was born in")["input_ids"]
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_interrupted_write_leaves_no_half_checkpoint(small_qwen3, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(small_qwen3.tokenizer, "save_pretrained", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_edited(
            small_qwen3.model, small_qwen3.tokenizer, _manifest(tmp_path / "src"), tmp_path / "edited"
        )
    assert list(tmp_path.iterdir()) == []  # neither the destination nor the temporary folder


def test_interrupted_overwrite_keeps_the_old_checkpoint(small_qwen3, tmp_path, monkeypatch):
    folder = save_edited(
        small_qwen3.model, small_qwen3.tokenizer, _manifest(tmp_path / "src"), tmp_path / "edited"
    )
    before = sorted(p.name for p in folder.iterdir())
    monkeypatch.setattr(
        small_qwen3.model, "save_pretrained", lambda *a, **k: (_ for _ in ()).throw(OSError("boom"))
    )
    with pytest.raises(OSError, match="boom"):
        save_edited(
            small_qwen3.model, small_qwen3.tokenizer, _manifest(tmp_path / "src"), folder, overwrite=True
        )
    assert sorted(p.name for p in folder.iterdir()) == before
    assert read_manifest(folder).editor == "rome"


def test_refuses_source_folder_and_non_empty_folder(small_qwen3, tmp_path):
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="source model folder"):
        save_edited(
            small_qwen3.model, small_qwen3.tokenizer, _manifest(source), source, source, overwrite=True
        )
    with pytest.raises(CheckpointError, match="source model folder"):
        save_edited(small_qwen3.model, small_qwen3.tokenizer, _manifest(source), source / "edited", source)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not empty; pass overwrite=True"):
        save_edited(small_qwen3.model, small_qwen3.tokenizer, _manifest(source), taken, source)
    assert (taken / "notes.txt").read_text() == "keep me"


def test_outside_tool_checkpoint_needs_a_valid_manifest(small_qwen3, tmp_path):
    folder = tmp_path / "easyedit_out"
    small_qwen3.model.save_pretrained(folder)
    small_qwen3.tokenizer.save_pretrained(folder)
    with pytest.raises(CheckpointError, match="no edit_manifest.json"):
        load_edited(folder)
    (folder / MANIFEST_NAME).write_text(json.dumps({"editor": "ROME", "layers": [5]}))
    with pytest.raises(CheckpointError, match=r"missing required field\(s\) \['source_model', 'case_ids'\]"):
        load_edited(folder)
    (folder / MANIFEST_NAME).write_text(
        json.dumps({"editor": "ROME", "source_model": "m", "case_ids": "c1", "layers": [5]})
    )
    with pytest.raises(CheckpointError, match="'case_ids' must be a list"):
        load_edited(folder)
    manifest_template(folder, editor="ROME", source_model="Qwen/Qwen3-8B", case_ids=["c1"], layers=[5])
    checkpoint = load_edited(folder)
    assert checkpoint.manifest.tool == "external" and checkpoint.manifest.layers == [5]
    assert "ROME from Qwen/Qwen3-8B" in str(checkpoint)
