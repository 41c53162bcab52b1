"""Stage 2 from a recipe: EditGRPOTrainer on the stage-1 checkpoint, resumable, with optional LoRA and W&B."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from edit_grpo_trl.recipe import PipelineRecipe, RecipeError

logger = logging.getLogger(__name__)


def edited_layers(model_path: str) -> list[int]:
    """The layers the stage-1 editor wrote, from the edit manifest (none for an unedited model)."""
    from edit_grpo_trl.editors.checkpoint import MANIFEST_NAME, read_manifest

    if not (Path(model_path) / MANIFEST_NAME).is_file():
        return []
    return list(read_manifest(model_path).layers or [])


def edited_layer(model_path: str) -> int | None:
    """The layer the stage-1 editor wrote (the last, for multi-layer editors), from the edit manifest."""
    layers = edited_layers(model_path)
    return max(layers) if layers else None


def read_locality_pool(path: Path) -> list[dict[str, Any]]:
    """The locality pool the ``agt_data`` stage wrote (empty when there is none)."""
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# The vLLM releases trl 1.16 declares for its `vllm` extra (and outside which it warns).
SUPPORTED_VLLM = ">=0.22.0,<=0.31.0"


def require_vllm(training: dict[str, Any]) -> None:
    """Fail before any model is loaded when the recipe asks for vLLM generation and vLLM cannot be imported.

    TRL would raise too, but only once the trainer is built, after the model has been loaded (and, in the
    pipeline, after stage 1 and two evaluations).
    """
    if not training.get("use_vllm"):
        return
    try:
        import vllm  # noqa: F401
    except Exception as error:  # missing, or built against another torch/CUDA
        raise RecipeError(
            f"training.use_vllm is true, but vllm cannot be imported ({type(error).__name__}: {error}). "
            f"trl 1.16 supports vllm{SUPPORTED_VLLM}: install it with pip install 'trl[vllm]==1.16.*' on every "
            "training machine, or set training.use_vllm: false to generate with transformers."
        ) from error


def training_settings(recipe: PipelineRecipe, model_path: str | None = None) -> dict[str, Any]:
    """The recipe's ``training`` section plus the defaults stage 2 fills in (saving, logging, CPU, W&B).

    Without an ``alignment_layer`` in the recipe, the alignment gradients are taken at the layer the
    stage-1 editor wrote, as its edit manifest records (the last one for MEMIT-style layer ranges).
    """
    import torch

    from edit_grpo_trl.editors.wise import wise_training_defaults
    from edit_grpo_trl.hub import hub_target

    settings = dict(recipe.training)
    settings = {**wise_training_defaults(model_path), **settings}  # WISE: PGAA aligns on the side memory
    require_vllm(settings)
    hub_target(settings)  # push_to_hub pushes the refined model after the report (edit_grpo_trl.hub) ...
    settings["push_to_hub"] = False  # ... and the trainer none of its checkpoints
    if settings.get("alignment_layer") is None and model_path is not None:
        layer = edited_layer(model_path)
        if layer is not None:
            settings["alignment_layer"] = layer
            logger.info("alignment_layer %d, the layer the stage-1 editor wrote", layer)
    settings.setdefault("save_strategy", "steps")
    settings.setdefault("save_steps", 50)
    settings.setdefault("save_total_limit", 2)
    settings.setdefault("logging_steps", 1)
    if not torch.cuda.is_available():
        settings.setdefault("use_cpu", True)
        # bf16/fp16 autocast on a CPU is slow (generation alone runs ~5x slower) and lossy: a recipe written
        # for GPUs, run here to try it out, trains in float32 instead.
        for precision in ("bf16", "fp16"):
            if settings.get(precision):
                logger.warning("training.%s is set but there is no GPU: stage 2 trains in float32", precision)
            settings[precision] = False
    if recipe.wandb.project:
        settings.setdefault("report_to", ["wandb"])
        settings.setdefault("run_name", recipe.wandb.run_name)
        os.environ.setdefault("WANDB_PROJECT", recipe.wandb.project)
        if recipe.wandb.entity:
            os.environ.setdefault("WANDB_ENTITY", recipe.wandb.entity)
    else:
        settings.setdefault("report_to", "none")
    return settings


def build_training_config(
    recipe: PipelineRecipe,
    output_dir: Path,
    model_path: str | None = None,
    extra: dict[str, Any] | None = None,
):
    """`EditGRPOConfig` from :func:`training_settings` (plus ``extra``), writing under ``output_dir``."""
    from edit_grpo_trl.stage2.config import EditGRPOConfig

    return EditGRPOConfig(
        output_dir=str(output_dir), **{**training_settings(recipe, model_path), **(extra or {})}
    )


def build_peft_config(recipe: PipelineRecipe, train_scope: str = "all", layers=(), module_name: str = ""):
    """LoRA from the recipe (every ``peft.LoraConfig`` field: :func:`edit_grpo_trl.loading.lora_config`); a
    ``train_scope`` other than ``all`` puts the adapters on the edited layers only (``edited_modules``: on
    the edited module only)."""
    if not recipe.lora.enabled:
        return None
    from edit_grpo_trl.loading import lora_config
    from edit_grpo_trl.stage2.scope import lora_layers

    scoped: dict = {}
    if train_scope == "edited_modules":
        scoped["target_modules"] = [module_name.split(".")[-1]]
    if lora_layers(train_scope, layers) is not None:
        scoped["layers_to_transform"] = lora_layers(train_scope, layers)
    return lora_config(recipe.lora, **scoped)


def build_trainer(
    recipe: PipelineRecipe,
    args,
    model,
    tokenizer,
    dataset,
    locality_pool=None,
    layers=(),
    model_path: str | None = None,
):
    """The stage-2 trainer the recipe's ``refinement`` names, on the same model, data and settings.

    Every method gets the same ``train_scope`` (``layers``: those the editor wrote), the same locality
    loss (``locality_pool``, weighted by ``args.locality_coef``) and the same null-space projection (from
    the edit manifest in ``model_path``), so comparisons between them stay fair.
    """
    trainer = _method_trainer(recipe, args, model, tokenizer, dataset, locality_pool, layers)
    if args.null_space_projection:
        attach_null_space(trainer, layers, model_path, args.null_space_threshold)
    return trainer


def attach_null_space(trainer, layers, model_path: str | None, threshold: float):
    """``null_space_projection`` on a built trainer, with the key-statistics corpus of the edit manifest."""
    from edit_grpo_trl.editors.checkpoint import MANIFEST_NAME, read_manifest
    from edit_grpo_trl.stage2.null_space import (
        KeyStatisticsSource,
        NullSpaceError,
        attach_null_space_projection,
    )

    if model_path is None or not (Path(model_path) / MANIFEST_NAME).is_file():
        raise NullSpaceError(
            f"null_space_projection protects the weights the stage-1 editor wrote, but {model_path} has no "
            f"{MANIFEST_NAME} to name them: set null_space_projection: false"
        )
    manifest = read_manifest(model_path)
    source = KeyStatisticsSource.from_hyperparameters(
        manifest.hyperparameters, f"the edit manifest of {model_path}"
    )
    return attach_null_space_projection(trainer, layers, source, threshold, model_dir=model_path)


def _method_trainer(recipe: PipelineRecipe, args, model, tokenizer, dataset, locality_pool, layers):
    from edit_grpo_trl.stage2.scope import apply_train_scope

    peft_config = build_peft_config(recipe, args.train_scope, layers, args.alignment_module)
    if peft_config is None:
        apply_train_scope(model, args.train_scope, layers, args.alignment_module)
    locality = {
        "locality_pool": locality_pool,
        "locality_coef": args.locality_coef,
        "locality_batch_size": args.locality_batch_size,
    }
    if recipe.refinement == "edit_grpo":
        from edit_grpo_trl.stage2.trainer import EditGRPOTrainer

        return EditGRPOTrainer(
            model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            **locality,
        )
    import datasets

    from edit_grpo_trl.stage2 import baselines

    settings = training_settings(recipe)  # the same settings EditGRPOConfig got, less PGAA's own
    if recipe.refinement == "grpo":
        from trl import GRPOConfig

        from edit_grpo_trl.stage2.early_stop import attach_reward_saturation_stop
        from edit_grpo_trl.stage2.rewards import resolve_reward_functions
        from edit_grpo_trl.stage2.vanilla_grpo import VanillaGRPOTrainer

        config = GRPOConfig(output_dir=args.output_dir, **baselines.grpo_settings(settings))
        trainer = VanillaGRPOTrainer(
            model,
            reward_funcs=resolve_reward_functions(args.agt_reward_funcs),
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            target_injection=args.target_injection,
            target_injection_gamma=args.target_injection_gamma,
            **locality,
        )
        attach_reward_saturation_stop(trainer, args.early_stop_reward, args.early_stop_window)
        return trainer
    from trl import SFTConfig

    from edit_grpo_trl.stage2.locality import LocalitySFTTrainer

    refuse_sft_switches(args)

    config = SFTConfig(output_dir=args.output_dir, **baselines.sft_settings(settings))
    rows = baselines.sft_rows(dataset.to_list())
    return LocalitySFTTrainer(
        model,
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        **locality,
    )


def refuse_sft_switches(args) -> None:
    """Stage-2 switches the SFT baseline cannot honour, refused rather than silently dropped."""
    if getattr(args, "early_stop_reward", None) is not None:
        raise RecipeError(
            "training.early_stop_reward stops on the sampled anchor and generalization accuracies, which SFT "
            "does not have (it samples nothing; its mean_token_accuracy is teacher-forced over anchor, "
            "generalization and locality rows together): unset early_stop_reward for refinement: sft"
        )
    if getattr(args, "target_injection", False):
        raise RecipeError(
            "training.target_injection puts the new object among an anchor's sampled completions; SFT samples "
            "nothing and already trains on the new object at every anchor row: unset target_injection for "
            "refinement: sft"
        )


def resume_checkpoint(requested: str | bool | None, training_dir: Path) -> str | None:
    """The checkpoint training resumes from, as the recipe's ``training.resume_from_checkpoint`` asks:

    * unset: the last checkpoint under ``training_dir`` if there is one (an interrupted run goes on);
    * ``false``: none, training starts over;
    * ``true``: the last checkpoint under ``training_dir``, which must exist;
    * a path: that checkpoint folder, which must exist.
    """
    from transformers.trainer_utils import get_last_checkpoint

    def last() -> str | None:
        return get_last_checkpoint(str(training_dir)) if Path(training_dir).is_dir() else None

    word = requested.strip().lower() if isinstance(requested, str) else requested
    if word is None:
        return last()
    if word in (False, "false", "no"):
        return None
    if word in (True, "true", "yes", "last"):
        found = last()
        if found is None:
            raise RecipeError(
                f"training.resume_from_checkpoint is {requested!r}, but {training_dir} holds no checkpoint"
            )
        return found
    if not Path(requested).is_dir():
        raise RecipeError(f"training.resume_from_checkpoint: no checkpoint folder at {requested}")
    return str(requested)


def run_training(recipe: PipelineRecipe, model_path: str, layout) -> dict[str, Any]:
    """Train, resuming as :func:`resume_checkpoint` says (by default from the last checkpoint under
    ``layout.training``); save the final model atomically."""
    import datasets

    from edit_grpo_trl.editors.wise import prepare_wise_for_training
    from edit_grpo_trl.loading import load_causal_lm
    from edit_grpo_trl.stage2.early_stop import early_stop_step

    args = build_training_config(recipe, layout.training, model_path)
    dataset = datasets.load_from_disk(str(layout.agt_dataset))
    model, tokenizer = load_causal_lm(model_path, recipe.model, place=False)
    wise_parameters = prepare_wise_for_training(model)  # WISE: the side memory trains (no-op otherwise)
    if wise_parameters and args.null_space_projection:
        raise RecipeError(
            "training.null_space_projection is on, but this is a WISE model, whose edited down_proj is a routed "
            "side memory: set null_space_projection: false"
        )
    if wise_parameters and args.train_scope != "all":
        raise RecipeError(
            f"training.train_scope is {args.train_scope!r}, but this is a WISE model, whose stage 2 trains its side "
            "memory only; leave train_scope at 'all'"
        )
    pool = read_locality_pool(layout.locality_pool)
    if args.locality_coef > 0 and not pool:
        raise RecipeError(
            f"training.locality_coef is {args.locality_coef} but the locality pool {layout.locality_pool} is "
            "empty or missing: the cases have no training locality probes (data.locality_holdout_share moves "
            "a share of each case's locality probes to training), or data.locality_pool_size is 0"
        )
    trainer = build_trainer(
        recipe, args, model, tokenizer, dataset, pool, edited_layers(model_path), model_path=model_path
    )
    last = resume_checkpoint(args.resume_from_checkpoint, Path(layout.training))
    if last:
        logger.info("resuming %s from %s", recipe.refinement, last)
    result = trainer.train(resume_from_checkpoint=last)
    stopped_at = early_stop_step(trainer)
    final = Path(layout.refined_model)
    temporary = final.with_name(final.name + ".tmp")
    if trainer.accelerator.is_main_process and temporary.exists():
        shutil.rmtree(temporary)
    if recipe.lora.enabled:
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        if trainer.accelerator.is_main_process:
            merged.save_pretrained(temporary)
    else:
        trainer.save_model(str(temporary))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(temporary)
        if final.exists():
            shutil.rmtree(final)
        temporary.replace(final)
    trainer.accelerator.wait_for_everyone()
    return {
        "refinement": recipe.refinement,
        "global_step": result.global_step,
        "training_loss": result.training_loss,
        "train_seconds": result.metrics.get("train_runtime"),
        "resumed_from": last,
        "early_stop_reward": args.early_stop_reward,
        "early_stopped_at_step": stopped_at,
        "null_space_projection": args.null_space_projection,
        **launch_facts(trainer),
    }


def launch_facts(trainer) -> dict[str, Any]:
    """How the training actually ran (not how it was asked to): DeepSpeed's ZeRO stage, precision."""
    state = trainer.accelerator.state
    plugin = getattr(state, "deepspeed_plugin", None) if trainer.is_deepspeed_enabled else None
    facts = {
        "deepspeed_zero_stage": plugin.zero_stage if plugin is not None else None,
        "mixed_precision": str(state.mixed_precision),
        "device": str(trainer.accelerator.device),
    }
    if getattr(trainer, "split_checks", None):
        facts["split_checks"] = trainer.split_checks
    return facts
