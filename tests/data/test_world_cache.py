"""The pretrained-world cache: complete folders only, leftovers ignored, one build under concurrency.

These build the ``micro`` world (a few seconds of pretraining), not the tiny one.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from edit_grpo_trl.data.world import KnowledgeWorld, ensure_world_model
from edit_grpo_trl.data.world.cache import REQUIRED_FILES, is_complete, world_folder_name


def test_a_folder_without_every_file_is_incomplete(tmp_path):
    assert not is_complete(tmp_path / "absent")
    for name in REQUIRED_FILES[:-1]:
        (tmp_path / name).write_text("{}")
    assert not is_complete(tmp_path)
    (tmp_path / REQUIRED_FILES[-1]).write_text("{}")
    assert is_complete(tmp_path)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="sizes: micro, tiny, small, medium"):
        ensure_world_model("huge", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="non-negative integer"):
        ensure_world_model("micro", seed=-1, cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written for a refused call


def test_half_written_folders_and_leftovers_are_never_used(tmp_path):
    final = tmp_path / "worlds" / world_folder_name("micro", 0)
    final.mkdir(parents=True)
    (final / "config.json").write_text("{not json")  # an interrupted older build
    leftover = final.with_name(f"{final.name}.tmp-999999")
    leftover.mkdir()
    (leftover / "config.json").write_text("{}")

    path = ensure_world_model("micro", seed=0, cache_dir=tmp_path / "worlds")

    assert path == final and is_complete(path)
    assert not leftover.exists()
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    world = KnowledgeWorld.load(path)
    assert world == KnowledgeWorld.generate("micro", 0)
    assert model.config.vocab_size == len(tokenizer)
    report = json.loads((path / "pretrain_report.json").read_text())
    assert report["parameters"] == sum(p.numel() for p in model.parameters())
    assert set(report["recall"]) >= {"anchor", "heldout", "alias", "two_hop", "chat"}
    with torch.no_grad():  # the saved weights are the trained ones, in float32
        assert model.model.embed_tokens.weight.dtype == torch.float32
    stamp = (path / "pretrain_report.json").stat().st_mtime_ns
    assert ensure_world_model("micro", seed=0, cache_dir=tmp_path / "worlds") == path
    assert (path / "pretrain_report.json").stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_concurrent_processes_build_once(tmp_path):
    code = (
        "import sys, logging; logging.basicConfig(level=logging.INFO);"
        "from edit_grpo_trl.data.world import ensure_world_model;"
        "print(ensure_world_model('micro', 1, cache_dir=sys.argv[1]))"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    paths = {stdout.strip().splitlines()[-1] for stdout, _ in outputs}
    assert paths == {str(tmp_path / world_folder_name("micro", 1))}
    builds = sum(stderr.count("pretraining knowledge world micro") for _, stderr in outputs)
    assert builds == 1
    report = json.loads((tmp_path / world_folder_name("micro", 1) / "pretrain_report.json").read_text())
    assert report["built_by_pid"] in {process.pid for process in processes}
    assert not list(tmp_path.glob("*.tmp-*"))
