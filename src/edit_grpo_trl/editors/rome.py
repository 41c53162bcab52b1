"""ROME (Meng et al., 2022): one fact per rank-one update of one MLP output projection.

For each case: the key ``k*`` is the projection's input at the subject's last token, averaged over context
templates; the target value ``v*`` is optimized (``values.optimize_value``) at the MLP output of the same
layer; the update ``(v* - W k) u^T / (u . k)`` with ``u = k*`` (or ``C^-1 k*`` with ``mom2_adjustment``) makes
the projection output ``v*`` at the anchor's subject key and touches only inputs along ``u``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from edit_grpo_trl.data.cases import EditCase
from edit_grpo_trl.editors.activations import bare_prompt_io, subject_keys
from edit_grpo_trl.editors.arch import Architecture, EditorConfigError, add_to_down_proj, num_layers
from edit_grpo_trl.editors.linalg import rank_one_update, rome_key_direction
from edit_grpo_trl.editors.locate import LocateEditor, LocateHParams
from edit_grpo_trl.editors.values import optimize_value


@dataclass
class RomeHParams(LocateHParams):
    # EasyEdit ships ROME for Llama/Qwen/Mistral without the second-moment adjustment (GPT-2 XL with it).
    mom2_adjustment: bool = False

    def validate(self, config) -> None:
        super().validate(config)
        if len(self.layers) != 1:
            raise EditorConfigError(f"ROME edits exactly one layer; got layers {self.layers}")


class RomeEditor(LocateEditor):
    name = "rome"
    hparams_class = RomeHParams
    supports_batch = False
    hparams: RomeHParams

    def statistics_layers(self) -> list[int]:
        return list(self.hparams.layers) if self.hparams.mom2_adjustment else []

    def _edit_batch(
        self, model, tokenizer, cases: Sequence[EditCase], arch: Architecture
    ) -> dict[int, torch.Tensor]:
        (layer,) = self.hparams.layers
        (case,) = cases
        device = next(model.parameters()).device
        templates = self.context_templates(model, tokenizer)
        fact_token = self.hparams.fact_token
        down_proj = arch.down_proj(layer)
        key_star = subject_keys(model, tokenizer, down_proj, [case], templates, fact_token)[0]
        second_moment = self.second_moment(layer, device) if self.hparams.mom2_adjustment else None
        direction = rome_key_direction(key_star, second_moment)
        value = optimize_value(
            model,
            tokenizer,
            case,
            down_proj,
            arch,
            templates,
            self.hparams.value_settings(),
            num_layers(model.config),
        )
        # The update must hit the target at the key the anchor prompt itself produces.
        bare_key, bare_value = bare_prompt_io(model, tokenizer, down_proj, [case], fact_token)
        delta = rank_one_update(direction, bare_key[0], bare_value[0], value.target.to(device))
        add_to_down_proj(model, arch, layer, delta)
        return {layer: delta}
