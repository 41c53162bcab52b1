"""The pipeline: cases -> evaluate -> stage-1 edit -> evaluate -> AGT data -> Edit-GRPO -> evaluate -> report.

Before any stage runs, :func:`edit_grpo_trl.preflight.check_run` resolves and validates every setting the
stages will need (editor layers, alignment module, training config, LoRA targets, data, training-prompt
sources), so a mistake costs seconds. Every stage writes its outputs under the run folder and, last, a
``<stage>.done.json`` marker with its timing. A rerun skips every stage whose marker exists (resume); ``force={"train"}`` redoes one. Training
itself resumes from its last checkpoint. Nothing a finished stage wrote is overwritten unless forced,
and the run folder may never be the source model's folder.

Under a multi-process launch (``accelerate launch`` or ``torchrun``) every process runs the pipeline, but
only the ``train`` stage runs on all of them. The other stages (cases, stage-1 edit, the three evaluations,
AGT data, report) run once, on the main process, while the others wait for it
(:mod:`edit_grpo_trl.distributed`); markers, files and the W&B run come from the main process only. The
run folder must be on a file system every process can read.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from edit_grpo_trl.distributed import (  # noqa: F401  (MainProcessStageError: also importable from here)
    MainProcessStageError,
    Processes,
    whole_model_loading,
)
from edit_grpo_trl.recipe import PipelineRecipe, RecipeError
from edit_grpo_trl.stages import EVERY_PROCESS_STAGES, STAGES, RunLayout

logger = logging.getLogger(__name__)

WANDB_RUN_FILE = "wandb_run.json"


def _release_memory() -> None:
    """Hand the models a stage loaded back to the device, so the next stage (training) starts with it free."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def resolve_model_path(name_or_path: str, device: str | None = None) -> str:
    """A Hub id or folder as given; ``world:<size>[:<seed>]`` becomes the pretrained world's folder, and a
    packaged model's Hub id (SmolLM2-135M-Instruct) its converted folder when the Hub is out of reach.

    ``world:`` names follow :func:`~edit_grpo_trl.data.formats.parse_world_spec`; ``world:<folder>`` is
    refused here: a model that is already a folder is named by the folder itself."""
    from edit_grpo_trl.data.formats import WORLD_PREFIX, parse_world_spec

    if name_or_path.startswith(WORLD_PREFIX):
        from edit_grpo_trl.world import ensure_world_model

        spec = parse_world_spec(name_or_path)
        if spec.folder is not None:
            raise RecipeError(
                f"model.model_name_or_path {name_or_path!r}: a world model is named world:<size>[:<seed>]; "
                f"for a world model folder, give the folder itself: {str(spec.folder)!r}"
            )
        return str(ensure_world_model(spec.size, seed=spec.seed, device=device))
    from edit_grpo_trl.models import resolve_hub_fallback

    return resolve_hub_fallback(name_or_path)


def _device(recipe: PipelineRecipe) -> str:
    return recipe.model.device or ("cuda" if torch.cuda.is_available() else "cpu")


def load_model(path: str, recipe: PipelineRecipe):
    from edit_grpo_trl.loading import load_causal_lm

    return load_causal_lm(path, recipe.model, _device(recipe))


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
        if not self._done("train"):
            from edit_grpo_trl.stage2.training import require_vllm

            require_vllm(recipe.training)  # now, not after stage 1 and two evaluations
        self.processes = Processes(
            ddp_timeout_s=float(recipe.training.get("ddp_timeout", 1800)),
            cpu=bool(recipe.training.get("use_cpu", not torch.cuda.is_available())),
        )
        # A world model is pretrained (or found) once, by the main process; the others use its path.
        self.base_model_path = self.processes.on_main("resolving the model", self._resolve_model)
        self._wandb_run = None
        # Every setting the stages will need, checked now: a mistake costs seconds, not a stage-1 run.
        self.preflight = self.processes.on_main("checking the recipe", self._preflight)

    def _preflight(self):
        from edit_grpo_trl.preflight import check_run

        return check_run(self.recipe, self.base_model_path, self.layout, self._cases_for_checks, self._done)

    def _cases_for_checks(self):
        return self.cases() if self._done("cases") else self._load_source_cases()

    def _resolve_model(self) -> str:
        path = resolve_model_path(self.recipe.model.model_name_or_path, self.recipe.model.device)
        check_output_dir(self.layout.root, path)
        return path

    # ---------------------------------------------------------------- bookkeeping
    def _done(self, stage: str) -> bool:
        return self.layout.marker(stage).is_file() and stage not in self.force

    def _run_stage(self, stage: str, body: Callable[[], dict[str, Any] | None]) -> None:
        """One stage on this process: skip it if done, else run it and write its marker."""
        if self._done_or_log(stage):
            return
        logger.info("stage %s: starting", stage)
        started = time.perf_counter()
        with whole_model_loading():
            summary = body() or {}
        _release_memory()
        self._write_marker(stage, started, summary)

    def _run_stage_everywhere(self, stage: str, body: Callable[[], dict[str, Any] | None]) -> None:
        """A stage every process runs (training); the main process decides whether to skip it and writes
        the marker once all processes are through."""
        if self.processes.on_main(f"stage {stage}", partial(self._done_or_log, stage)):
            return
        if self.processes.is_main:
            logger.info("stage %s: starting on %d process(es)", stage, self.processes.num_processes)
        started = time.perf_counter()
        summary = {**(body() or {}), "processes": self.processes.num_processes}
        _release_memory()
        self.processes.on_main(f"stage {stage}", partial(self._write_marker, stage, started, summary))

    def _done_or_log(self, stage: str) -> bool:
        done = self._done(stage)
        if done:
            logger.info("stage %s: done already (%s), skipping", stage, self.layout.marker(stage))
        return done

    def _write_marker(self, stage: str, started: float, summary: dict[str, Any]) -> None:
        marker = self.layout.marker(stage)
        marker.parent.mkdir(parents=True, exist_ok=True)
        temporary = marker.with_suffix(".tmp")
        temporary.write_text(
            json.dumps({"stage": stage, "seconds": time.perf_counter() - started, **summary})
        )
        temporary.replace(marker)
        logger.info("stage %s: finished in %.1f s", stage, time.perf_counter() - started)

    def _stage_bodies(self) -> dict[str, Callable[[], dict[str, Any] | None]]:
        return {
            "cases": self.stage_cases,
            "pre_edit_eval": lambda: self.stage_evaluate("pre_edit", self.base_model_path),
            "edit": self.stage_edit,
            "post_edit_eval": lambda: self.stage_evaluate("post_edit", self.edited_model_path),
            "agt_data": self.stage_agt_data,
            "train": self.stage_train,
            "post_refinement_eval": lambda: self.stage_evaluate(
                "post_refinement", str(self.layout.refined_model)
            ),
            "report": self.stage_report,
        }

    def run(self) -> dict[str, Any]:
        """Every stage in order; returns the report (the same on every process)."""
        bodies = self._stage_bodies()
        try:
            self.processes.on_main("writing the recipe", self._write_recipe)
            for stage in STAGES:
                if stage in EVERY_PROCESS_STAGES:
                    self._run_stage_everywhere(stage, bodies[stage])
                else:
                    self.processes.on_main(f"stage {stage}", partial(self._run_stage, stage, bodies[stage]))
            report = self.processes.on_main(
                "reading the report", lambda: json.loads((self.layout.report / "report.json").read_text())
            )
        except BaseException:
            self._finish_wandb(exit_code=1)
            raise
        self._finish_wandb()
        return report

    def _write_recipe(self) -> None:
        """recipe.json, unless every stage is skipped (then it describes the run that made the outputs)."""
        if all(self._done(stage) for stage in STAGES):
            return
        self.layout.root.mkdir(parents=True, exist_ok=True)
        (self.layout.root / "recipe.json").write_text(json.dumps(self.recipe.to_dict(), indent=2))

    # ---------------------------------------------------------------- stages
    def cases(self):
        from edit_grpo_trl.data.cases import load_cases

        return load_cases(self.layout.cases)

    def _load_source_cases(self):
        from edit_grpo_trl.data.formats import load_edit_cases

        data = self.recipe.data
        return list(
            load_edit_cases(
                data.source,
                format=data.format,
                split=data.split,
                # keep_known filters the whole source first, then cuts to num_cases
                limit=None if data.keep_known else data.num_cases,
                skip_invalid=data.skip_invalid,
            )
        )

    def stage_cases(self) -> dict[str, Any]:
        from edit_grpo_trl.data.cases import save_cases

        cases = self._load_source_cases()
        summary: dict[str, Any] = {}
        if self.recipe.data.keep_known:
            cases, summary["known"] = self._known_cases(cases)
        if self.recipe.data.locality_holdout_share:
            from edit_grpo_trl.data.pools import hold_out_locality

            cases, summary["locality_probes_held_out"] = hold_out_locality(
                cases, self.recipe.data.locality_holdout_share, self.recipe.data.seed
            )
        save_cases(cases, self.layout.cases)
        return {"cases": len(cases), **summary}

    def _known_cases(self, cases):
        """The cases the pre-edit model already answers right, in source order, cut to num_cases; the recall
        report (of the cases asked) is saved."""
        from edit_grpo_trl.data.facts.recall import filter_known_cases

        data = self.recipe.data
        evaluation = self.recipe.evaluation
        # Known the way the evaluation will ask: with prompts "data", in the recipe's (chat) style, with the
        # evaluation's token budget (a chat model restates the prompt before the answer).
        asked_as_data = evaluation.prompts == "data"
        model, tokenizer = load_model(self.base_model_path, self.recipe)
        # In chunks, in the source's order, until num_cases are known: a short run asks a few dozen facts.
        chunk = max(64, 4 * (data.num_cases or 0))
        kept, report = [], None
        for start in range(0, len(cases), chunk):
            part, part_report = filter_known_cases(
                model,
                tokenizer,
                cases[start : start + chunk],
                heldout_share=data.known_heldout_share,
                batch_size=evaluation.batch_size,
                **({"data": data, "max_new_tokens": evaluation.max_new_tokens} if asked_as_data else {}),
            )
            kept += part
            if report is None:
                report = part_report
            else:
                report.merge(part_report)
            if data.num_cases and len(kept) >= data.num_cases:
                break
        self.layout.root.mkdir(parents=True, exist_ok=True)
        (self.layout.root / "known_cases.json").write_text(json.dumps(report.to_dict(), indent=2))
        logger.info("pre-edit recall:\n%s", report.format())
        if not kept:
            raise RecipeError(
                f"data.keep_known: the model states none of the {len(cases)} old facts of {data.source}; "
                f"per template: {self.layout.root / 'known_cases.json'}"
            )
        chosen = kept[: data.num_cases] if data.num_cases else kept
        return chosen, {"offered": len(cases), "asked": report.cases, "known": len(kept), "kept": len(chosen)}

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
        from edit_grpo_trl.evaluation.run import evaluate_checkpoint

        result = evaluate_checkpoint(
            partial(load_model, recipe=self.recipe),
            model_path,
            self.cases(),
            self.recipe.evaluation,
            self.layout.evaluation(point),
            # the pre-edit point is the reference itself, also when forced over an earlier baseline.json
            baseline=None if point == "pre_edit" else self._baseline(),
            easyedit_phase="pre" if point == "pre_edit" else "post",
            data=self.recipe.data,
        )
        if point == "pre_edit":
            result.baseline.save(self.layout.evaluation("pre_edit") / "baseline.json")
        return {"point": point, "metrics": result.metrics}

    def _baseline(self):
        from edit_grpo_trl.evaluation.evaluate import EvalBaseline

        path = self.layout.evaluation("pre_edit") / "baseline.json"
        return EvalBaseline.load(path) if path.is_file() else None

    def stage_agt_data(self) -> dict[str, Any]:
        import datasets

        from edit_grpo_trl.data.agt import agt_features, build_agt_records

        data = self.recipe.data  # an AGTDataConfig, plus where the cases came from
        model = tokenizer = None
        if data.locality_answers == "model" or data.prompt_style == "chat" or data.train_prompts.needs_model:
            model, tokenizer = load_model(self.base_model_path, self.recipe)  # the PRE-edit model
        cases = self.cases()
        summary: dict[str, Any] = {}
        if data.train_prompts.enabled:
            cases, summary["train_prompts"] = self._training_pools(cases, model, tokenizer)
        records = build_agt_records(cases, data, tokenizer=tokenizer, model=model)
        dataset = datasets.Dataset.from_list(records.rows, features=agt_features(data.prompt_style))
        if self.layout.agt_dataset.exists():
            shutil.rmtree(self.layout.agt_dataset)
        dataset.save_to_disk(str(self.layout.agt_dataset))
        pool = self.layout.locality_pool
        temporary = pool.with_name(pool.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            for row in records.locality_pool:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        temporary.replace(pool)
        return {"rows": len(dataset), "report": vars(records.report), **summary}

    def _training_pools(self, cases, model, tokenizer):
        """The cases with training prompts from ``data.train_prompts``; the pool is written for inspection."""
        from edit_grpo_trl.data.cases import ProbeKind
        from edit_grpo_trl.data.pools import build_pools_from_config

        settings = self.recipe.data.train_prompts
        pooled = build_pools_from_config(cases, settings, model=model, tokenizer=tokenizer)
        report = pooled.report.to_dict()
        path = self.layout.training_prompts
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            for case in pooled.cases:
                prompts = [probe.prompt for probe in case.probes_of(ProbeKind.TRAIN_GENERALIZATION)]
                handle.write(
                    json.dumps({"case_id": case.case_id, "prompts": prompts}, ensure_ascii=False) + "\n"
                )
        temporary.replace(path)
        lacking = pooled.report.cases_without_training
        if (
            lacking
            and self.recipe.data.num_generalization
            and (self.recipe.data.on_missing == "error" or len(lacking) == len(cases))
        ):
            raise RecipeError(
                f"{len(lacking)} of {len(cases)} case(s) got no training prompt from data.train_prompts "
                f"(first: {lacking[0]!r}); offered {report['candidates']}, kept {report['kept']}, refused "
                f"{report['refused_by_source']}. Add a source (templates with a {{prompt}} slot always yield "
                f"prompts), relax the filters, or set data.on_missing: skip. The pool so far: {path}"
            )
        return pooled.cases, report

    def stage_train(self) -> dict[str, Any]:
        from edit_grpo_trl.stage2.training import run_training

        if "train" in self.force:
            self.processes.on_main("clearing stage2/", self._clear_training)
        if self.processes.is_main and self.recipe.wandb.project:
            self.wandb_run()  # started before the trainer, so that its W&B callback logs into this run
        return run_training(self.recipe, self.edited_model_path, self.layout)

    def _clear_training(self) -> None:
        """``--force train`` starts over: the old checkpoints and refined model go (they would be resumed)."""
        if self.layout.training.exists():
            logger.info("--force train: removing %s, training starts from scratch", self.layout.training)
            shutil.rmtree(self.layout.training)

    def stage_report(self) -> dict[str, Any]:
        from edit_grpo_trl.evaluation.evaluate import read_per_case
        from edit_grpo_trl.evaluation.report import write_report

        points = {}
        for point in ("pre_edit", "post_edit", "post_refinement"):
            path = self.layout.evaluation(point) / "metrics.json"
            points[point] = json.loads(path.read_text())
        breakdown = self.layout.evaluation("post_refinement") / "locality.json"
        locality = json.loads(breakdown.read_text()) if breakdown.is_file() else None
        per_case = {
            point: read_per_case(self.layout.evaluation(point)) for point in ("post_edit", "post_refinement")
        }
        per_case = {point: rows for point, rows in per_case.items() if rows is not None}
        table = write_report(points, self.layout.report, overwrite=True, locality=locality, per_case=per_case)
        if self.recipe.wandb.project:
            self._log_report_to_wandb(points)
        refined = self._complete_refined_model(points)
        print(table)
        print(f"\nreport: {self.layout.report / 'report.md'}")
        return {"report": str(self.layout.report), **refined}

    def _complete_refined_model(self, points: dict[str, dict[str, float]]) -> dict[str, Any]:
        """stage2/final gets a model card, the edit manifest, the recipe and the report; then the opt-in
        push (training.push_to_hub with training.hub_model_id)."""
        from edit_grpo_trl.editors.checkpoint import MANIFEST_NAME
        from edit_grpo_trl.evaluation.report import headline_table
        from edit_grpo_trl.hub import complete_refined_folder, hub_target, model_card, push_refined

        folder = self.layout.refined_model
        if not folder.is_dir():
            return {}
        manifest = Path(self.edited_model_path) / MANIFEST_NAME
        recipe = self.recipe
        card = model_card(
            recipe.model.model_name_or_path,
            recipe.editor.name,
            recipe.refinement,
            self.cases(),
            recipe.training,
            recipe.lora.enabled,
            headline_table(points),
        )
        files = complete_refined_folder(
            folder,
            card,
            manifest if manifest.is_file() else None,
            self.layout.root / "recipe.json",
            self.layout.report,
        )
        summary: dict[str, Any] = {"refined_model_files": files}
        target = hub_target(recipe.training)
        if target is not None:
            summary["pushed_to"] = push_refined(folder, target)
        return summary

    def _log_report_to_wandb(self, points: dict[str, dict[str, float]]) -> None:
        from edit_grpo_trl.evaluation.report import log_report_to_wandb

        log_report_to_wandb(self.wandb_run(), points, self.layout.report)

    # ---------------------------------------------------------------- W&B
    def wandb_run(self):
        """The pipeline's one W&B run (main process only), started on first use.

        Its id is kept in the run folder, so a resumed pipeline (a rerun, or ``--force report``) logs into the
        same W&B run. The trainer's W&B callback finds it active and logs the training curves into it.
        """
        if self._wandb_run is not None:
            return self._wandb_run
        import wandb

        settings = self.recipe.wandb
        id_file = self.layout.root / WANDB_RUN_FILE
        run_id = json.loads(id_file.read_text())["id"] if id_file.is_file() else None
        self._wandb_run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            name=settings.run_name or self.layout.root.name,
            tags=list(settings.tags),
            group=settings.group,
            config=self.recipe.to_dict(),
            dir=str(self.layout.root),
            id=run_id,
            resume="allow",
        )
        id_file.write_text(json.dumps({"id": self._wandb_run.id}))
        return self._wandb_run

    def _finish_wandb(self, exit_code: int = 0) -> None:
        if self._wandb_run is not None:
            self._wandb_run.finish(exit_code=exit_code)
            self._wandb_run = None


def run_pipeline(recipe: PipelineRecipe, force: set[str] | None = None) -> dict[str, Any]:
    return Pipeline(recipe, force).run()
