"""The pipeline end to end on the tiny knowledge world: every stage's outputs, the report, resume."""

import json
import shutil
import time
from pathlib import Path

import pytest

from edit_grpo_trl.cli import main
from edit_grpo_trl.pipeline import STAGES, WANDB_RUN_FILE, Pipeline, resolve_model_path, run_pipeline
from edit_grpo_trl.recipe import RecipeError, load_recipe

pytestmark = pytest.mark.slow

RECIPE = "recipes/world-tiny/rome.yaml"
QUICK = [
    "--data.num_cases",
    "4",
    "--training.max_steps",
    "2",
    "--training.save_steps",
    "2",
    "--evaluation.max_new_tokens",
    "4",
]


def recipe(tmp_path, *extra):
    return load_recipe(RECIPE, [*QUICK, *extra, "--output_dir", str(tmp_path / "run")])


def test_every_stage_writes_its_outputs_and_a_rerun_skips_them(tmp_path, tiny_world, monkeypatch):
    report = run_pipeline(recipe(tmp_path))
    run = tmp_path / "run"
    for stage in STAGES:
        assert (run / "stages" / f"{stage}.done.json").is_file(), stage
    for path in (
        "cases.jsonl",
        "stage1/model/edit_manifest.json",
        "agt_dataset",
        "stage2/final/config.json",
        "report/report.md",
        "report/report.png",
        "eval/pre_edit/baseline.json",
        "eval/post_refinement/probes.jsonl",
        "eval/post_refinement/results.json",
        "stage2/final/README.md",
        "stage2/final/edit_manifest.json",
        "stage2/final/recipe.json",
        "stage2/final/report.md",
    ):
        assert (run / path).exists(), path
    points = json.loads((run / "report" / "report.json").read_text())
    assert report == points and set(points) == {"pre_edit", "post_edit", "post_refinement"}
    metrics = set(points["pre_edit"])
    assert {
        "tf_reliability",
        "tf_generalization",
        "tf_portability",
        "tf_locality",
        "gen_em_reliability",
        "gen_em_generalization",
        "gen_em_locality",
        "fluency",
    } <= metrics
    assert all(set(values) == metrics for values in points.values())
    # the world's held-out templates are scored one by one, and again without the two ending with the anchor
    assert {
        "gen_em_generalization_beyond_anchor",
        "gen_em_generalization/paraphrase",
        "gen_em_generalization/question_anchor",
    } <= metrics
    # the paired test over cases compares post-edit and post-refinement on every case
    paired = json.loads((run / "report" / "report_paired.json").read_text())
    cases = len((run / "cases.jsonl").read_text().splitlines())
    assert (paired["before"], paired["after"]) == ("post_edit", "post_refinement")
    assert paired["tf_reliability"]["n"] == cases
    assert "## Paired over cases" in (run / "report" / "report.md").read_text()
    markers = {stage: (run / "stages" / f"{stage}.done.json").stat().st_mtime_ns for stage in STAGES}
    recipe_written = (run / "recipe.json").stat().st_mtime_ns
    run_pipeline(recipe(tmp_path))
    assert markers == {stage: (run / "stages" / f"{stage}.done.json").stat().st_mtime_ns for stage in STAGES}
    assert (
        run / "recipe.json"
    ).stat().st_mtime_ns == recipe_written  # every stage skipped: nothing rewritten
    # a forced pre-edit evaluation that asks differently (chat prompts) is its own reference, not the stale
    # baseline.json of the first run: the unedited model agrees with itself on every locality probe
    asked_in_chat = ["--data.prompt_style", "chat", "--evaluation.prompts", "data"]
    run_pipeline(recipe(tmp_path, *asked_in_chat), force={"pre_edit_eval"})
    redone = json.loads((run / "eval" / "pre_edit" / "metrics.json").read_text())
    assert redone["gen_em_locality"] == redone["tf_locality"] == 1.0
    # the opt-in push sends the refined folder, card included, to the named repository (a local stand-in)
    import huggingface_hub

    from .test_hub import LocalHub

    hub = LocalHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: hub)
    pushing = ["--training.push_to_hub", "true", "--training.hub_model_id", "me/refined"]
    run_pipeline(recipe(tmp_path, *pushing), force={"report"})
    assert (run / "stages" / "report.done.json").stat().st_mtime_ns != markers["report"]
    assert (tmp_path / "hub" / "me" / "refined" / "README.md").is_file()
    assert (tmp_path / "hub" / "me" / "refined" / "config.json").is_file()


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path, tiny_world):
    run_pipeline(recipe(tmp_path))  # trains 2 steps, checkpoint-2 saved
    run = tmp_path / "run"
    # As if killed after the checkpoint: the stage never finished.
    for stage in ("train", "post_refinement_eval", "report"):
        (run / "stages" / f"{stage}.done.json").unlink()
    shutil.rmtree(run / "stage2" / "final")
    run_pipeline(recipe(tmp_path, "--training.max_steps", "4"))
    marker = json.loads((run / "stages" / "train.done.json").read_text())
    assert marker["resumed_from"].endswith("checkpoint-2")
    assert marker["global_step"] == 4
    # The marker says how training really ran: no DeepSpeed here, full precision on the CPU.
    assert marker["deepspeed_zero_stage"] is None and marker["device"] == "cpu"
    assert marker["mixed_precision"] == "no"
    # --force train starts over: the checkpoints are gone, nothing is resumed
    run_pipeline(recipe(tmp_path, "--training.max_steps", "2"), force={"train"})
    marker = json.loads((run / "stages" / "train.done.json").read_text())
    assert marker["resumed_from"] is None and marker["global_step"] == 2
    assert not (run / "stage2" / "checkpoint-4").exists()


def test_bad_inputs_fail_clearly_and_overwrite_nothing(tmp_path, tiny_world, capsys):
    assert main(["pipeline", "--config", RECIPE, "--training.alignment_coeff", "0.1"]) == 2
    assert "Did you mean 'alignment_coef'" in capsys.readouterr().err
    missing = recipe(tmp_path, "--data.source", str(tmp_path / "absent.json"))
    with pytest.raises(RecipeError, match="nothing was started") as error:
        run_pipeline(missing)
    assert f"no data file or folder at {tmp_path / 'absent.json'}" in str(error.value)
    with pytest.raises(RecipeError, match="overlaps the source model's folder"):
        run_pipeline(load_recipe(RECIPE, ["--output_dir", str(tiny_world.path)]))
    assert (tiny_world.path / "pretrain_report.json").is_file()


def wandb_record(run_dir: Path, last_key: bytes, seconds: float = 30.0) -> bytes:
    """A W&B run's protobuf log, once it holds ``last_key`` (wandb's service may still be writing it)."""
    deadline = time.monotonic() + seconds
    while True:
        record = b"".join(path.read_bytes() for path in run_dir.glob("*.wandb"))
        if last_key in record or time.monotonic() > deadline:
            return record
        time.sleep(0.5)


def test_one_wandb_run_per_pipeline_holds_training_and_report(tmp_path, tiny_world, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dirs = []
    finish = Pipeline._finish_wandb

    def recording_finish(self, exit_code=0):
        if (
            self._wandb_run is not None
        ):  # wandb keeps global settings between runs: ask the run where it wrote
            run_dirs.append(Path(self._wandb_run.dir).parent)
        finish(self, exit_code)

    monkeypatch.setattr(Pipeline, "_finish_wandb", recording_finish)
    run_pipeline(recipe(tmp_path, "--wandb.project", "edit-grpo-test"))
    assert len(run_dirs) == 1
    record = wandb_record(run_dirs[0], b"report/table")
    assert b"train/reward" in record, "the trainer logged into a run of its own"
    assert b"report/table" in record and b"post_refinement/tf_reliability" in record
    run_id = json.loads((tmp_path / "run" / WANDB_RUN_FILE).read_text())["id"]
    assert run_dirs[0].name.endswith(run_id)
    run_pipeline(recipe(tmp_path, "--wandb.project", "edit-grpo-test"), force={"report"})
    assert len(run_dirs) == 2 and run_dirs[1].name.endswith(run_id)  # the rerun resumed the same W&B run


def test_keep_known_filters_the_whole_source_before_cutting(tmp_path, tiny_world):
    pipeline = Pipeline(recipe(tmp_path, "--data.keep_known", "true", "--data.num_cases", "3"))
    summary = pipeline.stage_cases()
    known = summary["known"]
    report = json.loads((tmp_path / "run" / "known_cases.json").read_text())
    # The first chunk (64 cases, or all of the world's fewer) held three known ones; three are kept.
    assert known["asked"] == report["cases"] == min(64, known["offered"])
    assert known["known"] == report["kept"] >= 3
    assert summary["cases"] == known["kept"] == 3 == len(pipeline.cases())
    kept_ids = [case.case_id for case in pipeline.cases()]
    assert all(report["relations"]) and len(set(kept_ids)) == 3


def test_seeds_of_one_condition_share_a_wandb_group(tmp_path, tiny_world, monkeypatch):
    import wandb

    calls = []

    class Run:
        id = "run-1"

    monkeypatch.setattr(wandb, "init", lambda **kwargs: calls.append(kwargs) or Run())
    pipeline = Pipeline(recipe(tmp_path, "--wandb.project", "p", "--wandb.group", "rome/pgaa"))
    pipeline.layout.root.mkdir(parents=True)
    pipeline.wandb_run()
    assert calls[0]["group"] == "rome/pgaa"


def test_a_world_model_is_named_by_size_not_by_folder(tmp_path):
    with pytest.raises(RecipeError, match="give the folder itself"):
        resolve_model_path(f"world:{tmp_path}")


@pytest.mark.parametrize("progress", [True, False])
def test_evaluation_progress_bars_follow_the_recipe(tmp_path, tiny_world, capfd, progress):
    pipeline = Pipeline(recipe(tmp_path, "--evaluation.progress", str(progress).lower()))
    pipeline.stage_cases()
    capfd.readouterr()
    pipeline.stage_evaluate("pre_edit", pipeline.base_model_path)
    assert ("evaluate: teacher-forced" in capfd.readouterr().err) is progress
