"""Checks before the first stage: every setting the run will need, resolved and validated in seconds.

A wrong layer index, module name, training setting, data field or prompt source would otherwise surface
only when its stage starts, after stage 1 and two evaluations of a large model. :func:`check_run` reads
the model's config (no weights: the module tree is built on the ``meta`` device), the data and the
recipe, and raises one :class:`~edit_grpo_trl.recipe.RecipeError` that lists every problem it found.

Checks that belong to a finished stage are skipped, so a resumed run is not refused for a setting it no
longer uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edit_grpo_trl.recipe import PipelineRecipe, RecipeError

if TYPE_CHECKING:
    from edit_grpo_trl.stages import RunLayout

logger = logging.getLogger(__name__)

# peft's shorthand for every linear layer but the output head.
ALL_LINEAR = "all-linear"


@dataclass
class Preflight:
    """What the checks resolved (for the log and the tests) and the problems they found."""

    problems: list[str] = field(default_factory=list)
    num_layers: int | None = None
    edited_layers: list[int] = field(default_factory=list)
    alignment_layer: int | None = None
    cases: int | None = None

    def fail(self, what: str, error: BaseException | str) -> None:
        self.problems.append(f"{what}: {error}")


def _model_config(path: str):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path)


def _meta_model(config):
    """The model's module tree without weights (the ``meta`` device allocates nothing)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _check_editor(recipe: PipelineRecipe, config, model_path: str, result: Preflight) -> None:
    editor = recipe.editor
    if editor.name == "none":
        return
    if editor.name == "external":
        from edit_grpo_trl.editors.checkpoint import load_edited

        if not editor.checkpoint:
            result.fail("editor", "name is 'external' but editor.checkpoint names no edited checkpoint")
            return
        try:
            result.edited_layers = list(load_edited(editor.checkpoint).manifest.layers or [])
        except Exception as error:  # CheckpointError and friends: each names the file
            result.fail("editor.checkpoint", error)
        return
    from edit_grpo_trl.editors.corpus import parse_corpus
    from edit_grpo_trl.editors.presets import resolve_hparams

    try:
        loaded = resolve_hparams(editor.name, config, editor.hparams, editor.overrides, model_dir=model_path)
    except Exception as error:  # unknown editor, bad preset, layer past the model: each says what to change
        result.fail(f"editor {editor.name!r} (hparams {editor.hparams or 'default'})", error)
        return
    result.edited_layers = list(loaded.hparams.layers)
    corpus = getattr(loaded.hparams, "mom2_dataset", None)
    if corpus:
        spec = parse_corpus(corpus)
        missing = [str(path) for path in spec.paths if not path.is_file()]
        if missing:
            result.fail(f"editor {editor.name!r} mom2_dataset", f"no corpus file at {', '.join(missing)}")


def _check_wise_stage2(recipe: PipelineRecipe, result: Preflight) -> None:
    """Stage-2 settings a WISE model cannot take (its ``down_proj`` is a routed side memory)."""
    editor = recipe.editor
    if editor.name == "external" and editor.checkpoint:
        from edit_grpo_trl.editors.checkpoint import wise_manifest_section

        is_wise = bool(wise_manifest_section(editor.checkpoint))
    else:
        is_wise = editor.name == "wise"
    if not is_wise:
        return
    if recipe.lora.enabled:
        result.fail(
            "lora.enabled",
            "a WISE model's edited down_proj is a routed side memory that PEFT cannot wrap, and stage 2 trains "
            "that side memory itself: set lora.enabled: false",
        )
    if recipe.training.get("use_vllm"):
        result.fail(
            "training.use_vllm",
            "vLLM loads the plain weights, so it would sample from the main memory (the unedited model): "
            "set training.use_vllm: false",
        )
    if recipe.training.get("train_scope", "all") != "all":
        result.fail(
            "training.train_scope", "a WISE model trains its side memory only: leave train_scope at 'all'"
        )


def _check_training(recipe: PipelineRecipe, meta_model, output_dir: Path, result: Preflight) -> None:
    """The stage-2 config as training will build it, the alignment module, and the case-batch shape."""
    from edit_grpo_trl.stage2.layer_features import resolve_alignment_module
    from edit_grpo_trl.stage2.training import build_training_config

    overrides: dict[str, Any] = {}
    if recipe.training.get("alignment_layer") is None and result.edited_layers:
        overrides["alignment_layer"] = max(result.edited_layers)  # what training reads from the manifest
    try:
        args = build_training_config(recipe, output_dir, extra=overrides)
    except (ValueError, TypeError, ZeroDivisionError) as error:
        result.fail("training", error)
        return
    result.alignment_layer = args.alignment_layer
    if args.alignment_layer is not None and args.alignment_coef != 0:
        try:
            resolve_alignment_module(meta_model, args.alignment_layer, args.alignment_module)
        except ValueError as error:
            result.fail("training.alignment_layer / alignment_module", error)
    from edit_grpo_trl.stage2.sampler import CaseBatchError, cases_per_generation_batch

    # The trainer's own arithmetic, on as many cases as one generation batch could hold: only the batch's
    # shape is checked here (how many cases the data yields is the data check's).
    case_ids = [
        case for case in range(max(1, args.generation_batch_size)) for _ in range(recipe.data.rows_per_case)
    ]
    try:
        cases_per_generation_batch(case_ids, args.generation_batch_size, args.num_generations)
    except CaseBatchError as error:
        result.fail(
            "training", f"{error} A case is 1 anchor + data.num_generalization + data.num_locality prompts."
        )


def _check_early_stop(recipe: PipelineRecipe, result: Preflight) -> None:
    """``training.early_stop_reward`` needs sampled rewards: the SFT baseline has none."""
    if recipe.training.get("early_stop_reward") is not None and recipe.refinement == "sft":
        result.fail(
            "training.early_stop_reward",
            "stops on the sampled anchor and generalization accuracies, which refinement: sft does not have "
            "(it samples nothing; its mean_token_accuracy is teacher-forced over every row): unset it for sft",
        )


def _check_null_space(recipe: PipelineRecipe, result: Preflight) -> None:
    """``training.null_space_projection`` needs edited ``down_proj`` weights, their key-statistics corpus, and
    an optimizer that steps the model's own weights (``edit_grpo_trl.stage2.null_space``)."""
    import dataclasses
    import os

    if recipe.training.get("null_space_projection") is not True:
        return
    what = "training.null_space_projection"
    editor = recipe.editor
    if editor.name == "none":
        result.fail(what, "there is no stage-1 edit (editor: none), so no edited weight to protect")
    elif editor.name == "external" and editor.checkpoint:
        from edit_grpo_trl.editors.checkpoint import load_edited, wise_manifest_section

        try:
            hyperparameters = load_edited(editor.checkpoint).manifest.hyperparameters
        except Exception:  # _check_editor names the checkpoint's own problem
            hyperparameters = {}
        if wise_manifest_section(editor.checkpoint):
            result.fail(what, "a WISE model's edited down_proj is a routed side memory; set it to false")
        elif not hyperparameters.get("mom2_dataset"):
            result.fail(
                what, "the checkpoint's edit manifest names no mom2_dataset to take the preserved keys from"
            )
    elif editor.name != "external":
        from edit_grpo_trl.editors.registry import editor_class

        try:
            fields = {f.name for f in dataclasses.fields(editor_class(editor.name).hparams_class)}
        except Exception:  # an unknown editor: _check_editor names it
            fields = {"mom2_dataset"}
        if editor.name == "wise":
            result.fail(what, "a WISE model's edited down_proj is a routed side memory; set it to false")
        elif "mom2_dataset" not in fields:
            result.fail(
                what, f"editor {editor.name!r} computes no key statistics (mom2_dataset) to project with"
            )
    if recipe.lora.enabled:
        result.fail(what, "a LoRA update B A is not a free matrix to project: set lora.enabled: false")
    launched = {
        name: os.environ.get(f"ACCELERATE_USE_{name.upper()}", "").lower() in ("1", "true")
        for name in ("deepspeed", "fsdp")
    }
    for name in ("deepspeed", "fsdp"):
        if recipe.training.get(name) or launched[name]:
            result.fail(
                what,
                f"under {name} the optimizer steps a master or sharded copy of the weights that would undo the "
                "projection: launch with plain DDP, or set it to false",
            )


def _check_lora(recipe: PipelineRecipe, meta_model, result: Preflight) -> None:
    if not recipe.lora.enabled:
        return
    try:
        from edit_grpo_trl.loading import lora_config

        lora_config(recipe.lora)  # every lora key is a peft.LoraConfig field, with values it accepts
    except (ValueError, TypeError) as error:
        result.fail("lora", error)
    names = [name for name, _ in meta_model.named_modules()]
    for target in recipe.lora.target_modules:
        if target == ALL_LINEAR:
            continue
        if not any(name == target or name.endswith(f".{target}") for name in names):
            linear = sorted(
                {
                    name.rsplit(".", 1)[-1]
                    for name, m in meta_model.named_modules()
                    if isinstance(m, torch.nn.Linear)
                }
            )
            result.fail(
                "lora.target_modules",
                f"no module named {target!r} in the model; its linear modules: {', '.join(linear)}",
            )


def _check_data(recipe: PipelineRecipe, cases: list, tokenizer, result: Preflight) -> None:
    from edit_grpo_trl.data.cases import ProbeKind
    from edit_grpo_trl.data.pools import FieldPromptSource

    data, pools = recipe.data, recipe.data.train_prompts
    result.cases = len(cases)
    if not cases:
        result.fail("data.source", f"{data.source} holds no edit cases")
        return
    if data.keep_known:
        unknowable = [case.case_id for case in cases if not case.target_true]
        if unknowable:
            result.fail(
                "data.keep_known",
                f"{len(unknowable)} of {len(cases)} case(s) have no old answer to check the model against "
                f"(first: {unknowable[0]!r}); this source cannot be filtered by pre-edit recall",
            )
    lacking = [
        case.case_id
        for case in cases
        if not case.probes_of(ProbeKind.LOCALITY) and not case.probes_of(ProbeKind.TRAIN_LOCALITY)
    ]
    if data.num_locality and lacking:
        message = f"{len(lacking)} of {len(cases)} case(s) have no locality probe (first: {lacking[0]!r})"
        if data.on_missing == "error" or len(lacking) == len(cases):
            result.fail("data.num_locality", f"{message}; set data.num_locality: 0 or data.on_missing: skip")
        else:
            logger.warning("%s: they are left out of training (data.on_missing: skip)", message)
    coef = recipe.training.get("locality_coef") or 0
    if isinstance(coef, int | float) and coef > 0:
        trainable = any(case.probes_of(ProbeKind.TRAIN_LOCALITY) for case in cases)
        held_out = data.locality_holdout_share and any(
            len(case.probes_of(ProbeKind.LOCALITY)) >= 2 for case in cases
        )
        if not data.locality_pool_size:
            result.fail("data.locality_pool_size", "is 0, so training.locality_coef has no prompt to keep")
        elif not (trainable or held_out):
            result.fail(
                "training.locality_coef",
                f"is {coef}, but no case has training locality probes; set data.locality_holdout_share (e.g. 0.5) "
                "to set part of each case's locality probes aside for training, or locality_coef: 0",
            )
    if data.num_generalization and not pools.enabled:
        lacking = [case.case_id for case in cases if not case.probes_of(ProbeKind.TRAIN_GENERALIZATION)]
        if lacking:
            result.fail(
                "data.train_prompts",
                f"{len(lacking)} of {len(cases)} case(s) bring no training prompts (first: {lacking[0]!r}) and "
                "data.train_prompts names no source to build them from; add sources, e.g. "
                "sources: [generated, templates] with templates: ['Question: {prompt}\\nAnswer:']",
            )
    if "fields" in pools.sources and pools.missing_fields == "error":
        try:
            FieldPromptSource(tuple(pools.fields), missing="error")(cases)
        except ValueError as error:
            result.fail("data.train_prompts.fields", error)
    if "templates" in pools.sources and isinstance(pools.templates, dict):
        relations = {case.relation for case in cases}
        if not relations & set(pools.templates):
            result.fail(
                "data.train_prompts.templates",
                f"templates are keyed by relation ({', '.join(sorted(pools.templates))}) but no case has one of "
                f"those relations (theirs: {sorted(str(r) for r in relations)})",
            )
    if (pools.needs_model or data.prompt_style == "chat") and tokenizer is not None:
        if not getattr(tokenizer, "chat_template", None):
            why = "prompt_style: chat" if data.prompt_style == "chat" else "the 'generated' prompt source"
            result.fail("model", f"{why} needs a tokenizer with a chat template, and this model's has none")


def _check_model_settings(recipe, config, model_path: str, layout, done, result: Preflight) -> None:
    """Everything checked against the model's config: editor, stage-2 config, alignment module, LoRA."""
    from edit_grpo_trl.stage2.layer_features import count_decoder_layers

    meta_model = _meta_model(config)
    result.num_layers = count_decoder_layers(meta_model)
    if recipe.editor.name in ("none", "external") or not done("edit"):
        _check_editor(recipe, config, model_path, result)
    else:  # stage 1 ran: training takes the layer its manifest records
        from edit_grpo_trl.stage2.training import edited_layer

        layer = edited_layer(str(layout.edited_model))
        result.edited_layers = [layer] if layer is not None else []
    if not done("train"):
        _check_wise_stage2(recipe, result)
        _check_training(recipe, meta_model, layout.training, result)
        _check_early_stop(recipe, result)
        _check_null_space(recipe, result)
        _check_lora(recipe, meta_model, result)


def check_run(
    recipe: PipelineRecipe,
    model_path: str,
    layout: RunLayout,
    load_cases: Callable[[], list],
    done: Callable[[str], bool],
) -> Preflight:
    """Every check whose stage has not run yet; raises :class:`RecipeError` listing all problems found.

    ``load_cases`` returns the run's edit cases (read from the data source, or the saved ones);
    ``done(stage)`` says whether a stage has finished (its checks are then skipped).
    """
    from transformers import AutoTokenizer

    result = Preflight()
    try:
        config = _model_config(model_path)
    except Exception as error:  # no such folder or Hub id, or no network: the data is still checked below
        result.fail("model.model_name_or_path", f"cannot read the model's config at {model_path!r}: {error}")
        config = None
    if config is not None:
        _check_model_settings(recipe, config, model_path, layout, done, result)
    if not done("agt_data"):
        tokenizer = None
        if config is not None and (
            recipe.data.train_prompts.needs_model or recipe.data.prompt_style == "chat"
        ):
            try:
                tokenizer = AutoTokenizer.from_pretrained(model_path)
            except Exception as error:
                result.fail("model", f"cannot load the tokenizer of {model_path!r}: {error}")
        try:
            cases = load_cases()
        except Exception as error:  # DataFileError, RecordError, ...: each names the file and record
            result.fail(f"data.source {recipe.data.source!r}", error)
        else:
            _check_data(recipe, cases, tokenizer, result)
    if result.problems:
        listing = "\n".join(f"  - {problem}" for problem in result.problems)
        raise RecipeError(
            f"the recipe cannot run ({len(result.problems)} problem(s)), nothing was started:\n{listing}"
        )
    logger.info(
        "preflight: %d decoder layers, editor layers %s, alignment layer %s, %s case(s): settings fit",
        result.num_layers,
        result.edited_layers or "-",
        result.alignment_layer,
        result.cases if result.cases is not None else "saved",
    )
    return result
