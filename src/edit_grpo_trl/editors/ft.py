"""FT-M: fine-tune one layer's MLP output projection with cross-entropy on the target tokens only.

The anchor prompt and the new object are fed teacher-forced; the loss masks every prompt token, so only the
object's tokens are learned (EasyEdit's ``objective_optimization: target_new``, the "FT-M" of its survey).
All other weights stay frozen. ``norm_constraint`` optionally keeps every weight within that distance of its
original value (an L-infinity box), as ROME's FT baseline does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from edit_grpo_trl.data.cases import EditCase
from edit_grpo_trl.editors.arch import Architecture, EditorConfigError, get_module
from edit_grpo_trl.editors.base import Editor, EditorHParams
from edit_grpo_trl.editors.tokens import encode, pad_id, pad_right, target_ids


@dataclass
class FTHParams(EditorHParams):
    num_steps: int = 25
    lr: float = 5e-4
    weight_decay: float = 0.0
    norm_constraint: float | None = None  # None/false: unconstrained

    def __post_init__(self) -> None:
        if self.norm_constraint is False:  # EasyEdit writes "norm_constraint: false"
            self.norm_constraint = None

    def validate(self, config) -> None:
        super().validate(config)
        if self.num_steps < 1 or self.lr <= 0:
            raise EditorConfigError(f"num_steps must be >= 1 and lr > 0, got {self.num_steps}, {self.lr}")
        if self.norm_constraint is not None and self.norm_constraint <= 0:
            raise EditorConfigError(f"norm_constraint must be positive or null, got {self.norm_constraint}")


def masked_target_batch(
    tokenizer, cases: Sequence[EditCase]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``prompt + new object`` ids, their attention mask, and labels that are -100 except on the object."""
    rows, label_rows = [], []
    for case in cases:
        prompt = encode(tokenizer, case.prompt)
        target = target_ids(tokenizer, case.new_object)
        rows.append(prompt + target)
        label_rows.append([-100] * len(prompt) + target)
    input_ids, attention_mask = pad_right(rows, pad_id(tokenizer))
    labels, _ = pad_right(label_rows, -100)
    return input_ids, attention_mask, labels


class FTEditor(Editor):
    name = "ft"
    hparams_class = FTHParams
    hparams: FTHParams

    def _edit_batch(
        self, model, tokenizer, cases: Sequence[EditCase], arch: Architecture
    ) -> dict[int, torch.Tensor]:
        device = next(model.parameters()).device
        weights = {layer: get_module(model, arch.down_proj(layer)).weight for layer in self.hparams.layers}
        originals = {layer: weight.detach().clone() for layer, weight in weights.items()}
        input_ids, attention_mask, labels = (t.to(device) for t in masked_target_batch(tokenizer, cases))
        frozen = [(p, p.requires_grad) for p in model.parameters()]
        for parameter, _ in frozen:
            parameter.requires_grad_(False)
        for weight in weights.values():
            weight.requires_grad_(True)
        optimizer = torch.optim.Adam(
            weights.values(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        try:
            for _ in range(self.hparams.num_steps):
                optimizer.zero_grad()
                logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
                # Position t predicts token t+1; only the object's tokens carry labels.
                loss = torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
                )
                loss.backward()
                optimizer.step()
                if self.hparams.norm_constraint is not None:
                    with torch.no_grad():
                        for layer, weight in weights.items():
                            bound = self.hparams.norm_constraint
                            weight.copy_(
                                torch.clamp(weight, originals[layer] - bound, originals[layer] + bound)
                            )
        finally:
            optimizer.zero_grad(set_to_none=True)
            for parameter, requires_grad in frozen:
                parameter.requires_grad_(requires_grad)
        deltas = {}
        for layer, weight in weights.items():
            delta = (weight.detach() - originals[layer]).float()
            deltas[layer] = delta.T if arch.transposed_down_proj else delta
        return deltas
