"""Target injection: put the new object into an anchor group whose samples all miss it.

RL cannot learn an answer it never samples. After many sequential ROME edits a share of anchors is wrong,
every one of their ``G`` samples misses the new object, the group's rewards have no spread, and nothing
pulls the anchor toward it. With ``target_injection`` on, the last anchor completion of such a case is
replaced by the new object itself (``answers[0]``, written as the rewards read it), before logps and
rewards are computed. It is then scored, normalized and trained like any sample of the group: its reward
is the group's best, so its advantage is positive.

It is not a sample of the policy, so its gradient is weighted, as mixed-policy GRPO (LUFFY) does with
off-policy demonstrations, by a regularized importance weight ``w = p / (p + gamma)``, where ``p`` is the
policy's probability of the injected tokens (their geometric mean, detached) when it is injected:
a target the policy already finds likely is trained almost at full weight, an unlikely one gently.
``gamma = 0`` trains it unweighted. The weight multiplies the row's advantage in the loss, whichever
trainer computed that advantage, so TRL's GRPO baseline gets the switch exactly as Edit-GRPO does.

The decision is made over the whole generation batch (gathered from every process), so a case whose
anchor samples straddle two processes is injected once, by the process that holds its last anchor row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from accelerate.utils import gather_object

from edit_grpo_trl.answers import answer_token_ids
from edit_grpo_trl.roles import ANCHOR
from edit_grpo_trl.stage2.rewards import anchor_accuracy

WEIGHT_KEY = "injection_weight"


def rows_to_inject(case_ids: Sequence[Any], roles: Sequence[str], anchor_hits: Sequence[bool]) -> list[int]:
    """Rows whose completion becomes the target: per case whose anchor rows all missed, its last anchor row.

    ``anchor_hits[i]`` is whether row ``i``'s completion states the new object (ignored off anchor rows).
    """
    last_anchor: dict[Any, int] = {}
    hit: dict[Any, bool] = {}
    for row, (case_id, role, row_hit) in enumerate(zip(case_ids, roles, anchor_hits, strict=True)):
        if role != ANCHOR:
            continue
        last_anchor[case_id] = row
        hit[case_id] = hit.get(case_id, False) or bool(row_hit)
    return sorted(row for case_id, row in last_anchor.items() if not hit[case_id])


def importance_weight(mean_token_logp: torch.Tensor, gamma: float) -> torch.Tensor:
    """``p / (p + gamma)`` with ``p = exp(mean token log-prob)``; ``gamma = 0`` gives 1 (unweighted)."""
    if gamma == 0:
        return torch.ones_like(mean_token_logp)
    probability = mean_token_logp.exp()
    return probability / (probability + gamma)


class TargetInjectionMixin:
    """Target injection for a TRL ``GRPOTrainer`` (see the module docstring). Keyword arguments
    ``target_injection`` and ``target_injection_gamma``: unset, they come from ``args`` when it has them
    (:class:`~edit_grpo_trl.stage2.config.EditGRPOConfig`)."""

    def __init__(
        self,
        *args,
        target_injection: bool | None = None,
        target_injection_gamma: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        enabled = (
            target_injection
            if target_injection is not None
            else getattr(self.args, "target_injection", False)
        )
        gamma = (
            target_injection_gamma
            if target_injection_gamma is not None
            else getattr(self.args, "target_injection_gamma", 0.1)
        )
        if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0 <= gamma < math.inf:
            raise ValueError(f"target_injection_gamma must be a finite number >= 0, got {gamma!r}")
        if enabled and self.use_vllm:
            raise ValueError(
                "target_injection replaces sampled completions, but vLLM's importance-sampling correction "
                "weighs each by the probability vLLM sampled it with: turn use_vllm off or target_injection off"
            )
        self.target_injection, self.target_injection_gamma = bool(enabled), float(gamma)
        self._injection_inputs: list[dict[str, Any]] | None = None
        self._injected_rows: list[int] = []

    # ---------------------------------------------------------------- generation: swap in the targets
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if not (self.target_injection and self.model.training):
            return super()._generate_and_score_completions(inputs)
        self._injection_inputs = inputs
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._injection_inputs = None
        output[WEIGHT_KEY] = self._injection_weights(output, len(inputs))
        return output

    def _generate(self, prompts: list):
        result = super()._generate(prompts)
        inputs = self._injection_inputs
        if inputs is None:
            return result
        prompt_ids, completion_ids, tool_mask, completions, logprobs, *rest = result
        hits = anchor_accuracy(
            completions,
            [row["role"] for row in inputs],
            [row["answers"] for row in inputs],
            [row.get("answer_style") or "plain" for row in inputs],
            [row.get("answer_match") or "exact" for row in inputs],
        )
        chosen = rows_to_inject(
            gather_object([row["case_id"] for row in inputs]),
            gather_object([row["role"] for row in inputs]),
            gather_object([bool(hit) for hit in hits]),
        )
        start = self.accelerator.process_index * len(inputs)
        self._injected_rows = [row - start for row in chosen if start <= row < start + len(inputs)]
        for row in self._injected_rows:
            text, ids = self._target_completion(inputs[row], completions[row])
            completion_ids[row] = ids
            completions[row] = (
                text if isinstance(completions[row], str) else [{"role": "assistant", "content": text}]
            )
            if tool_mask is not None:
                tool_mask[row] = [1] * len(ids)
        return (prompt_ids, completion_ids, tool_mask, completions, logprobs, *rest)

    def _target_completion(self, row: dict[str, Any], sampled) -> tuple[str, list[int]]:
        text, ids = answer_token_ids(self.processing_class, row, f"case {row['case_id']!r}")
        # A chat turn ends; a plain completion is left open, as the model's own samples stop at the length limit
        # (unless truncated completions are masked out, where an open one would not be trained at all).
        if not isinstance(sampled, str) or self.args.mask_truncated_completions:
            ids = [*ids, self.eos_token_ids[0]]
        return text, ids

    def _injection_weights(self, output: dict[str, Any], num_local: int) -> torch.Tensor:
        """1 per local row, ``p / (p + gamma)`` on the injected ones; logs how many were injected.

        Every process runs the same one forward (a placeholder row when it injected nothing), so a
        ZeRO-3 parameter gather is never left waiting.
        """
        device = self.accelerator.device
        weights = torch.ones(num_local, device=device)
        rows = torch.tensor(self._injected_rows or [0], dtype=torch.long, device=device)
        input_ids = torch.cat([output["prompt_ids"][rows], output["completion_ids"][rows]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"][rows], output["completion_mask"][rows]], dim=1)
        logits_to_keep = output["completion_ids"].size(1)
        with torch.no_grad():
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model, input_ids, attention_mask, logits_to_keep, batch_size=len(rows)
            )
        mask = output["completion_mask"][rows].float()
        mean_logp = (logps.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if self._injected_rows:
            weights[rows] = importance_weight(mean_logp, self.target_injection_gamma)
        injected = self.accelerator.gather(torch.tensor([len(self._injected_rows)], device=device)).sum()
        self._metrics["train"]["injection/rows"].append(injected.item())
        if self._injected_rows:
            self._metrics["train"]["injection/weight"].append(weights[rows].mean().item())
        return weights

    # ---------------------------------------------------------------- loss: weigh the injected rows
    def _compute_loss(self, model, inputs):
        weights = inputs.get(WEIGHT_KEY)
        if weights is not None:
            advantages = inputs["advantages"]
            weights = weights.to(advantages.dtype).view(-1, *([1] * (advantages.dim() - 1)))
            inputs = {**inputs, "advantages": advantages * weights}
        return super()._compute_loss(model, inputs)
