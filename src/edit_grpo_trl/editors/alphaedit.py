"""AlphaEdit (Fang et al., 2025): MEMIT's update projected onto the null space of the preserved keys.

The preserved knowledge is summarized by the keys' second moment ``K0 K0^T``; its eigenvectors with small
eigenvalues span directions that ordinary text barely uses. The projector ``P`` onto them is computed once
per layer, and every update has the form ``Delta = Delta P``, so outputs for preserved keys stay as they were.
In sequential mode the keys of earlier edits are accumulated (``K_p K_p^T``) and later updates also leave them
alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from edit_grpo_trl.data.cases import EditCase
from edit_grpo_trl.editors.activations import subject_keys
from edit_grpo_trl.editors.arch import Architecture, EditorConfigError, add_to_down_proj
from edit_grpo_trl.editors.linalg import alphaedit_update, null_space_projector
from edit_grpo_trl.editors.locate import LocateEditor
from edit_grpo_trl.editors.memit import MemitHParams, layer_residuals, target_hidden_states


@dataclass
class AlphaEditHParams(MemitHParams):
    nullspace_threshold: float = 2e-2
    L2: float = 10.0  # noqa: N815 (EasyEdit's field name)

    def validate(self, config) -> None:
        super().validate(config)
        if self.nullspace_threshold <= 0 or self.L2 < 0:
            raise EditorConfigError(
                f"nullspace_threshold must be > 0 and L2 >= 0, got {self.nullspace_threshold}, {self.L2}"
            )


class AlphaEditEditor(LocateEditor):
    name = "alphaedit"
    hparams_class = AlphaEditHParams
    hparams: AlphaEditHParams

    def __init__(self, hparams: AlphaEditHParams, key_statistics=None):
        super().__init__(hparams, key_statistics)
        self._projectors: dict[int, torch.Tensor] = {}
        self.previous_keys_moment: dict[int, torch.Tensor] = {}

    def statistics_layers(self) -> list[int]:
        return list(self.hparams.layers)

    def projector(self, layer: int, device) -> torch.Tensor:
        if layer not in self._projectors:
            projector = null_space_projector(
                self.second_moment(layer, device), self.hparams.nullspace_threshold
            )
            if projector.trace() < 0.5:
                raise EditorConfigError(
                    f"layer {layer}: no eigenvalue of the key second moment is below nullspace_threshold "
                    f"{self.hparams.nullspace_threshold}; the null space is empty, raise the threshold"
                )
            self._projectors[layer] = projector
        return self._projectors[layer]

    def reset(self) -> None:
        """Forget the keys of earlier edits (start a new edit sequence)."""
        self.previous_keys_moment.clear()

    def _edit_batch(
        self, model, tokenizer, cases: Sequence[EditCase], arch: Architecture
    ) -> dict[int, torch.Tensor]:
        device = next(model.parameters()).device
        projectors = {layer: self.projector(layer, device) for layer in self.hparams.layers}
        targets = target_hidden_states(self, model, tokenizer, cases, arch)
        deltas = {}
        for position, layer in enumerate(self.hparams.layers):
            keys, residuals = layer_residuals(self, model, tokenizer, cases, arch, targets, position)
            previous = self.previous_keys_moment.get(layer)
            if previous is None:
                previous = torch.zeros_like(projectors[layer])
            delta = alphaedit_update(keys, residuals, projectors[layer], previous, self.hparams.L2)
            add_to_down_proj(model, arch, layer, delta)
            deltas[layer] = delta
        # Remember these facts' keys (as the edited model now computes them) for the edits to come.
        templates = self.context_templates(model, tokenizer)
        for layer in self.hparams.layers:
            keys = subject_keys(
                model, tokenizer, arch.down_proj(layer), cases, templates, self.hparams.fact_token
            ).double()
            moment = keys.T @ keys
            self.previous_keys_moment[layer] = self.previous_keys_moment.get(layer, 0) + moment
        return deltas
