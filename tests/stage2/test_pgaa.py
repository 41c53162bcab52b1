import math

import pytest
import torch

from edit_grpo_trl.stage2.pgaa import TRL_STD_EPS, Role, add_alignment_term, pgaa_advantages

A, G, L = Role.ANCHOR, Role.GENERALIZATION, Role.LOCALITY
EPS = TRL_STD_EPS


def run(rows, **kwargs):
    """rows: (case, role, reward) triples."""
    case = torch.tensor([r[0] for r in rows])
    role = torch.tensor([int(r[1]) for r in rows])
    reward = torch.tensor([r[2] for r in rows], dtype=torch.float32)
    return pgaa_advantages(reward, case, role, **kwargs)


def test_anchor_excluded_baseline_matches_hand_computation():
    rows = [
        (0, A, 1.0),
        (0, A, 1.0),
        (0, G, 1.0),
        (0, G, 0.0),
        (0, G, 0.0),
        (0, G, 0.0),
        (0, L, 1.0),
        (0, L, 0.0),
    ]
    result = run(rows)
    # generalization rewards [1, 0, 0, 0]: mean 0.25, unbiased std 0.5
    up, down = 0.75 / (0.5 + EPS), -0.25 / (0.5 + EPS)
    # locality rewards [1, 0] are their own group: mean 0.5, std sqrt(0.5)
    loc = 0.5 / (math.sqrt(0.5) + EPS)
    expected = [up, up, up, down, down, down, loc, -loc]
    torch.testing.assert_close(result.advantages, torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_without_exclusion_anchor_joins_the_baseline():
    rows = [(0, A, 1.0), (0, A, 1.0), (0, G, 1.0), (0, G, 0.0), (0, G, 0.0), (0, G, 0.0)]
    result = run(rows, exclude_anchor_from_baseline=False)
    std = math.sqrt(6 * 0.25 / 5)  # rewards [1,1,1,0,0,0]: mean 0.5
    expected = [0.5 / (std + EPS)] * 3 + [-0.5 / (std + EPS)] * 3
    torch.testing.assert_close(result.advantages, torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_one_generalization_sample_uses_unit_std():
    result = run([(0, A, 1.0), (0, A, 0.0), (0, G, 0.5)])
    expected = [0.5 / (1 + EPS), -0.5 / (1 + EPS), 0.0]
    torch.testing.assert_close(result.advantages, torch.tensor(expected), rtol=1e-6, atol=1e-6)
    assert result.degenerate_group.tolist() == [True, True, True]


def test_no_generalization_sample_uses_zero_mean_unit_std():
    result = run([(0, A, 1.0), (0, A, 0.0), (0, L, 1.0), (0, L, 1.0)])
    torch.testing.assert_close(result.advantages, torch.tensor([1 / (1 + EPS), 0.0, 0.0, 0.0]))
    assert not result.has_generalization[0]


def test_nan_rewards_are_left_out_of_the_baseline_and_get_zero_advantage():
    rows = [(0, A, 1.0), (0, G, 1.0), (0, G, float("nan")), (0, G, 0.0)]
    result = run(rows)
    std = math.sqrt(0.5)  # over [1, 0] only
    expected = [0.5 / (std + EPS), 0.5 / (std + EPS), 0.0, -0.5 / (std + EPS)]
    torch.testing.assert_close(result.advantages, torch.tensor(expected), rtol=1e-6, atol=1e-6)
    assert torch.isfinite(result.advantages).all()


def test_scaling_off_subtracts_the_mean_only():
    rows = [(0, A, 1.0), (0, G, 1.0), (0, G, 0.0), (0, G, 0.0), (0, G, 0.0)]
    result = run(rows, scale_rewards=False)
    torch.testing.assert_close(result.advantages, torch.tensor([0.75, 0.75, -0.25, -0.25, -0.25]))


def test_zero_spread_generalization_does_not_blow_up_the_anchor():
    # All paraphrases failed alike: the anchor must not get (1 - 0) / eps = 10^4.
    result = run([(0, A, 1.0), (0, G, 0.0), (0, G, 0.0)])
    torch.testing.assert_close(result.advantages, torch.tensor([1 / (1 + EPS), 0.0, 0.0]))
    assert result.zero_std_generalization.tolist() == [True]


def test_cases_are_normalized_independently_and_order_does_not_matter():
    rows = [(0, G, 1.0), (1, G, 5.0), (0, G, 0.0), (1, G, 3.0), (1, A, 4.0), (0, A, 1.0)]
    result = run(rows)
    alone0 = run([(0, G, 1.0), (0, G, 0.0), (0, A, 1.0)]).advantages
    alone1 = run([(0, G, 5.0), (0, G, 3.0), (0, A, 4.0)]).advantages
    torch.testing.assert_close(result.advantages[[0, 2, 5]], alone0)
    torch.testing.assert_close(result.advantages[[1, 3, 4]], alone1)


def test_alignment_term_only_touches_generalization_rows():
    advantages = torch.tensor([1.0, 2.0, 3.0])
    roles = torch.tensor([int(A), int(G), int(L)])
    cosines = torch.tensor([0.5, -0.5, float("nan")])
    out = add_alignment_term(advantages, cosines, roles, alignment_coef=0.2)
    torch.testing.assert_close(out, torch.tensor([1.0, 1.9, 3.0]))


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="one length"):
        pgaa_advantages(torch.zeros(3), torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long))


def test_unknown_role_names_the_valid_ones():
    with pytest.raises(ValueError, match="anchor, generalization, locality"):
        Role.parse("paraphrase")


def test_centred_alignment_term_only_reranks_within_a_case():
    roles = torch.tensor([int(A), int(G), int(G), int(G), int(L), int(G), int(G)])
    case = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    cosines = torch.tensor([0.9, 0.7, 0.4, 0.1, 0.5, 0.6, 0.6])
    advantages = torch.zeros(7)
    out = add_alignment_term(advantages, cosines, roles, alignment_coef=2.0, case_index=case)
    # Case 0's generalization cosines 0.7, 0.4, 0.1 have mean 0.4; case 1's are equal, so no term at all.
    torch.testing.assert_close(out, torch.tensor([0.0, 0.6, 0.0, -0.6, 0.0, 0.0, 0.0]))
    # Per case, the centred term sums to zero over generalization samples: it adds no net push.
    for c in (0, 1):
        assert out[(case == c) & (roles == int(G))].sum().abs() < 1e-6
    # Uncentred, the same cosines shift every generalization sample up.
    plain = add_alignment_term(advantages, cosines, roles, alignment_coef=2.0)
    assert (plain[roles == int(G)] > 0).all()


def test_constant_alignment_term_gives_every_generalization_row_the_mean_push():
    from edit_grpo_trl.stage2.pgaa import add_constant_alignment_term

    roles = torch.tensor([int(A), int(G), int(G), int(L), int(G), int(G)])
    cosines = torch.tensor([0.9, 0.7, 0.1, 0.5, -0.2, float("nan")])  # NaN counts as 0
    advantages = torch.tensor([1.0, -1.0, 1.0, 2.0, 0.0, 0.5])
    out = add_constant_alignment_term(advantages, cosines, roles, alignment_coef=0.5)
    # generalization cosines 0.7, 0.1, -0.2, 0 have mean 0.15: each gets 0.5 * 0.15 = 0.075
    torch.testing.assert_close(out, torch.tensor([1.0, -0.925, 1.075, 2.0, 0.075, 0.575]))
    # the same total push as the per-sample term, spread evenly
    plain = add_alignment_term(advantages, cosines, roles, alignment_coef=0.5)
    generalization = roles == int(G)
    torch.testing.assert_close(
        (out - advantages)[generalization].sum(), (plain - advantages)[generalization].sum()
    )
    # a batch without generalization rows is left as it was
    no_generalization = torch.tensor([int(A), int(L)])
    torch.testing.assert_close(
        add_constant_alignment_term(advantages[:2], cosines[:2], no_generalization, 0.5), advantages[:2]
    )
