"""Finding the alignment module and capturing its inputs and output gradients (trainer plumbing).

The ghost cosine (``ghost.py``) needs, for one linear module, every position's input ``x`` and the
gradient ``delta`` of the summed log-likelihoods with respect to its output. A forward hook records
``x`` and swaps the module's output for a detached leaf tensor that requires grad: the backward then
stops at that leaf (no graph or work below the alignment layer, no parameter gradients touched), and
``torch.autograd.grad`` with respect to the leaves returns ``delta``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn


class AlignmentModuleError(ValueError):
    """The configured alignment layer or module does not exist in the model."""


def _unwrap(model: nn.Module) -> nn.Module:
    # DeepSpeed engines and DDP keep the model in `.module`; PEFT models keep theirs deeper but expose
    # `named_modules` through the wrapper, so the search below sees the LoRA-wrapped names.
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def count_decoder_layers(model: nn.Module) -> int:
    config = getattr(_unwrap(model), "config", None)
    for attribute in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, attribute, None)
        if isinstance(value, int):
            return value
    raise AlignmentModuleError("cannot tell how many decoder layers the model has: its config names none")


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of decoder layers (``model.layers`` for Llama/Qwen, ``transformer.h`` for GPT-2)."""
    num_layers = count_decoder_layers(model)
    candidates = [
        (name, module)
        for name, module in _unwrap(model).named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) == num_layers
        and name.split(".")[-1] in ("layers", "h")
    ]
    if not candidates:
        raise AlignmentModuleError(
            f"found no list of {num_layers} decoder layers named 'layers' or 'h' in {type(_unwrap(model)).__name__}"
        )
    return candidates[0]


def resolve_alignment_module(model: nn.Module, layer: int, module_name: str) -> tuple[str, nn.Module]:
    """The module ``<decoder layers>.{layer}.{module_name}``, with an error that says what to change."""
    layers_name, layers = find_decoder_layers(model)
    if not isinstance(layer, int) or not 0 <= layer < len(layers):
        raise AlignmentModuleError(
            f"alignment_layer={layer} is past the model: it has {len(layers)} decoder layers "
            f"(valid: 0-{len(layers) - 1}); set alignment_layer to the layer your stage-1 editor wrote"
        )
    try:
        module = layers[layer].get_submodule(module_name)
    except AttributeError:
        available = sorted(
            name for name, sub in layers[layer].named_modules() if isinstance(sub, nn.Linear) and name
        )
        raise AlignmentModuleError(
            f"no module {module_name!r} in decoder layer {layer} ({layers_name}.{layer}); its linear modules are: "
            f"{', '.join(available)}; set alignment_module to one of them"
        ) from None
    return f"{layers_name}.{layer}.{module_name}", module


@dataclass
class CapturedFeatures:
    """What one hooked forward recorded: the module's inputs and the leaves standing for its outputs."""

    inputs: list[torch.Tensor] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)


@contextlib.contextmanager
def capture_module_features(module: nn.Module) -> Iterator[CapturedFeatures]:
    """Record inputs and detached-leaf outputs of every forward call of ``module`` inside the block."""
    captured = CapturedFeatures()

    def hook(_module, args, output):
        hidden_input = args[0] if args else None
        if not isinstance(output, torch.Tensor) or not isinstance(hidden_input, torch.Tensor):
            raise AlignmentModuleError(
                f"the alignment module {type(_module).__name__} must map one tensor to one tensor (a linear layer)"
            )
        leaf = output.detach().requires_grad_(True)
        captured.inputs.append(hidden_input.detach())
        captured.outputs.append(leaf)
        return leaf

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def output_gradients(total: torch.Tensor, captured: CapturedFeatures) -> list[torch.Tensor]:
    """``d total / d output`` for every captured output leaf (zeros where the total does not depend on it)."""
    return list(torch.autograd.grad(total, captured.outputs, allow_unused=True, materialize_grads=True))
