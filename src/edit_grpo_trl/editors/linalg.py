"""The closed-form weight updates of ROME, MEMIT and AlphaEdit, as pure functions on tensors.

Shapes follow ``nn.Linear``: a weight is ``(out, in)``; keys are ``in``-vectors (the MLP projection's input),
values are ``out``-vectors. Solves run in float64: second-moment matrices are badly conditioned.
"""

from __future__ import annotations

import torch

_SOLVE_DTYPE = torch.float64


def rome_key_direction(key: torch.Tensor, second_moment: torch.Tensor | None = None) -> torch.Tensor:
    """ROME's left vector: ``C^-1 k`` with the second-moment adjustment, or ``k`` without; unit length."""
    direction = key.to(_SOLVE_DTYPE)
    if second_moment is not None:
        direction = torch.linalg.solve(second_moment.to(_SOLVE_DTYPE), direction)
    return direction / direction.norm()


def rank_one_update(
    direction: torch.Tensor, key: torch.Tensor, value: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """``(target - value) direction^T / (direction . key)``: after it, ``W' key = target`` exactly.

    Only inputs with a component along ``direction`` are affected; the update has rank one.
    """
    direction, key = direction.to(_SOLVE_DTYPE), key.to(_SOLVE_DTYPE)
    scale = torch.dot(direction, key)
    if scale.abs() < 1e-12:
        raise ValueError("the key is orthogonal to the update direction; a rank-one edit cannot reach it")
    return torch.outer((target - value).to(_SOLVE_DTYPE) / scale, direction).float()


def memit_update(
    keys: torch.Tensor, residuals: torch.Tensor, second_moment: torch.Tensor, moment_weight: float
) -> torch.Tensor:
    """MEMIT's least-squares update ``R K^T (lambda C + K K^T)^-1`` for keys ``(n, in)`` and residuals ``(n, out)``.

    It writes the new residuals at the new keys while changing the outputs for keys distributed as the
    second moment ``C`` (weighted by ``moment_weight``, i.e. lambda) as little as possible.
    """
    keys, residuals = keys.to(_SOLVE_DTYPE), residuals.to(_SOLVE_DTYPE)
    system = moment_weight * second_moment.to(_SOLVE_DTYPE) + keys.T @ keys
    adjusted_keys = torch.linalg.solve(system, keys.T)  # (in, n)
    return (residuals.T @ adjusted_keys.T).float()


def null_space_projector(second_moment: torch.Tensor, threshold: float) -> torch.Tensor:
    """AlphaEdit's ``P``: projector onto the eigenvectors of ``K0 K0^T`` whose eigenvalues are below ``threshold``.

    An update ``Delta = X P`` leaves ``Delta k0 ~ 0`` for every preserved key ``k0`` (their energy lives in the
    other eigenvectors).
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(second_moment.to(_SOLVE_DTYPE))
    kept = eigenvectors[:, eigenvalues < threshold]
    return kept @ kept.T


def alphaedit_update(
    keys: torch.Tensor,
    residuals: torch.Tensor,
    projector: torch.Tensor,
    previous_keys_moment: torch.Tensor,
    l2: float,
) -> torch.Tensor:
    """AlphaEdit's update ``R K^T P (K_p K_p^T P + K K^T P + l2 I)^-1``, written as a solve.

    ``previous_keys_moment`` is ``K_p K_p^T`` over the keys of earlier edits, which the update must not
    disturb either. The result is ``(out, in)`` and vanishes on the preserved keys' span: ``Delta P = Delta``.
    """
    keys, residuals = keys.to(_SOLVE_DTYPE), residuals.to(_SOLVE_DTYPE)
    projector = projector.to(_SOLVE_DTYPE)
    size = projector.shape[0]
    system = projector @ (keys.T @ keys + previous_keys_moment.to(_SOLVE_DTYPE)) + l2 * torch.eye(
        size, dtype=_SOLVE_DTYPE, device=projector.device
    )
    solution = torch.linalg.solve(system, projector @ keys.T @ residuals)  # (in, out)
    return solution.T.float()
