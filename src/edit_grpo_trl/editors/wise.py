"""WISE (Wang et al., NeurIPS 2024): lifelong editing in a routed side memory of one MLP output projection.

The pretrained ``down_proj`` of one layer stays as the *main memory*; a copy of it, the *side memory*, takes
the edits. :class:`WiseLinear` replaces the projection and computes both outputs; a router sends a token to
the side memory when the activation difference ``||act(x W_side^T) - act(x W_main^T)||`` (EasyEdit's distance,
with the model's hidden activation ``act``), pooled over the sequence's tokens so far (``router_score``: the
mean as EasyEdit, the max, or the position's own difference), exceeds a threshold learned from the edits
(``act_ratio`` x the smallest in-scope difference any edit reached).

Editing (:class:`WiseEditor`, one case at a time):

* the case's anchor prompt (under ``context_templates`` random prefixes) and a few unrelated texts of
  ``loc_corpus`` are run through a *pending shard* (a copy of the main memory); the loss is the cross-entropy
  of the new object plus the margin loss ``relu(out - in + gamma) + relu(out - alpha) + relu(beta - in)`` on the
  activation differences (``act_margin = [alpha, beta, gamma]``), which pushes edit prompts above and
  unrelated text below the router's threshold;
* replay (``replay``, off by default as in EasyEdit): each step also trains a few earlier edits of the stream,
  their anchors' cross-entropy and margin terms and their unrelated texts, so later edits do not overwrite them;
* hard negatives (``loc_case_probes``, off by default): the case's own training-locality probes (unedited facts
  of other people through the edit's templates) join the unrelated texts, out of scope;
* knowledge sharding: every ``save_freq`` edits a shard closes and the next starts from the main memory with
  a new random gradient mask keeping ``mask_ratio`` of the weights (each shard edits its own random subspace);
* every ``merge_freq`` edits (and at the end of an ``edit`` call) the closed shards are TIES-merged (trim to
  ``densities`` by magnitude, elect signs, disjoint mean) into the side memory, the old side memory weighing
  0.6 against the new shards' 0.4 as in EasyEdit's WISE-Merge. A lone first shard becomes the side memory as it
  is (EasyEdit likewise routes to an unmerged shard). With ``threshold_from: merged`` the threshold's
  in-scope minimum is then taken again from every edit of the stream scored on the merged side memory.

This is WISE-Merge (one side memory); EasyEdit's WISE-Retrieve (one side memory per merge group, picked by
activation) is not implemented. Written from the paper and from reading EasyEdit's ``easyeditor/models/wise``.

Routing is causal: position ``t`` goes to the side memory when its score (from the valid tokens up to ``t``)
exceeds the threshold, so a teacher-forced forward and token-by-token decoding with a KV cache route every
position the same way. Padding is skipped through the attention mask, which a pre-hook on the decoder stack
hands to the projection (with the cache length, so decoding continues the prompt's running score).

Checkpoints keep the main memory under the projection's usual weight name, the side memory as
``<down_proj>.side.weight`` and the threshold as ``<down_proj>.router_threshold``;
:func:`edit_grpo_trl.editors.checkpoint.load_edited_model` rebuilds the routed model from them.
"""

from __future__ import annotations

import copy
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edit_grpo_trl.data.cases import EditCase, ProbeKind
from edit_grpo_trl.editors.arch import Architecture, EditorConfigError, get_module
from edit_grpo_trl.editors.base import Editor, EditorHParams, EditResult
from edit_grpo_trl.editors.tokens import encode, pad_id, pad_right, target_ids

logger = logging.getLogger(__name__)

SIDE_SUFFIX = "side.weight"
THRESHOLD_SUFFIX = "router_threshold"
MERGE_ALGORITHMS = ("ties", "linear")
ROUTER_SCORES = ("mean", "max", "token")
THRESHOLD_SOURCES = ("edit", "merged")


@dataclass
class WiseHParams(EditorHParams):
    """EasyEdit's WISE field names where they exist (``hparams/WISE/*.yaml``)."""

    edit_lr: float = 1.0
    optimizer: str = "sgd"  # sgd (EasyEdit's, weight decay 1e-5) | adam
    n_iter: int = 70
    mask_ratio: float = 0.2
    norm_constraint: float | None = 1.0
    act_margin: list[float] = field(default_factory=lambda: [5.0, 20.0, 10.0])  # alpha, beta, gamma
    act_ratio: float = 0.88
    save_freq: int = 500  # edits per shard
    merge_freq: int = 1000  # edits between TIES merges of the closed shards into the side memory
    merge_alg: str = "ties"
    densities: float = 0.53
    weights: float = 1.0
    # Unrelated text for the margin loss (EasyEdit takes one NQ question per edit): a corpus spec as in
    # mom2_dataset (``world``, ``wikipedia``, a file), ``loc_samples`` texts per edit from a pool of ``loc_pool``.
    loc_corpus: str = "wikipedia"
    loc_samples: int = 1
    loc_pool: int = 500
    loc_max_tokens: int = 32
    # Share of those texts drawn from the pool's texts that contain the anchor's relation phrase (the prompt
    # without its subject, e.g. "was born in"): hard negatives that teach the router the subject, not the relation.
    loc_related: float = 0.5
    # Random-prefix templates (length, count) for the anchor, as EasyEdit's [[5, 5], [10, 5]]; [] for none.
    context_templates: list[list[int]] = field(default_factory=lambda: [[5, 5], [10, 5]])
    seed: int = 0
    # Stage 2: train the router's threshold too (a straight-through gate), not only the side memory.
    stage2_train_router: bool = False
    # How the router pools the per-token activation difference into position t's score: ``mean`` over the
    # valid tokens up to t (EasyEdit's), their ``max``, or ``token``: position t's own difference. The margin
    # loss reads the same score, so the edit trains what the router will see.
    router_score: str = "mean"
    # Replay: every optimization step of an edit also trains ``replay`` earlier edits of the stream (drawn at
    # random each step, all of them while fewer were made): their bare anchors' cross-entropy on their new
    # objects, so the shard keeps them, and their margin-loss terms, anchors in scope and the unrelated texts
    # drawn for them out of scope, so the router keeps them apart. 0: off (EasyEdit's behaviour).
    replay: int = 0
    # Hard negatives: up to ``loc_case_probes`` of the case's own training-locality probes (unedited facts the
    # case offers for training, e.g. the knowledge world's reserved people through the anchor templates) join
    # its unrelated texts as out-of-scope rows, each as prompt + true answer. They share the edit's template
    # and name other people, as locality probes do. 0: off (EasyEdit's behaviour: unrelated texts only).
    loc_case_probes: int = 0
    # Where the threshold's in-scope minimum comes from. ``edit``: each edit's own score when it finished, the
    # smallest kept (EasyEdit's). ``merged``: at every merge, every edit of the stream scored again on the merged
    # side memory, the one the router will read (later edits, replay and the TIES trim all move earlier edits'
    # scores, so the edit-time minimum can sit well above or below what they score at the end).
    threshold_from: str = "edit"

    def __post_init__(self) -> None:
        if self.norm_constraint is False:
            self.norm_constraint = None

    def validate(self, config) -> None:
        super().validate(config)
        if len(self.layers) != 1:
            raise EditorConfigError(
                f"wise keeps one side memory: layers must name one layer, got {self.layers}"
            )
        problems = []
        if self.n_iter < 1 or self.edit_lr <= 0:
            problems.append(f"n_iter must be >= 1 and edit_lr > 0, got {self.n_iter}, {self.edit_lr}")
        if not 0 < self.mask_ratio <= 1:
            problems.append(f"mask_ratio must be in (0, 1], got {self.mask_ratio}")
        if len(self.act_margin) != 3:
            problems.append(f"act_margin must be [alpha, beta, gamma], got {self.act_margin}")
        if not 0 < self.act_ratio:
            problems.append(f"act_ratio must be positive, got {self.act_ratio}")
        if self.save_freq < 1 or self.merge_freq < self.save_freq or self.merge_freq % self.save_freq:
            problems.append(
                f"save_freq (edits per shard) must be >= 1 and merge_freq a multiple of it, got {self.save_freq}, "
                f"{self.merge_freq}"
            )
        if self.optimizer not in ("sgd", "adam"):
            problems.append(f"optimizer must be sgd or adam, got {self.optimizer!r}")
        if self.merge_alg not in MERGE_ALGORITHMS:
            problems.append(f"merge_alg must be one of {MERGE_ALGORITHMS}, got {self.merge_alg!r}")
        if not 0 < self.densities <= 1:
            problems.append(f"densities must be in (0, 1], got {self.densities}")
        if self.norm_constraint is not None and self.norm_constraint <= 0:
            problems.append(f"norm_constraint must be positive or null, got {self.norm_constraint}")
        if self.router_score not in ROUTER_SCORES:
            problems.append(f"router_score must be one of {ROUTER_SCORES}, got {self.router_score!r}")
        if not 0 <= self.loc_related <= 1:
            problems.append(f"loc_related must be in [0, 1], got {self.loc_related}")
        if isinstance(self.replay, bool) or not isinstance(self.replay, int) or self.replay < 0:
            problems.append(f"replay (earlier edits per step) must be an integer >= 0, got {self.replay!r}")
        if (
            isinstance(self.loc_case_probes, bool)
            or not isinstance(self.loc_case_probes, int)
            or self.loc_case_probes < 0
        ):
            problems.append(
                f"loc_case_probes (training-locality probes per edit) must be an integer >= 0, got "
                f"{self.loc_case_probes!r}"
            )
        if self.threshold_from not in THRESHOLD_SOURCES:
            problems.append(f"threshold_from must be one of {THRESHOLD_SOURCES}, got {self.threshold_from!r}")
        if self.loc_samples < 1 or self.loc_pool < self.loc_samples:
            problems.append(f"need 1 <= loc_samples <= loc_pool, got {self.loc_samples}, {self.loc_pool}")
        if problems:
            raise EditorConfigError("wise: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------------------
# The routed projection


def _activation(name: str):
    from transformers.activations import ACT2FN

    return ACT2FN[name]


def router_scores(
    distance: torch.Tensor,
    valid: torch.Tensor,
    mode: str = "mean",
    start_stat: torch.Tensor | None = None,
    start_count: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Each position's routing score from the per-token differences (batch, time), causally.

    ``start_stat`` / ``start_count`` continue an earlier call's state (the running sum or max and the count of
    valid tokens, per row) across decoding steps. Returns the scores and the state after the last position.
    """
    batch = distance.shape[0]
    if start_stat is None:
        start_stat = torch.zeros(batch, device=distance.device)
    if start_count is None:
        start_count = torch.zeros(batch, device=distance.device)
    distance = distance * valid
    counts = start_count[:, None] + valid.cumsum(dim=1)
    if mode == "mean":
        sums = start_stat[:, None] + distance.cumsum(dim=1)
        return sums / counts.clamp(min=1.0), (sums[:, -1], counts[:, -1])
    if mode == "max":  # differences are >= 0, so 0 stands for "no token yet" and for padding
        running = torch.maximum(start_stat[:, None], distance.cummax(dim=1).values)
        return running, (running[:, -1], counts[:, -1])
    if mode == "token":
        return distance, (torch.zeros_like(start_stat), counts[:, -1])
    raise ValueError(f"router score must be one of {ROUTER_SCORES}, got {mode!r}")


class WiseLinear(nn.Module):
    """A linear projection with a main memory (``weight``), a side memory (``side``) and a router."""

    def __init__(
        self,
        base: nn.Module,
        hidden_act: str = "silu",
        train_router: bool = False,
        router_score: str = "mean",
    ):
        super().__init__()
        # GPT-2's Conv1D keeps its weight as (in, out) and computes x W + b; nn.Linear keeps (out, in).
        self.transposed = type(base).__name__ == "Conv1D"
        if not isinstance(base, nn.Linear) and not self.transposed:
            raise EditorConfigError(
                f"wise needs an nn.Linear (or GPT-2 Conv1D) output projection, found {type(base).__name__}"
            )
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        shape = tuple(self.weight.shape)
        self.in_features, self.out_features = shape if self.transposed else shape[::-1]
        # The side memory: a copy of the whole projection (GPT-2's bias included), trained instead of it.
        self.side = copy.deepcopy(base)
        self.side.weight.requires_grad_(False)
        if getattr(self.side, "bias", None) is not None:
            self.side.bias.requires_grad_(False)
        # inf: nothing edited yet, every token stays on the main memory.
        self.router_threshold = nn.Parameter(
            torch.tensor(math.inf, device=base.weight.device, dtype=torch.float32), requires_grad=False
        )
        self.hidden_act = hidden_act
        self.train_router = train_router
        if router_score not in ROUTER_SCORES:
            raise EditorConfigError(f"router_score must be one of {ROUTER_SCORES}, got {router_score!r}")
        self.router_score = router_score
        self.router_temperature = 0.1  # relative to the threshold, for the straight-through gate's gradient
        # Editing: the pending shard's weight; forward then runs it on every token and keeps both outputs.
        self.editing_weight: torch.Tensor | None = None
        self.captured: tuple[torch.Tensor, torch.Tensor] | None = None
        # Routing context from the decoder pre-hook, and the running sums across decoding steps.
        self._context: tuple[torch.Tensor | None, int] | None = None
        self._running: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_routes: torch.Tensor | None = None  # (batch, time) bool: which positions went to the side

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, act={self.hidden_act}, "
            f"score={self.router_score}, threshold={float(self.router_threshold):.4g}"
        )

    def distance(self, main_out: torch.Tensor, other_out: torch.Tensor) -> torch.Tensor:
        """Per-token activation difference ``||act(other) - act(main)||`` in float32, shape (batch, time)."""
        act = _activation(self.hidden_act)
        return torch.linalg.vector_norm(act(other_out.float()) - act(main_out.float()), dim=-1)

    def set_context(self, attention_mask: torch.Tensor | None, past_length: int) -> None:
        self._context = (attention_mask, past_length)

    def _valid_and_start(
        self, batch: int, length: int, device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask, past = self._context if self._context is not None else (None, 0)
        if mask is not None and mask.dim() == 2 and mask.shape[0] == batch and mask.shape[1] >= length:
            valid = mask[:, -length:].to(device=device, dtype=torch.float32)
        else:
            valid = torch.ones(batch, length, device=device)
        start_sum = torch.zeros(batch, device=device)
        start_count = torch.zeros(batch, device=device)
        if past > 0 and self._running is not None and self._running[0].shape[0] == batch:
            start_sum, start_count = (t.to(device) for t in self._running)
        return valid, start_sum, start_count

    def project(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x`` through ``weight`` (laid out as the main memory's) and the main memory's bias."""
        if self.transposed:
            out = x @ weight
            return out + self.bias if self.bias is not None else out
        return F.linear(x, weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main_out = self.project(x, self.weight)
        if self.editing_weight is not None:
            edited = self.project(x, self.editing_weight)
            self.captured = (main_out, edited)
            return edited
        side_out = self.side(x)
        if not torch.isfinite(self.router_threshold):
            self.last_routes = torch.zeros(main_out.shape[:-1], dtype=torch.bool, device=main_out.device)
            return main_out
        squeeze = main_out.dim() == 2
        if squeeze:
            main_out, side_out = main_out.unsqueeze(0), side_out.unsqueeze(0)
        batch, length = main_out.shape[:2]
        grad_router = self.train_router and self.router_threshold.requires_grad and torch.is_grad_enabled()
        with torch.set_grad_enabled(grad_router):
            valid, start_sum, start_count = self._valid_and_start(batch, length, main_out.device)
            running, state = router_scores(
                self.distance(main_out, side_out), valid, self.router_score, start_sum, start_count
            )
            threshold = self.router_threshold
            routes = (running > threshold) & (valid > 0)
            gate = routes.to(main_out.dtype)
            if grad_router:
                soft = torch.sigmoid(
                    (running - threshold) / (self.router_temperature * threshold.abs() + 1e-6)
                )
                gate = gate + (soft - soft.detach()).to(main_out.dtype)
        self._running = (state[0].detach(), state[1].detach())
        self.last_routes = routes.detach()
        out = main_out + gate.unsqueeze(-1) * (side_out - main_out)
        return out.squeeze(0) if squeeze else out


def _decoder_stack(model: nn.Module) -> nn.Module:
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module) and hasattr(inner, "layers"):
        return inner
    inner = getattr(model, "transformer", None)
    return inner if isinstance(inner, nn.Module) else model


class _ContextHook:
    """A pre-hook bound to one WiseLinear; a deep copy of the model copies it onto the copied projection."""

    def __init__(self, wise: WiseLinear):
        self.wise = wise

    def __call__(self, _module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1 and isinstance(args[1], torch.Tensor):
            mask = args[1]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))  # transformers 5 names it cache
        past = int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
        self.wise.set_context(mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None, past)


def wise_modules(model: nn.Module) -> dict[str, WiseLinear]:
    """Every routed projection in ``model`` by module name (empty for a model WISE never touched)."""
    return {name: module for name, module in model.named_modules() if isinstance(module, WiseLinear)}


def _hidden_act(config) -> str:
    return getattr(config, "hidden_act", None) or getattr(config, "activation_function", None) or "silu"


def install_wise(
    model: nn.Module, module_name: str, train_router: bool = False, router_score: str = "mean"
) -> WiseLinear:
    """Replace ``module_name`` (an nn.Linear) with a :class:`WiseLinear` around it; idempotent."""
    current = get_module(model, module_name)
    if isinstance(current, WiseLinear):
        if current.router_score != router_score:
            raise EditorConfigError(
                f"{module_name} already routes by router_score {current.router_score!r}, not {router_score!r}"
            )
        return current
    parent_name, _, child = module_name.rpartition(".")
    parent = get_module(model, parent_name) if parent_name else model
    wise = WiseLinear(
        current, _hidden_act(model.config), train_router=train_router, router_score=router_score
    )
    setattr(parent, child, wise)
    _decoder_stack(model).register_forward_pre_hook(_ContextHook(wise), with_kwargs=True)
    return wise


def side_module_suffix(module_name: str) -> str:
    """``model.layers.3.mlp.down_proj`` -> ``mlp.down_proj.side``: the side memory inside a decoder layer."""
    parts = module_name.split(".")
    digits = [index for index, part in enumerate(parts) if part.isdigit()]
    return ".".join([*parts[digits[0] + 1 :], "side"]) if digits else f"{module_name}.side"


def wise_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The side memories and thresholds by their state-dict names (what a checkpoint stores beyond the base)."""
    state = {}
    for name, module in wise_modules(model).items():
        state[f"{name}.{SIDE_SUFFIX}"] = module.side.weight.detach()
        state[f"{name}.{THRESHOLD_SUFFIX}"] = module.router_threshold.detach()
    return state


def restore_wise(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    train_router: bool = False,
    router_score: str = "mean",
) -> list[str]:
    """Install and fill the routed projections that ``state`` (from :func:`wise_state`) names."""
    names = sorted(key[: -len(SIDE_SUFFIX) - 1] for key in state if key.endswith("." + SIDE_SUFFIX))
    for name in names:
        wise = install_wise(model, name, train_router=train_router, router_score=router_score)
        threshold_key = f"{name}.{THRESHOLD_SUFFIX}"
        if threshold_key not in state:
            raise EditorConfigError(f"the WISE state names a side memory at {name} but no router threshold")
        with torch.no_grad():
            side = state[f"{name}.{SIDE_SUFFIX}"]
            if side.shape != wise.side.weight.shape:
                raise EditorConfigError(
                    f"side memory {name}: shape {tuple(side.shape)} does not fit the model's {tuple(wise.side.weight.shape)}"
                )
            wise.side.weight.copy_(side.to(wise.side.weight))
            wise.router_threshold.copy_(state[threshold_key].to(wise.router_threshold))
    return names


def prepare_wise_for_training(model: nn.Module, train_router: bool | None = None) -> list[str]:
    """Stage 2 on a WISE model: only the side memories train (and the thresholds, with ``train_router``).

    ``train_router=None`` takes the checkpoint's own switch (``stage2_train_router`` in its WISE hparams).
    A model without routed projections is left alone. Returns the names of the parameters left trainable.
    """
    modules = wise_modules(model)
    if not modules:
        return []
    trainable = []
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for name, module in modules.items():
        router = module.train_router if train_router is None else train_router
        module.train_router = router
        module.side.weight.requires_grad_(True)
        trainable.append(f"{name}.{SIDE_SUFFIX}")
        if router:
            module.router_threshold.requires_grad_(True)
            trainable.append(f"{name}.{THRESHOLD_SUFFIX}")
    logger.info("WISE model: stage 2 trains %s only", ", ".join(trainable))
    return trainable


def wise_training_defaults(model_path) -> dict[str, Any]:
    """Stage-2 settings a WISE checkpoint implies: PGAA aligns on the side memory (``mlp.down_proj.side``)."""
    from edit_grpo_trl.editors.checkpoint import wise_manifest_section

    section = wise_manifest_section(model_path) if model_path is not None else None
    if not section:
        return {}
    return {"alignment_module": section.get("alignment_module", "mlp.down_proj.side")}


# ----------------------------------------------------------------------------------------------------------
# Merging


def _trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    if density >= 1:
        return delta
    keep = max(int(density * delta.numel()), 1)
    cutoff = delta.abs().flatten().float().kthvalue(delta.numel() - keep + 1).values
    return delta * (delta.abs() >= cutoff)


def ties_merge(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    density: float,
    algorithm: str = "ties",
) -> torch.Tensor:
    """``base`` + the merged task vectors ``tensor - base``.

    ``ties``: trim each task vector to its ``density`` largest magnitudes, elect each entry's sign by the
    weighted sum, and average the agreeing entries by their weights. ``linear``: the weighted average.
    """
    deltas = torch.stack([(tensor.float() - base.float()) for tensor in tensors])
    scale = torch.tensor(list(weights), dtype=torch.float32, device=deltas.device).view(-1, *[1] * base.dim())
    if algorithm == "linear":
        merged = (deltas * scale).sum(0) / scale.sum().clamp(min=1e-8)
        return (base.float() + merged).to(base.dtype)
    deltas = torch.stack([_trim(delta, density) for delta in deltas])
    weighted = deltas * scale
    elected = torch.where(weighted.sum(0) >= 0, 1.0, -1.0)
    agree = (torch.sign(weighted) == elected).float()
    divisor = (scale * agree).sum(0)
    divisor[divisor == 0] = 1.0
    merged = (weighted * agree).sum(0) / divisor
    return (base.float() + merged).to(base.dtype)


# ----------------------------------------------------------------------------------------------------------
# The loss


def margin_loss(
    in_scope: torch.Tensor,
    out_scope: torch.Tensor,
    act_margin: Sequence[float],
    replayed_in_scope: torch.Tensor | None = None,
) -> torch.Tensor:
    """``relu(out - in + gamma) + relu(out - alpha) + relu(beta - in)``, each term a mean over its rows.

    ``out_scope`` holds every unrelated row of the step (the replayed edits' too). Replayed anchors get their
    own in-scope terms rather than joining the current edit's mean, so replay does not dilute the new edit.
    """
    alpha, beta, gamma = act_margin
    loss = (
        F.relu(out_scope.max() - in_scope + gamma).mean()
        + F.relu(out_scope - alpha).mean()
        + F.relu(beta - in_scope).mean()
    )
    if replayed_in_scope is not None and replayed_in_scope.numel():
        loss = loss + F.relu(out_scope.max() - replayed_in_scope + gamma).mean()
        loss = loss + F.relu(beta - replayed_in_scope).mean()
    return loss


def case_negatives(case: EditCase, count: int) -> list[str]:
    """The first ``count`` of the case's training-locality probes as texts, prompt + true answer.

    Only ``TRAIN_LOCALITY`` probes: the evaluation's locality probes must never be trained on. Probes naming
    the case's subject are skipped (the router has to take the subject's own prompts).
    """
    if count <= 0:
        return []
    texts = [
        f"{probe.prompt} {probe.answer}"
        for probe in case.probes
        if probe.kind == ProbeKind.TRAIN_LOCALITY and case.subject not in probe.prompt
    ]
    return texts[:count]


def replay_sample(earlier: int, count: int, rng: random.Random) -> list[int]:
    """Indices of the earlier edits one step replays: ``count`` distinct ones at random, all while fewer exist."""
    if count <= 0 or earlier <= 0:
        return []
    return sorted(rng.sample(range(earlier), min(count, earlier)))


# ----------------------------------------------------------------------------------------------------------
# The editor


@dataclass
class _EditingState:
    """What survives between the edits of a stream (kept on the editor, not saved)."""

    pending: torch.Tensor  # the open shard
    mask: torch.Tensor
    shards: list[torch.Tensor] = field(default_factory=list)
    edits: int = 0  # edits so far in this stream
    merged_once: bool = False
    min_in_scope: float = math.inf
    # The minimum an earlier WISE edit of the model left (from its threshold), kept when the threshold is refit.
    prior_min_in_scope: float = math.inf
    # The stream's edits so far with the unrelated texts each was trained against (what replay draws from).
    history: list[tuple[EditCase, list[str]]] = field(default_factory=list)


class WiseEditor(Editor):
    name = "wise"
    hparams_class = WiseHParams
    hparams: WiseHParams
    supports_batch = False

    def __init__(self, hparams: WiseHParams):
        super().__init__(hparams)
        self._state: dict[int, _EditingState] = {}
        self._loc_texts: list[str] | None = None
        self._templates: list[str] | None = None
        self._rng = random.Random(hparams.seed)
        self._generator = torch.Generator().manual_seed(hparams.seed)
        # Its own stream, so that replay leaves the unrelated texts' draws (and replay 0's results) unchanged.
        self._replay_rng = random.Random(hparams.seed + 1)
        self._tokenizer = None  # the stream's, for the threshold refit at the end of an edit call
        self._token_cache: dict[tuple[bool, str], list[int]] = {}
        self._token_cache_owner = None

    # --- inputs ---

    def _locality_texts(self, model, tokenizer) -> list[str]:
        if self._loc_texts is None:
            from edit_grpo_trl.editors.corpus import corpus_texts, parse_corpus

            texts = []
            model_dir = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
            for text in corpus_texts(parse_corpus(self.hparams.loc_corpus), model_dir=model_dir):
                ids = encode(tokenizer, text)[: self.hparams.loc_max_tokens]
                if len(ids) >= 2:
                    texts.append(tokenizer.decode(ids))
                if len(texts) >= self.hparams.loc_pool * 4:
                    break
            if not texts:
                raise EditorConfigError(f"wise: loc_corpus {self.hparams.loc_corpus!r} gave no texts")
            random.Random(self.hparams.seed).shuffle(texts)
            self._loc_texts = texts[: self.hparams.loc_pool * 4]
        return self._loc_texts

    def _context_templates(self, model, tokenizer) -> list[str]:
        if self._templates is None:
            if self.hparams.context_templates:
                from edit_grpo_trl.editors.context import generate_context_templates

                self._templates = generate_context_templates(
                    model,
                    tokenizer,
                    [tuple(p) for p in self.hparams.context_templates],
                    seed=self.hparams.seed,
                )
            else:
                self._templates = ["{}"]
        return self._templates

    def _unrelated(self, case: EditCase, loc_texts: list[str]) -> list[str]:
        """The ``loc_samples`` unrelated texts of one edit (``loc_related`` of them with its relation phrase)."""
        candidates = [t for t in loc_texts if case.subject not in t]
        phrase = " ".join(case.prompt.replace(case.subject, " ").split())
        related = [t for t in candidates if phrase and phrase in t]
        wanted = self.hparams.loc_samples
        chosen = self._rng.sample(related, min(round(wanted * self.hparams.loc_related), len(related)))
        rest = [t for t in candidates if t not in chosen]
        chosen += self._rng.sample(rest, min(wanted - len(chosen), len(rest)))
        return chosen + case_negatives(case, self.hparams.loc_case_probes)

    def _ids(self, tokenizer, text: str, target: bool = False) -> list[int]:
        """``encode`` (or ``target_ids``) of ``text``, each text tokenized once per tokenizer: replay puts
        the same earlier anchors and unrelated texts into every step of every later edit."""
        if self._token_cache_owner is not tokenizer:
            self._token_cache, self._token_cache_owner = {}, tokenizer
        key = (target, text)
        if key not in self._token_cache:
            self._token_cache[key] = target_ids(tokenizer, text) if target else encode(tokenizer, text)
        return self._token_cache[key]

    def _batch(
        self,
        tokenizer,
        case: EditCase,
        templates: list[str],
        unrelated: list[str],
        replayed: Sequence[tuple[EditCase, list[str]]] = (),
    ):
        """Edit rows (templated anchor + object), the replayed edits' bare anchors + objects, then unrelated
        rows (the case's, then the replayed edits'); labels only on the objects' tokens.

        Returns the padded ids, mask and labels, each edit row's first answer position, the number of the
        case's own rows and the number of edit rows (own + replayed).
        """
        rows, labels, first_answer = [], [], []
        anchors = [(template.format(case.prompt), case.new_object) for template in templates]
        anchors += [(earlier.prompt, earlier.new_object) for earlier, _ in replayed]
        for prompt_text, new_object in anchors:
            prompt, target = self._ids(tokenizer, prompt_text), self._ids(tokenizer, new_object, target=True)
            rows.append(prompt + target)
            labels.append([-100] * len(prompt) + target)
            first_answer.append(len(prompt) - 1)  # the position that predicts the object's first token
        for text in [*unrelated, *(t for _, texts in replayed for t in texts)]:
            ids = self._ids(tokenizer, text)
            rows.append(ids)
            labels.append([-100] * len(ids))
        input_ids, attention_mask = pad_right(rows, pad_id(tokenizer))
        label_ids, _ = pad_right(labels, -100)
        return input_ids, attention_mask, label_ids, first_answer, len(templates), len(anchors)

    # --- one edit ---

    def _new_mask(self, like: torch.Tensor) -> torch.Tensor:
        keep = torch.rand(like.shape, generator=self._generator) < self.hparams.mask_ratio
        return keep.to(device=like.device, dtype=like.dtype)

    def _margin_terms(self, wise: WiseLinear, attention_mask, first_answer, num_edit_rows):
        main_out, edited = wise.captured
        distance = wise.distance(main_out, edited)
        valid = attention_mask.float()
        running, _ = router_scores(distance, valid, wise.router_score)
        in_scope = []
        for row, start in enumerate(first_answer):
            end = int(attention_mask[row].sum()) - 1  # the last position predicting an object token
            in_scope.append(running[row, start:end].min())
        in_scope = torch.stack(in_scope)
        out_scope = (running[num_edit_rows:] * valid[num_edit_rows:]).amax(dim=1)
        return in_scope, out_scope

    def _edit_one(self, model, tokenizer, case: EditCase, wise: WiseLinear, state: _EditingState) -> None:
        h = self.hparams
        device = wise.weight.device
        templates = self._context_templates(model, tokenizer)
        unrelated = self._unrelated(case, self._locality_texts(model, tokenizer))

        def batch(replayed=()):
            return tuple(
                t.to(device) if isinstance(t, torch.Tensor) else t
                for t in self._batch(tokenizer, case, templates, unrelated, replayed)
            )

        own = batch()
        # What replay may draw: not an earlier edit of this very prompt (the new object supersedes it), and
        # none of the earlier edits' unrelated texts that mention this subject (the router must take those).
        earlier = [
            (done, [t for t in texts if case.subject not in t])
            for done, texts in state.history
            if done.prompt != case.prompt
        ]
        pending = state.pending.clone().requires_grad_(True)
        if h.optimizer == "adam":
            optimizer = torch.optim.Adam([pending], lr=h.edit_lr)
        else:
            optimizer = torch.optim.SGD([pending], lr=h.edit_lr, weight_decay=1e-5)
        previous, in_scope_min = math.inf, math.inf
        try:
            wise.editing_weight = pending
            for _ in range(h.n_iter):
                picks = replay_sample(len(earlier), h.replay, self._replay_rng)
                step = batch([earlier[i] for i in picks]) if picks else own
                input_ids, attention_mask, labels, first_answer, num_own, num_edit_rows = step
                optimizer.zero_grad()
                logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
                ce = F.cross_entropy(
                    logits[:num_own, :-1].reshape(-1, logits.shape[-1]),
                    labels[:num_own, 1:].reshape(-1),
                    ignore_index=-100,
                )
                if num_edit_rows > num_own:  # the replayed edits weigh as much as the new one, together
                    ce = ce + F.cross_entropy(
                        logits[num_own:num_edit_rows, :-1].reshape(-1, logits.shape[-1]),
                        labels[num_own:num_edit_rows, 1:].reshape(-1),
                        ignore_index=-100,
                    )
                in_scope, out_scope = self._margin_terms(wise, attention_mask, first_answer, num_edit_rows)
                margin = margin_loss(in_scope[:num_own], out_scope, h.act_margin, in_scope[num_own:])
                loss = ce + margin
                value = float(loss.detach())
                if abs(value - previous) <= 1e-4 and value <= 0.02:  # EasyEdit's early stop
                    break
                previous = value
                loss.backward()
                pending.grad.mul_(state.mask)  # replay too moves only the open shard's masked entries
                optimizer.step()
                if h.norm_constraint is not None:
                    with torch.no_grad():
                        bound = h.norm_constraint
                        pending.copy_(torch.clamp(pending, wise.weight - bound, wise.weight + bound))
            # The in-scope difference the finished edit reaches on its own rows (the last step's update included).
            with torch.no_grad():
                input_ids, attention_mask, _, first_answer, num_own, _ = own
                model(input_ids=input_ids, attention_mask=attention_mask)
                in_scope, _ = self._margin_terms(wise, attention_mask, first_answer, num_own)
                in_scope_min = float(in_scope.min())
        finally:
            wise.editing_weight = None
            wise.captured = None
        logger.debug(
            "wise edit %s: ce %.4f, in-scope %.3g, out-of-scope max %.3g",
            case.case_id,
            float(ce.detach()),
            in_scope_min,
            float(out_scope.detach().max()),
        )
        state.history.append((case, unrelated))
        state.pending = pending.detach()
        state.min_in_scope = min(state.min_in_scope, in_scope_min)
        state.edits += 1
        if state.edits % h.save_freq == 0:
            self._close_shard(state, wise)
        if state.edits % h.merge_freq == 0:
            self._merge(state, wise, model, tokenizer)

    @torch.no_grad()
    def _side_in_scope(self, model, tokenizer, cases: Sequence[EditCase], wise: WiseLinear) -> float:
        """The smallest in-scope score the side memory gives the cases' edit rows (as an edit measures it)."""
        templates = self._context_templates(model, tokenizer)
        device = wise.weight.device
        lowest = math.inf
        try:
            wise.editing_weight = wise.side.weight.detach()
            for case in cases:  # one case at a time: the rows pad as during its edit
                input_ids, attention_mask, _, first_answer, num_own, _ = self._batch(
                    tokenizer, case, templates, []
                )
                input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
                model(input_ids=input_ids, attention_mask=attention_mask)
                in_scope, _ = self._margin_terms(wise, attention_mask, first_answer, num_own)
                lowest = min(lowest, float(in_scope.min()))
        finally:
            wise.editing_weight = None
            wise.captured = None
        return lowest

    def _close_shard(self, state: _EditingState, wise: WiseLinear) -> None:
        state.shards.append(state.pending)
        state.pending = wise.weight.detach().clone()
        state.mask = self._new_mask(state.pending)

    def _merge(self, state: _EditingState, wise: WiseLinear, model, tokenizer) -> None:
        """TIES-merge the closed shards into the side memory (EasyEdit's weighting), then set the threshold."""
        h = self.hparams
        if state.shards:
            main = wise.weight.detach()
            if not state.merged_once and len(state.shards) == 1:
                merged = state.shards[0]
            elif not state.merged_once:
                count = len(state.shards)
                merged = ties_merge(main, state.shards, [h.weights / count] * count, h.densities, h.merge_alg)
            else:
                count = len(state.shards)
                merged = ties_merge(
                    main,
                    [*state.shards, wise.side.weight.detach()],
                    [0.4 / count] * count + [0.6],
                    h.densities,
                    h.merge_alg,
                )
            with torch.no_grad():
                wise.side.weight.copy_(merged)
            state.shards = []
            state.merged_once = True
        if h.threshold_from == "merged" and state.history:
            # The latest edit of each prompt: an earlier one of the same prompt was superseded, not kept.
            latest = {case.prompt: case for case, _ in state.history}
            rescored = self._side_in_scope(model, tokenizer, list(latest.values()), wise)
            state.min_in_scope = min(state.prior_min_in_scope, rescored)
        if math.isfinite(state.min_in_scope):
            with torch.no_grad():
                wise.router_threshold.fill_(h.act_ratio * state.min_in_scope)

    # --- the stream ---

    def _edit_batch(
        self, model, tokenizer, cases: Sequence[EditCase], arch: Architecture
    ) -> dict[int, torch.Tensor]:
        (layer,) = self.hparams.layers
        self._context_templates(model, tokenizer)  # sampled from the unedited model, before routing exists
        wise = install_wise(
            model,
            self.hparams.rewrite_module_tmp.format(layer),
            self.hparams.stage2_train_router,
            self.hparams.router_score,
        )
        state = self._state.get(layer)
        if state is None:
            start = wise.weight.detach().clone()
            state = self._state[layer] = _EditingState(pending=start, mask=self._new_mask(start))
            if torch.isfinite(wise.router_threshold):  # editing on top of an earlier WISE edit
                state.merged_once = True
                state.min_in_scope = float(wise.router_threshold) / self.hparams.act_ratio
                state.prior_min_in_scope = state.min_in_scope
        self._tokenizer = tokenizer
        before = state.pending.clone()
        for case in cases:
            self._edit_one(model, tokenizer, case, wise, state)
        after = state.shards[-1] if state.shards and state.pending.equal(wise.weight) else state.pending
        delta = (after - before).float()
        return {layer: delta.T if wise.transposed else delta}

    def finish(self, model) -> None:
        """Close the open shard and merge everything into the side memory (the end of an ``edit`` call)."""
        (layer,) = self.hparams.layers
        state = self._state.get(layer)
        if state is None:
            return
        wise = get_module(model, self.hparams.rewrite_module_tmp.format(layer))
        if not state.pending.equal(wise.weight):
            self._close_shard(state, wise)
        self._merge(state, wise, model, self._tokenizer)

    def edit(
        self,
        model,
        tokenizer,
        cases,
        mode="sequential",
        batch_size=None,
        copy_model=False,
        show_progress=True,
    ):
        result: EditResult = super().edit(
            model,
            tokenizer,
            cases,
            mode=mode,
            batch_size=batch_size,
            copy_model=copy_model,
            show_progress=show_progress,
        )
        self.finish(result.model)
        (layer,) = self.hparams.layers
        wise = get_module(result.model, self.hparams.rewrite_module_tmp.format(layer))
        side_delta = (wise.side.weight.detach() - wise.weight.detach()).float().cpu()
        side_delta = side_delta.T if wise.transposed else side_delta
        result.deltas = {layer: side_delta}
        result.record.update_norms = {str(layer): float(side_delta.norm())}
        logger.info("wise: router threshold %.4g", float(wise.router_threshold))
        return result
