"""The closed-form updates: exactness, rank, least-squares optimality, null-space preservation."""

import torch

from edit_grpo_trl.editors.linalg import (
    alphaedit_update,
    memit_update,
    null_space_projector,
    rank_one_update,
    rome_key_direction,
)


def _second_moment(samples: torch.Tensor) -> torch.Tensor:
    return samples.T @ samples / samples.shape[0]


def test_rank_one_update_hits_the_target_and_has_rank_one():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 10, generator=generator)
    key, target = torch.randn(10, generator=generator), torch.randn(6, generator=generator)
    moment = _second_moment(torch.randn(200, 10, generator=generator))
    for second_moment in (None, moment):
        direction = rome_key_direction(key, second_moment)
        delta = rank_one_update(direction, key, weight @ key, target)
        assert torch.allclose((weight + delta) @ key, target, atol=1e-5)
        assert torch.linalg.matrix_rank(delta) == 1
        assert torch.isclose(direction.norm(), torch.tensor(1.0, dtype=direction.dtype))
    # With the adjustment, inputs C-orthogonal to the key are untouched: delta @ x = 0 when x^T C^-1 k = 0.
    direction = rome_key_direction(key, moment)
    other = torch.randn(10, generator=generator, dtype=torch.float64)
    other -= (other @ direction) * direction
    delta = rank_one_update(direction, key, weight @ key, target)
    assert (delta.double() @ other).abs().max() < 1e-5


def test_memit_update_is_the_regularized_least_squares_minimizer():
    generator = torch.Generator().manual_seed(1)
    keys, residuals = torch.randn(4, 12, generator=generator), torch.randn(4, 5, generator=generator)
    moment = _second_moment(torch.randn(300, 12, generator=generator))
    weight = 3.0
    delta = memit_update(keys, residuals, moment, weight).double()
    k, r, c = keys.double(), residuals.double(), moment.double()
    # Objective ||delta K^T - R^T||^2 + weight * tr(delta C delta^T): its gradient vanishes at the minimizer.
    gradient = (delta @ k.T - r.T) @ k + weight * delta @ c
    assert gradient.abs().max() < 1e-4
    # Without the moment term (weight 0, full-rank keys' span), the residuals are written exactly.
    exact = memit_update(keys, residuals, moment, 1e-9).double()
    assert torch.allclose(exact @ k.T, r.T, atol=1e-4)


def test_alphaedit_update_vanishes_on_preserved_keys():
    generator = torch.Generator().manual_seed(2)
    # Preserved keys live in an 8-dimensional subspace of a 16-dimensional key space.
    basis = torch.linalg.qr(torch.randn(16, 16, generator=generator))[0]
    preserved = torch.randn(500, 8, generator=generator) @ basis[:, :8].T
    projector = null_space_projector(_second_moment(preserved), threshold=1e-6)
    assert torch.isclose(projector.trace(), torch.tensor(8.0, dtype=projector.dtype), atol=1e-6)
    keys, residuals = torch.randn(3, 16, generator=generator), torch.randn(3, 6, generator=generator)
    delta = alphaedit_update(keys, residuals, projector, torch.zeros(16, 16), l2=1e-3)
    assert (delta @ preserved.T).norm() / preserved.norm() < 1e-5
    assert delta.norm() > 0.1  # it still writes something, along the free directions
    # Earlier edits' keys weigh on the solve too: with them, those keys' outputs move less.
    earlier = torch.randn(2, 16, generator=generator) @ projector.float()
    free = alphaedit_update(keys, residuals, projector, torch.zeros(16, 16), l2=1e-3)
    kept = alphaedit_update(keys, residuals, projector, (earlier.T @ earlier).double() * 100, l2=1e-3)
    assert (kept @ earlier.T).norm() < 0.2 * (free @ earlier.T).norm()
