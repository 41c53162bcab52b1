"""The pipeline: cases -> evaluate -> stage-1 edit -> evaluate -> AGT data -> Edit-GRPO -> evaluate -> report.

Every stage writes its outputs under the run folder and, last, a ``<stage>.done.json`` marker with its
timing. A rerun skips every stage whose marker exists (resume); ``force={"train"}`` redoes one. Training
itself resumes from its last checkpoint. Nothing a finished stage wrote is overwritten unless forced,
and the run folder may never be the source model's folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edit_grpo_trl.recipe import PipelineRecipe, RecipeError

logger = logging.getLogger(__name__)

STAGES = (
    "cases",
    "pre_edit_eval",
    "edit",
    "post_edit_eval",
    "agt_data",
    "train",
    "post_refinement_eval",
    "report",
)
WORLD_PREFIX = "world:"


@dataclass
class RunLayout:
    """Where each stage writes inside the run folder."""

    root: Path

    def marker(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.done.json"

    @property
    def cases(self) -> Path:
        return self.root / "cases.jsonl"

    @property
    def edited_model(self) -> Path:
        return self.root / "stage1" / "model"

    @property
    def agt_dataset(self) -> Path:
        return self.root / "agt_dataset"

    @property
    def training(self) -> Path:
        return self.root / "stage2"

    @property
    def refined_model(self) -> Path:
        return self.root / "stage2" / "final"

    def evaluation(self, point: str) -> Path:
        return self.root / "eval" / point

    @property
    def report(self) -> Path:
        return self.root / "report"


def resolve_model_path(name_or_path: str, device: str | None = None) -> str:
    """A Hub id or folder as given; ``world:<size>[:<seed>]`` becomes the pretrained world's folder."""
    if name_or_path.startswith(WORLD_PREFIX):
        from edit_grpo_trl.data.world import ensure_world_model

        size, _, seed = name_or_path[len(WORLD_PREFIX) :].partition(":")
        return str(ensure_world_model(size, seed=int(seed or 0), device=device))
    return name_or_path


def _device(recipe: PipelineRecipe) -> str:
    return recipe.model.device or ("cuda" if torch.cuda.is_available() else "cpu")


def load_model(path: str, recipe: PipelineRecipe):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, recipe.model.dtype) if recipe.model.dtype != "auto" else "auto"
    kwargs: dict[str, Any] = {"dtype": dtype}
    if recipe.model.attn_implementation:
        kwargs["attn_implementation"] = recipe.model.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs).to(_device(recipe))
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.eval()
    return model, tokenizer


def check_output_dir(run_dir: Path, model_path: str) -> None:
    """Refuse a run folder that is, or holds, the source model's folder."""
    source = Path(model_path)
    if not source.exists():
        return  # a Hub id
    run, source = run_dir.resolve(), source.resolve()
    if run == source or source.is_relative_to(run) or run.is_relative_to(source):
        raise RecipeError(
            f"output_dir {run_dir} overlaps the source model's folder {model_path}: pick a run folder outside it, "
            "so nothing the model came with can be overwritten"
        )


class Pipeline:
    """Runs the stages of one recipe in order, skipping finished ones."""

    def __init__(self, recipe: PipelineRecipe, force: set[str] | None = None) -> None:
        unknown = set(force or ()) - set(STAGES)
        if unknown:
            raise RecipeError(f"unknown stage(s) {sorted(unknown)}; stages are: {', '.join(STAGES)}")
        self.recipe = recipe
        self.force = set(force or ())
        self.layout = RunLayout(Path(recipe.output_dir))
        self.base_model_path = resolve_model_path(recipe.model.name_or_path, recipe.model.device)
        check_output_dir(self.layout.root, self.base_model_path)
        self._wandb_run = None

    # ---------------------------------------------------------------- bookkeeping
    def _done(self, stage: str) -> bool:
        return self.layout.marker(stage).is_file() and stage not in self.force

    def _run_stage(self, stage: str, body: Callable[[], dict[str, Any] | None]) -> None:
        if self._done(stage):
            logger.info("stage %s: done already (%s), skipping", stage, self.layout.marker(stage))
            return
        logger.info("stage %s: starting", stage)
        started = time.perf_counter()
        summary = body() or {}
        marker = self.layout.marker(stage)
        marker.parent.mkdir(parents=True, exist_ok=True)
        temporary = marker.with_suffix(".tmp")
        temporary.write_text(
            json.dumps({"stage": stage, "seconds": time.perf_counter() - started, **summary})
        )
        temporary.replace(marker)
        logger.info("stage %s: finished in %.1f s", stage, time.perf_counter() - started)

    def run(self) -> dict[str, Any]:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        (self.layout.root / "recipe.json").write_text(json.dumps(self.recipe.to_dict(), indent=2))
        self._run_stage("cases", self.stage_cases)
        self._run_stage("pre_edit_eval", lambda: self.stage_evaluate("pre_edit", self.base_model_path))
        self._run_stage("edit", self.stage_edit)
        self._run_stage("post_edit_eval", lambda: self.stage_evaluate("post_edit", self.edited_model_path))
        self._run_stage("agt_data", self.stage_agt_data)
        self._run_stage("train", self.stage_train)
        self._run_stage(
            "post_refinement_eval",
            lambda: self.stage_evaluate("post_refinement", str(self.layout.refined_model)),
        )
        self._run_stage("report", self.stage_report)
        return json.loads((self.layout.report / "report.json").read_text())

    # ---------------------------------------------------------------- stages
    def cases(self):
        from edit_grpo_trl.data.cases import load_cases

        return load_cases(self.layout.cases)

    def stage_cases(self) -> dict[str, Any]:
        from edit_grpo_trl.data.cases import save_cases
        from edit_grpo_trl.data.formats import load_edit_cases

        data = self.recipe.data
        cases = list(
            load_edit_cases(
                data.source,
                format=data.format,
                split=data.split,
                limit=data.num_cases,
                skip_invalid=data.skip_invalid,
            )
        )
        save_cases(cases, self.layout.cases)
        return {"cases": len(cases)}

    @property
    def edited_model_path(self) -> str:
        editor = self.recipe.editor
        if editor.name == "none":
            return self.base_model_path
        if editor.name == "external":
            return str(editor.checkpoint)
        return str(self.layout.edited_model)

    def stage_edit(self) -> dict[str, Any]:
        editor = self.recipe.editor
        if editor.name == "none":
            return {"editor": "none"}
        if editor.name == "external":
            from edit_grpo_trl.editors.checkpoint import load_edited

            if not editor.checkpoint:
                raise RecipeError(
                    "editor.name is 'external' but editor.checkpoint names no edited checkpoint"
                )
            manifest = load_edited(editor.checkpoint)
            return {"editor": "external", "checkpoint": editor.checkpoint, "manifest": str(manifest)}
        from edit_grpo_trl.editors.stage1 import run_stage1

        if self.layout.edited_model.exists() and "edit" in self.force:
            shutil.rmtree(self.layout.edited_model)
        result = run_stage1(
            model_path=self.base_model_path,
            cases=self.cases(),
            editor=editor.name,
            hparams=editor.hparams,
            overrides=editor.overrides,
            mode=editor.mode,
            output_dir=self.layout.edited_model,
            device=_device(self.recipe),
        )
        return {"editor": editor.name, "result": result if isinstance(result, dict) else str(result)}

    def stage_evaluate(self, point: str, model_path: str) -> dict[str, Any]:
        from edit_grpo_trl.evaluation.evaluate import EvalConfig, evaluate_cases

        evaluation = self.recipe.evaluation
        model, tokenizer = load_model(model_path, self.recipe)
        out = self.layout.evaluation(point)
        out.mkdir(parents=True, exist_ok=True)
        baseline = self._baseline()
        result = evaluate_cases(
            model,
            tokenizer,
            self.cases(),
            EvalConfig(
                batch_size=evaluation.batch_size,
                max_new_tokens=evaluation.max_new_tokens,
                teacher_forced=evaluation.teacher_forced,
                generation=evaluation.generation,
                fluency=evaluation.fluency,
            ),
            baseline=baseline,
        )
        result.save(out)
        if point == "pre_edit":
            result.baseline.save(self.layout.evaluation("pre_edit") / "baseline.json")
        return {"point": point, "metrics": result.metrics}

    def _baseline(self):
        from edit_grpo_trl.evaluation.evaluate import EvalBaseline

        path = self.layout.evaluation("pre_edit") / "baseline.json"
        return EvalBaseline.load(path) if path.is_file() else None

    def stage_agt_data(self) -> dict[str, Any]:
        import datasets

        from edit_grpo_trl.data.agt import AGTDataConfig, agt_features, build_agt_records

        data = self.recipe.data
        config = AGTDataConfig(
            num_generalization=data.num_generalization,
            num_locality=data.num_locality,
            prompt_style=data.prompt_style,
            locality_answers=data.locality_answers,
            seed=data.seed,
        )
        model = tokenizer = None
        if data.locality_answers == "model" or data.prompt_style == "chat":
            model, tokenizer = load_model(self.base_model_path, self.recipe)  # the PRE-edit model
        records = build_agt_records(self.cases(), config, tokenizer=tokenizer, model=model)
        dataset = datasets.Dataset.from_list(records.rows, features=agt_features(data.prompt_style))
        if self.layout.agt_dataset.exists():
            shutil.rmtree(self.layout.agt_dataset)
        dataset.save_to_disk(str(self.layout.agt_dataset))
        return {"rows": len(dataset), "report": vars(records.report)}

    def stage_train(self) -> dict[str, Any]:
        from edit_grpo_trl.training import run_training

        return run_training(self.recipe, self.edited_model_path, self.layout)

    def stage_report(self) -> dict[str, Any]:
        from edit_grpo_trl.evaluation.report import write_report

        points = {}
        for point in ("pre_edit", "post_edit", "post_refinement"):
            path = self.layout.evaluation(point) / "metrics.json"
            points[point] = json.loads(path.read_text())
        table = write_report(points, self.layout.report, overwrite=True)
        if self.recipe.wandb.project:
            self._log_report_to_wandb(points)
        print(table)
        print(f"\nreport: {self.layout.report / 'report.md'}")
        return {"report": str(self.layout.report)}

    def _log_report_to_wandb(self, points: dict[str, dict[str, float]]) -> None:
        import wandb

        from edit_grpo_trl.evaluation.report import log_report_to_wandb

        settings = self.recipe.wandb
        run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            name=f"{settings.run_name or self.layout.root.name}-report",
            tags=list(settings.tags),
            config={"stage": "report", **self.recipe.to_dict()},
            dir=str(self.layout.root),
        )
        log_report_to_wandb(run, points, self.layout.report)
        run.finish()


def run_pipeline(recipe: PipelineRecipe, force: set[str] | None = None) -> dict[str, Any]:
    return Pipeline(recipe, force).run()
