"""PGAA advantages: the anchor-excluded per-case baseline and the alignment term (docs/design.md section 5).

Pure tensor functions, no trainer state. ``EditGRPOTrainer`` gathers one generation batch from every
process, calls :func:`pgaa_advantages`, adds :func:`add_alignment_term`, and keeps its own slice.

Every sample ``i`` belongs to one edit case ``c(i)`` and has a role: anchor, generalization or locality.

* Anchor and generalization samples of case ``c`` share one baseline taken over the case's
  *generalization* samples only (``exclude_anchor_from_baseline``; otherwise over anchor and
  generalization samples together): ``A_i = (r_i - mu_c) / (sigma_c + eps)``, or ``r_i - mu_c`` with
  scaling off. The anchor is left out because it is the prompt the stage-1 editor already fixed: its
  reward is high and nearly constant, and pulling it into the baseline would push the paraphrases'
  advantages down for no reason of their own.
* Locality samples of a case form a separate group, normalized among themselves the same way.
* ``sigma_c`` is the unbiased standard deviation. A baseline set with one sample, or with no spread at
  all, uses ``sigma_c = 1``; an empty one uses ``mu_c = 0, sigma_c = 1``. (Without the no-spread rule an
  anchor sample whose case's paraphrases all scored the same would get ``(r - mu) / eps``, 10^4 times
  its reward gap. For samples inside the set the rule changes nothing, since ``r_i = mu_c`` there.)
* A NaN reward (every reward function skipped the row) stays out of every mean and gets advantage 0.

With ``exclude_anchor_from_baseline=False`` and one prompt per case, the result equals TRL's own
``scale_rewards="group"`` advantages exactly (the parity test).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edit_grpo_trl.roles import Role

# TRL adds this to the group standard deviation; PGAA uses the same value so that parity is exact.
TRL_STD_EPS = 1e-4


@dataclass(frozen=True)
class PGAAResult:
    """Advantages and the statistics behind them, one entry per sample (``baseline_*``) or per case."""

    advantages: torch.Tensor  # (N,)
    baseline_mean: torch.Tensor  # (N,) mu of the group each sample was normalized in
    baseline_std: torch.Tensor  # (N,) sigma actually divided by (after the 1-for-degenerate rule)
    zero_std_generalization: (
        torch.Tensor
    )  # (num_cases,) bool: the case's generalization rewards have no spread
    has_generalization: torch.Tensor  # (num_cases,) bool: the case has >= 1 scored generalization sample
    degenerate_group: torch.Tensor  # (N,) bool: the sample's group had < 2 scored rewards or no spread


def _group_statistics(
    rewards: torch.Tensor, members: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Mean and unbiased std of the non-NaN rewards selected by ``members``, with the degenerate rules."""
    values = rewards[members]
    values = values[~torch.isnan(values)]
    one = torch.ones((), dtype=rewards.dtype, device=rewards.device)
    if values.numel() == 0:
        return torch.zeros_like(one), one, True
    mean = values.mean()
    if values.numel() == 1:
        return mean, one, True
    std = values.std(unbiased=True)
    if torch.all(values == values[0]):
        return mean, one, True
    return mean, std, False


def pgaa_advantages(
    rewards: torch.Tensor,
    case_index: torch.Tensor,
    roles: torch.Tensor,
    *,
    scale_rewards: bool = True,
    exclude_anchor_from_baseline: bool = True,
    eps: float = TRL_STD_EPS,
) -> PGAAResult:
    """PGAA advantages (without the alignment term) for one gathered generation batch.

    Args:
        rewards: (N,) float, the weighted sum of the AGT rewards; NaN for unscorable samples.
        case_index: (N,) long, the case each sample belongs to, as integers 0..num_cases-1.
        roles: (N,) long, :class:`Role` codes.
        scale_rewards: divide by ``sigma_c + eps`` (TRL's ``scale_rewards="group"``) or not (``"none"``).
        exclude_anchor_from_baseline: take the anchor/generalization baseline over generalization
            samples only.
        eps: added to ``sigma_c`` before dividing.
    """
    if not (rewards.shape == case_index.shape == roles.shape) or rewards.dim() != 1:
        raise ValueError(
            f"rewards, case_index and roles must be 1-D and of one length; got shapes "
            f"{tuple(rewards.shape)}, {tuple(case_index.shape)}, {tuple(roles.shape)}"
        )
    rewards = rewards.float()
    num_cases = int(case_index.max().item()) + 1 if case_index.numel() else 0
    mean = torch.zeros_like(rewards)
    std = torch.ones_like(rewards)
    degenerate = torch.zeros_like(rewards, dtype=torch.bool)
    zero_std_generalization = torch.zeros(num_cases, dtype=torch.bool, device=rewards.device)
    has_generalization = torch.zeros(num_cases, dtype=torch.bool, device=rewards.device)
    is_generalization = roles == Role.GENERALIZATION
    is_anchor = roles == Role.ANCHOR
    is_locality = roles == Role.LOCALITY
    for case in range(num_cases):
        in_case = case_index == case
        edited = in_case & (is_anchor | is_generalization)
        baseline_set = in_case & is_generalization if exclude_anchor_from_baseline else edited
        case_mean, case_std, case_degenerate = _group_statistics(rewards, baseline_set)
        mean[edited], std[edited], degenerate[edited] = case_mean, case_std, case_degenerate
        scored_generalization = in_case & is_generalization & ~torch.isnan(rewards)
        has_generalization[case] = bool(scored_generalization.any())
        if has_generalization[case]:
            zero_std_generalization[case] = bool(_group_statistics(rewards, in_case & is_generalization)[2])
        locality = in_case & is_locality
        if locality.any():
            mean[locality], std[locality], degenerate[locality] = _group_statistics(rewards, locality)
    advantages = rewards - mean
    if scale_rewards:
        advantages = advantages / (std + eps)
    advantages = torch.nan_to_num(advantages, nan=0.0)
    return PGAAResult(advantages, mean, std, zero_std_generalization, has_generalization, degenerate)


def add_alignment_term(
    advantages: torch.Tensor,
    cosines: torch.Tensor,
    roles: torch.Tensor,
    alignment_coef: float,
    case_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """``A_i + alignment_coef * cos(g_i, g_c)`` for generalization samples; other roles unchanged.

    With ``case_index``, the cosine is centred first: each generalization sample gets
    ``cos_i - mean_c(cos)`` over its case's generalization samples, so the term only re-ranks samples within
    a case instead of adding one shared bonus to all of them (measured on the knowledge world: cosines
    average ~0.6 with a spread of ~0.35, so the plain term is mostly a uniform push on whatever was sampled).

    A NaN cosine (which the ghost computation never produces, but a caller might) counts as 0.
    """
    cosines = torch.nan_to_num(cosines.to(advantages.dtype), nan=0.0)
    generalization = roles == Role.GENERALIZATION
    if case_index is not None:
        cosines = cosines - _case_means(cosines, case_index, generalization)
    bonus = alignment_coef * cosines
    return advantages + torch.where(generalization, bonus, torch.zeros_like(bonus))


def add_constant_alignment_term(
    advantages: torch.Tensor, cosines: torch.Tensor, roles: torch.Tensor, alignment_coef: float
) -> torch.Tensor:
    """The constant-bonus control (``alignment_mode="constant"``): every generalization sample gets
    ``alignment_coef * mean(cos)``, the mean over the batch's generalization samples; other roles unchanged.

    The push has the same mean as :func:`add_alignment_term`'s but no direction: which samples the term
    favours is decided by nothing. Comparing the two tells whether PGAA's gain comes from the gradient
    direction or from lifting generalization samples as a whole. A NaN cosine counts as 0, as there.
    """
    cosines = torch.nan_to_num(cosines.to(advantages.dtype), nan=0.0)
    generalization = roles == Role.GENERALIZATION
    mean = cosines[generalization].mean() if generalization.any() else cosines.new_zeros(())
    return add_alignment_term(advantages, mean.expand_as(cosines), roles, alignment_coef)


def _case_means(values: torch.Tensor, case_index: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Per sample, the mean of ``values`` over the selected samples of its case (0 where a case has none)."""
    num_cases = int(case_index.max().item()) + 1 if case_index.numel() else 0
    weights = selected.to(values.dtype)
    sums = torch.zeros(num_cases, dtype=values.dtype, device=values.device).index_add_(
        0, case_index, values * weights
    )
    counts = torch.zeros(num_cases, dtype=values.dtype, device=values.device).index_add_(
        0, case_index, weights
    )
    return (sums / counts.clamp_min(1))[case_index]
