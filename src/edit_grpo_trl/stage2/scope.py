"""Which weights stage 2 trains (``train_scope``): all, or only where the stage-1 editor wrote.

Full fine-tuning lets a hundred new facts move features every other fact shares. The editors wrote each
fact into a few layers (ROME: one ``down_proj``; MEMIT: a range); restricting stage 2 to those weights keeps
the rest of the model, and with it most unrelated knowledge, exactly as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import nn

from edit_grpo_trl.stage2.layer_features import AlignmentModuleError, find_decoder_layers

logger = logging.getLogger(__name__)


def scope_prefixes(model: nn.Module, scope: str, layers: Sequence[int], module_name: str) -> list[str]:
    """The module-name prefixes whose parameters a scope trains (empty for ``"all"``: everything)."""
    if scope == "all":
        return []
    if not layers:
        raise AlignmentModuleError(
            f"train_scope {scope!r} trains the layers the stage-1 editor wrote, but the model's edit manifest "
            "names none (an unedited or external checkpoint): use train_scope 'all'"
        )
    layers_name, decoder_layers = find_decoder_layers(model)
    bad = [layer for layer in layers if not 0 <= layer < len(decoder_layers)]
    if bad:
        raise AlignmentModuleError(
            f"train_scope: layer(s) {bad} are past the model's {len(decoder_layers)} decoder layers"
        )
    prefixes = [f"{layers_name}.{layer}" for layer in sorted(set(layers))]
    if scope == "edited_modules":
        prefixes = [f"{prefix}.{module_name}" for prefix in prefixes]
    return prefixes


def apply_train_scope(model: nn.Module, scope: str, layers: Sequence[int], module_name: str) -> int:
    """Freeze every parameter outside the scope; returns how many parameters still train."""
    prefixes = scope_prefixes(model, scope, layers, module_name)
    if not prefixes:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainable = 0
    for name, parameter in model.named_parameters():
        keep = any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)
        parameter.requires_grad_(keep)
        trainable += parameter.numel() if keep else 0
    if trainable == 0:
        raise AlignmentModuleError(
            f"train_scope {scope!r}: no parameter under {prefixes} (module {module_name!r})"
        )
    logger.info("train_scope %s: %d parameters train, under %s", scope, trainable, prefixes)
    return trainable


def lora_layers(scope: str, layers: Sequence[int]) -> list[int] | None:
    """LoRA's ``layers_to_transform`` for a scope (None: every layer)."""
    return None if scope == "all" else sorted(set(layers))
