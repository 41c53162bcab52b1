"""What ROME, MEMIT and AlphaEdit share: their settings, context templates and key statistics.

Field names follow EasyEdit's hparams files, so a researcher can carry settings across.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from edit_grpo_trl.editors.activations import FACT_TOKENS
from edit_grpo_trl.editors.arch import EditorConfigError, validate_layers, validate_template
from edit_grpo_trl.editors.base import Editor, EditorHParams
from edit_grpo_trl.editors.context import DEFAULT_STARTS, generate_context_templates
from edit_grpo_trl.editors.values import ValueSettings


@dataclass
class LocateHParams(EditorHParams):
    """Settings of the locate-then-edit editors (ROME, MEMIT, AlphaEdit)."""

    layer_module_tmp: str = "model.layers.{}"
    mlp_module_tmp: str = "model.layers.{}.mlp"
    fact_token: str = "subject_last"
    v_num_grad_steps: int = 25
    v_lr: float = 0.5
    v_loss_layer: int | None = None  # None: the last layer
    v_weight_decay: float = 1e-3
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    kl_prompt: str = "{} is a"
    context_template_length_params: list[list[int]] = field(default_factory=lambda: [[5, 10], [10, 10]])
    context_starts: list[str] = field(default_factory=lambda: list(DEFAULT_STARTS))
    context_seed: int = 0
    # Key statistics (second moment of the MLP keys): the corpus, how many texts, the dtype kept.
    mom2_dataset: str = "wikipedia"
    mom2_n_samples: int = 100000
    mom2_dtype: str = "float32"

    def validate(self, config) -> None:
        super().validate(config)
        validate_template(config, "layer_module_tmp", self.layer_module_tmp)
        validate_template(config, "mlp_module_tmp", self.mlp_module_tmp)
        if self.fact_token not in FACT_TOKENS:
            raise EditorConfigError(
                f"fact_token {self.fact_token!r} is not supported; use one of {FACT_TOKENS}"
            )
        if self.v_loss_layer is not None:
            validate_layers(config, [self.v_loss_layer], "v_loss_layer")
        if "{}" not in self.kl_prompt:
            raise EditorConfigError(f"kl_prompt {self.kl_prompt!r} needs a '{{}}' where the subject goes")
        for pair in self.context_template_length_params:
            if len(pair) != 2 or min(pair) < 0:
                raise EditorConfigError(
                    f"context_template_length_params: each entry is [length, count], got {pair!r}"
                )
        if self.mom2_dtype not in ("float32", "float64"):
            raise EditorConfigError(f"mom2_dtype must be float32 or float64, got {self.mom2_dtype!r}")

    def value_settings(self) -> ValueSettings:
        return ValueSettings(
            num_grad_steps=self.v_num_grad_steps,
            lr=self.v_lr,
            loss_layer=self.v_loss_layer,
            weight_decay=self.v_weight_decay,
            clamp_norm_factor=self.clamp_norm_factor,
            kl_factor=self.kl_factor,
            kl_prompt=self.kl_prompt,
            fact_token=self.fact_token,
        )


class LocateEditor(Editor):
    """Base of ROME/MEMIT/AlphaEdit: context templates (made once per editor) and key statistics per layer."""

    hparams: LocateHParams

    def __init__(self, hparams: LocateHParams, key_statistics: Mapping[int, torch.Tensor] | None = None):
        super().__init__(hparams)
        self.key_statistics = dict(key_statistics or {})
        self._templates: list[str] | None = None

    def context_templates(self, model, tokenizer) -> list[str]:
        if self._templates is None:
            self._templates = generate_context_templates(
                model,
                tokenizer,
                self.hparams.context_template_length_params,
                self.hparams.context_starts,
                self.hparams.context_seed,
            )
        return self._templates

    def second_moment(self, layer: int, device) -> torch.Tensor:
        if layer not in self.key_statistics:
            raise EditorConfigError(
                f"{self.name} needs the key statistics (second moment of the MLP keys) of layer {layer}; "
                f"have layers {sorted(self.key_statistics)}. Compute them with "
                "edit_grpo_trl.editors.stats.load_key_statistics"
            )
        return self.key_statistics[layer].to(device)
