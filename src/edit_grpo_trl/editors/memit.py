"""MEMIT (Meng et al., 2023): many facts at once, spread over a range of layers.

For each case a target hidden state ``z`` is optimized at the output of the *last* layer of the range (the
residual stream at the subject's last token). Then, layer by layer from the lowest, the remaining gap
``z - h`` is split evenly over the layers still to go, and each layer's output projection takes its share
with the least-squares update ``R K^T (lambda C + K K^T)^-1`` that keeps outputs on typical keys (second
moment ``C``) in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from edit_grpo_trl.data.cases import EditCase
from edit_grpo_trl.editors.activations import bare_prompt_io, subject_keys
from edit_grpo_trl.editors.arch import Architecture, EditorConfigError, add_to_down_proj, num_layers
from edit_grpo_trl.editors.linalg import memit_update
from edit_grpo_trl.editors.locate import LocateEditor, LocateHParams
from edit_grpo_trl.editors.values import optimize_value


@dataclass
class MemitHParams(LocateHParams):
    mom2_update_weight: float = 15000.0

    def validate(self, config) -> None:
        super().validate(config)
        if sorted(set(self.layers)) != list(self.layers):
            raise EditorConfigError(f"layers must be increasing and distinct, got {self.layers}")
        if self.mom2_update_weight < 0:
            raise EditorConfigError(f"mom2_update_weight must be >= 0, got {self.mom2_update_weight}")


def target_hidden_states(editor: LocateEditor, model, tokenizer, cases, arch: Architecture) -> torch.Tensor:
    """Per case, the optimized residual stream at the last edited layer's output: ``(n, hidden)``."""
    templates = editor.context_templates(model, tokenizer)
    last_layer = arch.layer(editor.hparams.layers[-1])
    settings = editor.hparams.value_settings()
    targets = [
        optimize_value(
            model, tokenizer, case, last_layer, arch, templates, settings, num_layers(model.config)
        )
        for case in cases
    ]
    return torch.stack([t.target for t in targets])


def layer_residuals(
    editor: LocateEditor, model, tokenizer, cases, arch: Architecture, targets: torch.Tensor, position: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys at layer ``layers[position]`` and this layer's share of the gap to the targets."""
    layers = editor.hparams.layers
    templates = editor.context_templates(model, tokenizer)
    fact_token = editor.hparams.fact_token
    keys = subject_keys(model, tokenizer, arch.down_proj(layers[position]), cases, templates, fact_token)
    _, current = bare_prompt_io(model, tokenizer, arch.layer(layers[-1]), cases, fact_token)
    residuals = (targets.to(current.device) - current) / (len(layers) - position)
    return keys, residuals


class MemitEditor(LocateEditor):
    name = "memit"
    hparams_class = MemitHParams
    hparams: MemitHParams

    def statistics_layers(self) -> list[int]:
        return list(self.hparams.layers)

    def _edit_batch(
        self, model, tokenizer, cases: Sequence[EditCase], arch: Architecture
    ) -> dict[int, torch.Tensor]:
        device = next(model.parameters()).device
        for layer in self.hparams.layers:  # fail before optimizing anything
            self.second_moment(layer, device)
        targets = target_hidden_states(self, model, tokenizer, cases, arch)
        deltas = {}
        for position, layer in enumerate(self.hparams.layers):
            keys, residuals = layer_residuals(self, model, tokenizer, cases, arch, targets, position)
            delta = memit_update(
                keys, residuals, self.second_moment(layer, device), self.hparams.mom2_update_weight
            )
            add_to_down_proj(model, arch, layer, delta)
            deltas[layer] = delta
        return deltas
