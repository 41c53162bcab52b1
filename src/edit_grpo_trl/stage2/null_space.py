"""Null-space projection of stage-2 updates on the weights the stage-1 editor wrote (``null_space_projection``).

AlphaEdit writes an edit ``Delta`` into an MLP output projection ``W`` (``down_proj``) only inside the null
space of the *preserved keys* ``K0``, the projection's inputs on ordinary text: ``Delta k0 ~ 0``, so
``(W + Delta) k0 = W k0`` and whatever the model computed from those keys is kept. Stage 2 can do the same
for its own updates of those weights: after every optimizer step, each edited ``down_proj`` weight is put
back to ``W_before + (W_after - W_before) P``, with ``P`` AlphaEdit's projector onto the eigenvectors of
the keys' second moment ``E[k0 k0^T]`` whose eigenvalues are below ``threshold``
(:func:`edit_grpo_trl.editors.linalg.null_space_projector`).

The *update* is projected, not the gradient: Adam divides each entry by its own running scale and weight
decay shrinks ``W`` itself, so a projected gradient does not give a projected update. The bias of a
projected module (GPT-2's ``c_proj``) is frozen: a bias update moves the output for every key.

The keys are those of the model being trained (the edited checkpoint), over the corpus and sample count
the stage-1 editor used (``mom2_dataset``, ``mom2_n_samples``, ``mom2_dtype`` in the edit manifest), and
are computed and cached by the editors' own :func:`~edit_grpo_trl.editors.stats.load_key_statistics`.
Only the edited ``down_proj`` weights are projected; with ``train_scope`` other than ``edited_modules``
the rest of the model still trains freely.

It cannot work where the optimizer does not step the model's own weight tensors: DeepSpeed (its fp32
master copy would overwrite the projection) and FSDP (flattened shards), LoRA (the update is ``B A``,
not a free matrix) and WISE (the edited ``down_proj`` is a routed side memory). Those are refused, at
preflight and again here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from edit_grpo_trl.editors.arch import architecture_for, down_proj_weight, get_module
from edit_grpo_trl.editors.linalg import null_space_projector
from edit_grpo_trl.editors.stats import load_key_statistics

logger = logging.getLogger(__name__)


class NullSpaceError(ValueError):
    """The null-space projection cannot run as asked."""


@dataclass(frozen=True)
class KeyStatisticsSource:
    """Where the preserved keys come from: the stage-1 editor's corpus settings."""

    corpus: str
    n_samples: int
    dtype: str = "float32"

    @classmethod
    def from_hyperparameters(cls, hyperparameters: Mapping[str, Any], where: str) -> KeyStatisticsSource:
        corpus = hyperparameters.get("mom2_dataset")
        if not corpus:
            raise NullSpaceError(
                f"null_space_projection needs the corpus of preserved keys, but {where} names no mom2_dataset "
                "(an editor without key statistics, e.g. FT): set training.null_space_projection: false"
            )
        return cls(
            str(corpus),
            int(hyperparameters.get("mom2_n_samples", 100000)),
            str(hyperparameters.get("mom2_dtype", "float32")),
        )


def preserved_key_projectors(
    model,
    tokenizer,
    layers: Sequence[int],
    source: KeyStatisticsSource,
    threshold: float,
    model_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> dict[int, torch.Tensor]:
    """AlphaEdit's projector ``P`` per layer, from the key statistics of ``model`` (cached on disk)."""
    statistics = load_key_statistics(
        model,
        tokenizer,
        list(layers),
        source.corpus,
        source.n_samples,
        source.dtype,
        cache_dir=cache_dir,
        model_dir=model_dir,
        show_progress=False,
    )
    projectors = {}
    for layer in layers:
        projector = null_space_projector(statistics[layer], threshold)
        dimension = round(projector.trace().item())
        if dimension < 1:
            raise NullSpaceError(
                f"layer {layer}: no eigenvalue of the preserved keys' second moment is below "
                f"null_space_threshold {threshold}; the null space is empty, raise the threshold"
            )
        logger.info(
            "null-space projection at layer %d: %d of %d key dimensions free",
            layer,
            dimension,
            len(projector),
        )
        projectors[layer] = projector.float()
    return projectors


class NullSpaceProjection(TrainerCallback):
    """After each optimizer step, ``W <- W_before + (W - W_before) P`` for every ``(W, P)`` pair.

    ``weights``: ``(out, in)`` views of the projected weights (GPT-2's transposed Conv1D weight works as a
    view) with their ``(in, in)`` projectors.
    """

    def __init__(self, weights: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.weights = [(weight, projector.to(weight.device)) for weight, projector in weights]
        self._before: list[torch.Tensor] | None = None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._before = [weight.detach().clone() for weight, _ in self.weights]
        return control

    @torch.no_grad()
    def on_optimizer_step(self, args, state, control, **kwargs):
        if self._before is None:
            return control
        for (weight, projector), before in zip(self.weights, self._before, strict=True):
            update = (weight.float() - before.float()) @ projector
            weight.copy_((before.float() + update).to(weight.dtype))
        self._before = None
        return control


def refuse_unsupported(trainer) -> None:
    """Raise where the optimizer does not step the model's own weights (see the module docstring)."""
    if getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "is_fsdp_enabled", False):
        raise NullSpaceError(
            "null_space_projection projects the optimizer's update of the model's weights in place; under "
            "DeepSpeed or FSDP the optimizer steps a master or sharded copy that would undo it: launch without "
            "them (plain DDP works) or set null_space_projection: false"
        )
    if hasattr(trainer.model, "peft_config"):
        raise NullSpaceError(
            "null_space_projection projects full weight updates; a LoRA update B A is not a free matrix: "
            "set lora.enabled: false or null_space_projection: false"
        )


def attach_null_space_projection(
    trainer,
    layers: Sequence[int],
    source: KeyStatisticsSource,
    threshold: float,
    model_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> NullSpaceProjection:
    """Project every update of the edited layers' ``down_proj`` weights onto the preserved keys' null space.

    Call it after the trainer is built and before it trains (the bias is frozen before the optimizer is made).
    """
    refuse_unsupported(trainer)
    if not layers:
        raise NullSpaceError(
            "null_space_projection protects the weights the stage-1 editor wrote, but the edit manifest names no "
            "edited layer (an unedited model?): set null_space_projection: false"
        )
    model = trainer.model
    arch = architecture_for(model.config)
    layers = sorted(set(layers))
    with trainer.accelerator.main_process_first():  # one process computes and caches; the others read it
        projectors = preserved_key_projectors(
            model, trainer.processing_class, layers, source, threshold, model_dir, cache_dir
        )
    weights = []
    for layer in layers:
        module = get_module(model, arch.down_proj(layer))
        if getattr(module, "bias", None) is not None:
            module.bias.requires_grad_(False)
        weights.append((down_proj_weight(model, arch, layer), projectors[layer]))
    callback = NullSpaceProjection(weights)
    trainer.add_callback(callback)
    return callback
