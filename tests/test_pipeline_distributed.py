"""The pipeline under a two-process launch (torchrun, CPU, gloo): stage 1, the evaluations and the report run
once, on the main process, while training runs on both; a stage that fails on the main process stops both."""

import json
import subprocess
from pathlib import Path

import pytest

from edit_grpo_trl.distributed import whole_model_loading
from edit_grpo_trl.pipeline import STAGES

from .torchrun import torchrun

ROOT = Path(__file__).parents[1]
RECIPE = str(ROOT / "recipes" / "world-tiny" / "rome.yaml")
# 2 cases of 5 prompts x G=4: one generation batch (2 processes x 10) is one whole case, split over the ranks.
QUICK = [
    "--data.num_cases",
    "2",
    "--training.per_device_train_batch_size",
    "10",
    "--training.steps_per_generation",
    "1",
    "--training.max_steps",
    "2",
    "--training.save_steps",
    "100",  # no checkpoint: saving is not what this test is about
    "--evaluation.max_new_tokens",
    "4",
]


def launch_pipeline(*arguments: str) -> subprocess.CompletedProcess:
    env = {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT / "src"),
        "EDIT_GRPO_STAGE_TIMEOUT": "900",  # a hung test fails in minutes, not a day
        "WANDB_MODE": "disabled",
    }
    return torchrun(["-m", "edit_grpo_trl.cli", "pipeline", *arguments], env, timeout=1200, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.distributed
def test_stage_one_runs_once_on_the_main_process_and_training_on_both(tmp_path, tiny_world):
    run = tmp_path / "run"
    result = launch_pipeline("--config", RECIPE, "--output-dir", str(run), *QUICK)
    assert result.returncode == 0, result.stderr[-6000:]
    log = result.stdout + result.stderr
    for stage in STAGES:  # every marker written, each main-process stage started exactly once
        assert (run / "stages" / f"{stage}.done.json").is_file(), stage
        if stage != "train":
            assert log.count(f"stage {stage}: starting") == 1, stage
    assert [path.name for path in (run / "stage1").iterdir()] == ["model"]  # one stage-1 checkpoint
    assert (run / "stage1" / "model" / "edit_manifest.json").is_file()
    assert sorted(path.name for path in (run / "stages").iterdir()) == sorted(
        f"{s}.done.json" for s in STAGES
    )
    train = json.loads((run / "stages" / "train.done.json").read_text())
    assert train["processes"] == 2 and train["global_step"] == 2
    assert (run / "stage2" / "final" / "config.json").is_file()
    assert (run / "report" / "report.md").is_file()
    assert log.count("EasyEdit's metrics (teacher-forced") == 1  # one report (its headline), printed once


@pytest.mark.distributed
def test_a_stage_that_fails_on_the_main_process_stops_every_process(tmp_path):
    # The checks before any stage fail on the main process (no such model, no such data file): both are named.
    result = launch_pipeline(
        "--config",
        RECIPE,
        "--output-dir",
        str(tmp_path / "run"),
        "--model.model_name_or_path",
        "absent-org/absent-model",
        "--data.source",
        str(tmp_path / "absent.json"),
    )
    assert result.returncode != 0
    assert "absent.json" in result.stderr and "absent-org/absent-model" in result.stderr
    assert "checking the recipe failed on the main process" in result.stderr  # the other rank says why
    assert not (tmp_path / "run" / "stages" / "cases.done.json").exists()


def test_models_load_whole_inside_a_main_process_stage_after_zero3_training():
    pytest.importorskip("deepspeed")
    from transformers.integrations.deepspeed import (
        HfDeepSpeedConfig,
        is_deepspeed_zero3_enabled,
        unset_hf_deepspeed_config,
    )

    config = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    assert config.is_zero3()  # registered globally, through a weak reference this name keeps alive
    try:
        assert is_deepspeed_zero3_enabled()  # what TrainingArguments leaves behind under ZeRO-3
        with whole_model_loading():
            assert not is_deepspeed_zero3_enabled()
        assert is_deepspeed_zero3_enabled()  # restored for whatever trains next
    finally:
        unset_hf_deepspeed_config()
    with whole_model_loading():  # nothing registered: a no-op
        assert not is_deepspeed_zero3_enabled()
