"""Architecture map: where the MLP output projection and its neighbours live in each supported model.

The locate-then-edit editors (ROME, MEMIT, AlphaEdit) and FT-M touch one named weight per layer: the MLP's
output projection, whose *input* is the "key" and whose *output* is the "value" of the key-value memory
view of an MLP. Every name they use is checked here against the model's config, before a weight is loaded
or a gradient is taken, so a typo or an out-of-range layer fails in a second with the valid choices.

GPT-2 stores its projections as ``Conv1D`` whose weight is ``(in, out)``, the transpose of ``nn.Linear``;
:func:`down_proj_weight` and :func:`add_to_down_proj` hide that, so the editors' math always sees
``(out, in)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn


class EditorConfigError(ValueError):
    """Editor settings that do not fit the model (layer out of range, unknown module name, ...)."""


@dataclass(frozen=True)
class Architecture:
    """Module-name templates of one model family (``{}`` stands for the layer index)."""

    family: str
    model_types: tuple[str, ...]
    layer_template: str
    mlp_template: str
    down_proj_template: str
    attention_template: str
    final_norm: str
    lm_head: str
    # GPT-2's Conv1D keeps its weight as (in, out).
    transposed_down_proj: bool = False

    def layer(self, index: int) -> str:
        return self.layer_template.format(index)

    def mlp(self, index: int) -> str:
        return self.mlp_template.format(index)

    def down_proj(self, index: int) -> str:
        return self.down_proj_template.format(index)

    def templates(self) -> dict[str, str]:
        """The role of each layer-module template, for error messages and validation."""
        return {
            "layer_module_tmp": self.layer_template,
            "mlp_module_tmp": self.mlp_template,
            "rewrite_module_tmp": self.down_proj_template,
            "attn_module_tmp": self.attention_template,
        }


def _decoder_family(family: str, model_types: tuple[str, ...]) -> Architecture:
    return Architecture(
        family=family,
        model_types=model_types,
        layer_template="model.layers.{}",
        mlp_template="model.layers.{}.mlp",
        down_proj_template="model.layers.{}.mlp.down_proj",
        attention_template="model.layers.{}.self_attn",
        final_norm="model.norm",
        lm_head="lm_head",
    )


ARCHITECTURES: tuple[Architecture, ...] = (
    _decoder_family("Llama", ("llama",)),
    _decoder_family("Mistral", ("mistral",)),
    _decoder_family("Qwen2", ("qwen2",)),
    _decoder_family("Qwen3", ("qwen3",)),
    Architecture(
        family="GPT-2",
        model_types=("gpt2",),
        layer_template="transformer.h.{}",
        mlp_template="transformer.h.{}.mlp",
        down_proj_template="transformer.h.{}.mlp.c_proj",
        attention_template="transformer.h.{}.attn",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
        transposed_down_proj=True,
    ),
    Architecture(
        family="GPT-J",
        model_types=("gptj",),
        layer_template="transformer.h.{}",
        mlp_template="transformer.h.{}.mlp",
        down_proj_template="transformer.h.{}.mlp.fc_out",
        attention_template="transformer.h.{}.attn",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
    ),
)

_BY_MODEL_TYPE = {model_type: arch for arch in ARCHITECTURES for model_type in arch.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def architecture_for(config) -> Architecture:
    """The architecture of a transformers config (or anything with ``model_type``)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in _BY_MODEL_TYPE:
        raise EditorConfigError(
            f"model type {model_type!r} is not supported by the editors; supported: "
            f"{', '.join(supported_model_types())}"
        )
    return _BY_MODEL_TYPE[model_type]


def num_layers(config) -> int:
    """Decoder layer count from the config (``num_hidden_layers``; GPT-2/GPT-J alias it to ``n_layer``)."""
    for attribute in ("num_hidden_layers", "n_layer"):
        value = getattr(config, attribute, None)
        if isinstance(value, int):
            return value
    raise EditorConfigError(f"the {getattr(config, 'model_type', '?')} config states no layer count")


def validate_layers(config, layers: Iterable[int], field: str = "layers") -> list[int]:
    """Check layer indices against the config; the error names the model's valid range."""
    arch = architecture_for(config)
    count = num_layers(config)
    checked = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise EditorConfigError(f"{field}: layer indices must be integers, got {layer!r}")
        if layer < 0:
            raise EditorConfigError(
                f"{field}: layer {layer} is negative: {arch.family} has {count} layers (0-{count - 1})"
            )
        if layer >= count:
            raise EditorConfigError(
                f"{field}: layer {layer} is past the model: {arch.family} has {count} layers (0-{count - 1})"
            )
        checked.append(layer)
    if not checked:
        raise EditorConfigError(f"{field}: no layer given; {arch.family} has {count} layers (0-{count - 1})")
    return checked


def validate_template(config, role: str, template: str) -> str:
    """Check a module-name template (``rewrite_module_tmp`` etc.) against the model family's naming.

    A template may end in ``.weight`` (EasyEdit's FT configs name the parameter); that suffix is dropped.
    """
    arch = architecture_for(config)
    expected = arch.templates().get(role)
    if expected is None:
        raise EditorConfigError(f"unknown module role {role!r}; known: {', '.join(arch.templates())}")
    name = template.removesuffix(".weight")
    if name != expected:
        raise EditorConfigError(
            f"{role}: module {template!r} does not exist in {arch.family} models; "
            f"expected {expected!r} (layers 0-{num_layers(config) - 1})"
        )
    return name


def get_module(model: nn.Module, name: str) -> nn.Module:
    """A submodule by dotted name, with an error naming what was missing."""
    try:
        return model.get_submodule(name)
    except AttributeError as error:
        raise EditorConfigError(f"the model has no module {name!r}: {error}") from error


def down_proj_weight(model: nn.Module, arch: Architecture, layer: int) -> torch.Tensor:
    """The output projection's weight as ``(out, in)`` (a view: GPT-2's Conv1D weight transposed)."""
    weight = get_module(model, arch.down_proj(layer)).weight
    return weight.T if arch.transposed_down_proj else weight


@torch.no_grad()
def add_to_down_proj(model: nn.Module, arch: Architecture, layer: int, delta: torch.Tensor) -> None:
    """Add an ``(out, in)`` update to a layer's output projection, in the weight's own dtype and layout."""
    weight = get_module(model, arch.down_proj(layer)).weight
    delta = delta.T if arch.transposed_down_proj else delta
    if delta.shape != weight.shape:
        raise EditorConfigError(
            f"update of shape {tuple(delta.shape)} does not fit {arch.down_proj(layer)} "
            f"of shape {tuple(weight.shape)}"
        )
    weight.add_(delta.to(device=weight.device, dtype=weight.dtype))
