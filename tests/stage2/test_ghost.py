import torch

from edit_grpo_trl.stage2.ghost import (
    alignment_cosines,
    ghost_inner_products,
    ghost_squared_norms,
    mask_features,
)


def explicit_gradients(inputs, grads):
    """G_i = sum_t delta_{i,t} x_{i,t}^T, built for real: (N, d_out, d_in)."""
    return torch.einsum("nto,nti->noi", grads, inputs)


def random_features(n, t, d_in=5, d_out=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, t, d_in, generator=generator, dtype=torch.float64)
    grads = torch.randn(n, t, d_out, generator=generator, dtype=torch.float64)
    mask = torch.rand(n, t, generator=generator) > 0.3
    mask[:, 0] = True
    return mask_features(inputs, grads, mask)


def test_inner_products_equal_explicit_gradient_products():
    xa, da = random_features(4, 6, seed=1)
    xb, db = random_features(3, 5, seed=2)
    expected = torch.einsum("aoi,boi->ab", explicit_gradients(xa, da), explicit_gradients(xb, db))
    torch.testing.assert_close(ghost_inner_products(xa, da, xb, db), expected)
    torch.testing.assert_close(ghost_squared_norms(xa, da), explicit_gradients(xa, da).pow(2).sum(dim=(1, 2)))


def test_masked_positions_contribute_nothing():
    xa, da = random_features(2, 4, seed=3)
    padded_x = torch.cat([torch.randn(2, 3, xa.size(-1), dtype=xa.dtype), xa], dim=1)
    padded_d = torch.cat([torch.randn(2, 3, da.size(-1), dtype=da.dtype), da], dim=1)
    mask = torch.cat([torch.zeros(2, 3, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool)], dim=1)
    px, pd = mask_features(padded_x, padded_d, mask)
    torch.testing.assert_close(ghost_squared_norms(px, pd), ghost_squared_norms(xa, da))


def test_alignment_cosines_against_mean_anchor_gradient():
    xs, ds = random_features(5, 4, seed=4)
    xa, da = random_features(3, 6, seed=5)
    sample_groups = torch.tensor([0, 0, 1, 1, 2])
    anchor_groups = torch.tensor([0, 1, 1])  # group 2 has no anchor
    cos = alignment_cosines(xs, ds, sample_groups, xa, da, anchor_groups)
    samples, anchors = explicit_gradients(xs, ds), explicit_gradients(xa, da)
    directions = {0: anchors[0], 1: (anchors[1] + anchors[2]) / 2}
    for i, group in enumerate(sample_groups.tolist()):
        if group in directions:
            expected = torch.nn.functional.cosine_similarity(
                samples[i].flatten(), directions[group].flatten(), dim=0
            )
            torch.testing.assert_close(cos[i], expected)
        else:
            assert cos[i] == 0


def test_zero_gradient_gives_zero_not_nan():
    xs, ds = random_features(2, 3, seed=6)
    ds[1] = 0
    xa, da = random_features(1, 3, seed=7)
    cos = alignment_cosines(xs, ds, torch.tensor([0, 0]), xa, da * 0, torch.tensor([0]))
    assert torch.equal(cos, torch.zeros(2, dtype=cos.dtype))


def test_chunking_gives_the_same_result(monkeypatch):
    import edit_grpo_trl.stage2.ghost as ghost

    xa, da = random_features(6, 5, seed=8)
    full = ghost_inner_products(xa, da, xa, da)
    monkeypatch.setattr(ghost, "_CHUNK_ELEMENTS", 1)  # one row per chunk
    torch.testing.assert_close(ghost_inner_products(xa, da, xa, da), full)
