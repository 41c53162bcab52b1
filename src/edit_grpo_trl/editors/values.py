"""The target value: the vector that, written at the subject's last token, makes the model say the new object.

ROME, MEMIT and AlphaEdit share this step. A free vector ``delta`` is added to a module's output (the MLP's,
or the whole decoder layer's) at the subject's last token of the anchor prompt under every context template,
and optimized with Adam so that the model outputs the new object's tokens (negative log-likelihood), while

* a KL term keeps the model's next-token distribution on an essence prompt ("X is a") where it was, so the
  subject's other properties survive;
* a weight decay and a norm clamp keep ``delta`` within a few times the original value's norm.

The target value is the original value plus ``delta``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edit_grpo_trl.data.cases import EditCase
from edit_grpo_trl.editors.activations import LocatedPrompt, locate
from edit_grpo_trl.editors.arch import Architecture, get_module
from edit_grpo_trl.editors.tokens import pad_id, pad_right, target_ids

logger = logging.getLogger(__name__)

# Stop early once the new object is this likely (mean NLL per target token), as ROME does.
_NLL_DONE = 5e-2


@dataclass
class ValueSettings:
    num_grad_steps: int = 25
    lr: float = 0.5
    loss_layer: int | None = None  # None: the model's output logits (the last layer)
    weight_decay: float = 1e-3
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    kl_prompt: str = "{} is a"
    fact_token: str = "subject_last"


@dataclass
class ValueTarget:
    target: torch.Tensor  # (hidden,) float32
    initial: torch.Tensor  # (hidden,) float32
    final_nll: float
    steps: int

    @property
    def delta_norm(self) -> float:
        return float((self.target - self.initial).norm())


def _logits_at_layer(model, arch: Architecture, output, loss_layer: int | None, num_layers: int):
    if loss_layer is None or loss_layer == num_layers - 1:
        return output.logits
    hidden = output.hidden_states[loss_layer + 1]
    return get_module(model, arch.lm_head)(get_module(model, arch.final_norm)(hidden))


def optimize_value(
    model,
    tokenizer,
    case: EditCase,
    module_name: str,
    arch: Architecture,
    templates: Sequence[str],
    settings: ValueSettings,
    num_layers: int,
) -> ValueTarget:
    """Optimize the value of ``module_name`` at the subject's last token so the model outputs the new object."""
    device = next(model.parameters()).device
    new_ids = target_ids(tokenizer, case.new_object)
    rewrites = [locate(tokenizer, t, case.prompt, case.subject, settings.fact_token) for t in templates]
    essence = [
        locate(tokenizer, "{}", settings.kl_prompt.format(case.subject), case.subject, settings.fact_token)
    ]
    # Rewrite rows read the new object teacher-forced after the prompt; the KL row is the essence prompt.
    rows = [LocatedPrompt(r.ids + new_ids[:-1], r.subject_index) for r in rewrites] + essence
    input_ids, attention_mask = pad_right([row.ids for row in rows], pad_id(tokenizer))
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    lookup = torch.tensor([row.subject_index for row in rows], device=device)
    row_index = torch.arange(len(rows), device=device)

    # Label j of the new object sits at the position whose logits predict it (-100 elsewhere).
    labels = torch.full(input_ids.shape, -100, dtype=torch.long, device=device)
    for row, rewrite in enumerate(rewrites):
        first = len(rewrite.ids) - 1
        labels[row, first : first + len(new_ids)] = torch.tensor(new_ids, device=device)
    kl_row = len(rows) - 1
    kl_position = len(essence[0].ids) - 1

    module = get_module(model, module_name)
    hidden_size = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.n_embd
    delta = torch.zeros(hidden_size, device=device, dtype=torch.float32, requires_grad=True)
    state: dict[str, torch.Tensor] = {}

    def add_delta(_module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if "initial" not in state:
            state["initial"] = hidden[0, lookup[0]].detach().float().clone()
        hidden = hidden.clone()
        hidden[row_index, lookup] = hidden[row_index, lookup] + delta.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    optimizer = torch.optim.Adam([delta], lr=settings.lr)
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for parameter, _ in frozen:
        parameter.requires_grad_(False)
    handle = module.register_forward_hook(add_delta)
    initial_kl = None
    nll = torch.tensor(float("inf"))
    steps = 0
    try:
        for steps in range(1, settings.num_grad_steps + 1):
            optimizer.zero_grad()
            output = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                output_hidden_states=settings.loss_layer is not None,
            )
            logits = _logits_at_layer(model, arch, output, settings.loss_layer, num_layers).float()
            log_probs = torch.log_softmax(logits, dim=-1)
            # Labels sit at the positions whose logits predict them (no further shift).
            token_log_probs = torch.gather(log_probs, 2, labels.clamp(min=0).unsqueeze(2))
            mask = (labels != -100).float()
            nll_per_row = -(token_log_probs.squeeze(2) * mask).sum(1) / mask.sum(1).clamp(min=1)
            nll = nll_per_row[: len(rewrites)].mean()
            kl_log_probs = log_probs[kl_row, kl_position]
            if initial_kl is None:
                initial_kl = kl_log_probs.detach().clone()
            kl = F.kl_div(kl_log_probs, initial_kl, log_target=True, reduction="sum")
            decay = settings.weight_decay * delta.norm() ** 2 / state["initial"].norm() ** 2
            loss = nll + settings.kl_factor * kl + decay
            if nll.item() < _NLL_DONE or steps == settings.num_grad_steps:
                break
            loss.backward()
            optimizer.step()
            limit = settings.clamp_norm_factor * state["initial"].norm()
            with torch.no_grad():
                if delta.norm() > limit:
                    delta.mul_(limit / delta.norm())
    finally:
        handle.remove()
        for parameter, requires_grad in frozen:
            parameter.requires_grad_(requires_grad)
    initial = state["initial"]
    logger.debug(
        "value for %s: nll %.4f after %d steps, |delta| %.3f", case.case_id, nll, steps, delta.norm()
    )
    return ValueTarget(
        target=(initial + delta.detach()).float(), initial=initial, final_nll=nll.item(), steps=steps
    )
