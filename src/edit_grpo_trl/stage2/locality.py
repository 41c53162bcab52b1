"""The dense locality loss: keep the pre-edit answers of unedited facts at every training step.

GRPO's own locality rows protect little. A case's locality row is sampled ``G`` times at low entropy;
once its fact flips, every sample is wrong, the group has no spread, its advantage is 0, and nothing
pulls the fact back. This term gives a signal that does not depend on sampling: at every micro-batch it
adds

    loss += locality_coef * mean NLL(pre-edit answer | locality prompt)

over ``locality_batch_size`` prompts of the *locality pool* (training locality probes no case evaluates,
answered by the pre-edit model when the AGT data was built). It sits outside the group normalization, so
it adds to the policy gradient instead of competing inside a group. Cross-entropy on the pre-edit answer is
the top-1 form of a KL to the starting model on those prompts, without keeping a reference model.

:class:`LocalityLossMixin` adds it to any TRL trainer's ``compute_loss``: Edit-GRPO, vanilla GRPO and SFT
use the same term, so comparisons between them stay fair.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from trl import SFTTrainer

from edit_grpo_trl.answers import answer_token_ids

IGNORE_INDEX = -100


def teacher_forced_batch(
    prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``labels`` for prompt + target rows, right-padded; only the
    target tokens carry labels."""
    width = max(len(p) + len(t) for p, t in zip(prompts, targets, strict=True))
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    labels = torch.full((len(prompts), width), IGNORE_INDEX, dtype=torch.long)
    for row, (prompt, target) in enumerate(zip(prompts, targets, strict=True)):
        ids = torch.tensor([*prompt, *target], dtype=torch.long)
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
        labels[row, len(prompt) : len(ids)] = ids[len(prompt) :]
    return input_ids, attention_mask, labels


def answer_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the labelled tokens (position t predicts token t + 1), each row
    weighted equally however long its answer."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    per_token = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    counted = (labels != IGNORE_INDEX).float()
    per_row = (per_token * counted).sum(dim=1) / counted.sum(dim=1).clamp(min=1.0)
    return per_row[counted.sum(dim=1) > 0].mean()


class LocalityPool:
    """The pool's rows, tokenized once and served in a seeded order that visits every row before repeating.

    ``rows``: ``{"prompt", "answers", "answer_style"}``, as :func:`edit_grpo_trl.data.agt.build_agt_records`
    returns them in ``locality_pool`` (a chat prompt is a list of messages, rendered with the tokenizer's
    chat template; a ``"boxed"`` answer is trained as ``\\boxed{answer}``, as the rewards read it).
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        tokenizer,
        seed: int = 0,
        chat_template_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not rows:
            raise ValueError("the locality pool is empty: the locality loss has no prompt to keep")
        self.examples = [self._tokenize(row, tokenizer, chat_template_kwargs or {}) for row in rows]
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._rng = random.Random(seed)
        self._order: list[int] = []

    @staticmethod
    def _tokenize(row: Mapping[str, Any], tokenizer, chat_template_kwargs) -> tuple[list[int], list[int]]:
        from edit_grpo_trl.data.agt import render_chat_prompt

        prompt = row["prompt"]
        if isinstance(prompt, str):
            prompt_ids = tokenizer(prompt)["input_ids"]
        else:
            text = render_chat_prompt(tokenizer, prompt, chat_template_kwargs)
            prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        _, target_ids = answer_token_ids(tokenizer, row, f"locality pool, {prompt!r}")
        return list(prompt_ids), target_ids

    def __len__(self) -> int:
        return len(self.examples)

    def next_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        chosen = []
        while len(chosen) < size:
            if not self._order:
                self._order = self._rng.sample(range(len(self.examples)), len(self.examples))
            chosen.append(self.examples[self._order.pop()])
        prompts, targets = zip(*chosen, strict=True)
        return teacher_forced_batch(prompts, targets, self.pad_token_id)


class LocalityLossMixin:
    """Adds ``locality_coef * answer_nll`` on a pool batch to a TRL trainer's loss at every training
    micro-batch (see the module docstring). Keyword arguments ``locality_pool`` (rows),
    ``locality_coef`` and ``locality_batch_size``: unset, the last two come from ``args`` when it has them
    (:class:`~edit_grpo_trl.stage2.config.EditGRPOConfig`); a coefficient of 0 turns the term off."""

    def __init__(
        self,
        *args,
        locality_pool: Sequence[Mapping[str, Any]] | None = None,
        locality_coef: float | None = None,
        locality_batch_size: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        coef = locality_coef if locality_coef is not None else getattr(self.args, "locality_coef", 0.0)
        size = locality_batch_size or getattr(self.args, "locality_batch_size", 16)
        self.locality_coef, self.locality_batch_size = float(coef), int(size)
        self.locality_pool = None
        if self.locality_coef > 0:
            if not locality_pool:
                raise ValueError(
                    f"locality_coef is {self.locality_coef} but no locality pool was given: build the AGT data "
                    "from cases with training locality probes (ProbeKind.TRAIN_LOCALITY), or set locality_coef 0"
                )
            seed = self.args.seed + 1000 * self.accelerator.process_index
            self.locality_pool = LocalityPool(
                locality_pool,
                self.processing_class,
                seed=seed,
                chat_template_kwargs=getattr(self.args, "chat_template_kwargs", None),
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if self.locality_pool is None or not model.training:
            return result
        device = self.accelerator.device
        input_ids, attention_mask, labels = (
            t.to(device) for t in self.locality_pool.next_batch(self.locality_batch_size)
        )
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        nll = answer_nll(logits, labels)
        metrics = getattr(self, "_metrics", None)
        if metrics is not None:
            metrics["train"]["locality/nll"].append(self.accelerator.gather(nll.detach()).mean().item())
        term = self.locality_coef * nll
        if self._loss_scaled_for_accumulation(num_items_in_batch):
            term = term / self.current_gradient_accumulation_steps
        if isinstance(result, tuple):
            return (result[0] + term, *result[1:])
        return result + term

    def _loss_scaled_for_accumulation(self, num_items_in_batch) -> bool:
        """Whether the trainer's ``compute_loss`` already divides by the accumulation steps (then the term
        must too); otherwise ``Trainer.training_step`` divides the sum."""
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = (
                getattr(self, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None
            ) or getattr(self, "compute_loss_func", None) is not None
        return bool(scaled)


class LocalitySFTTrainer(LocalityLossMixin, SFTTrainer):
    """TRL's SFTTrainer with the same locality loss as Edit-GRPO."""
