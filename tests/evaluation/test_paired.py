"""The paired test over cases: exact p-values checked by hand, the sampled path, and the report section."""

import json
import math

import pytest

from edit_grpo_trl.evaluation.paired import paired_case_tests, paired_permutation_test
from edit_grpo_trl.evaluation.report import write_report


def test_exact_p_values_match_the_hand_counted_sign_patterns():
    # five cases all better by 1: of the 32 sign patterns only all-plus and all-minus are as extreme
    assert paired_permutation_test([1, 1, 1, 1, 1]).p_value == pytest.approx(2 / 32)
    # 8 better and 4 worse by 1: the two-sided sign test, 2 * P(Binomial(12, 1/2) >= 8)
    tail = sum(math.comb(12, k) for k in range(8, 13)) / 2**12
    test = paired_permutation_test([1] * 8 + [-1] * 4)
    assert test.p_value == pytest.approx(2 * tail)
    assert (test.n, test.better, test.worse) == (12, 8, 4)
    assert test.mean == pytest.approx(4 / 12)
    assert test.stderr == pytest.approx(math.sqrt((8 * (2 / 3) ** 2 + 4 * (4 / 3) ** 2) / 11 / 12))


def test_zero_differences_count_as_neither_side_and_weigh_nothing():
    assert paired_permutation_test([0, 0, 0]).p_value == 1.0
    assert paired_permutation_test([]).n == 0
    # zeros change neither the sign patterns nor the verdict, only n
    with_zeros = paired_permutation_test([1, 1, 1, 1, 1] + [0] * 40)
    assert with_zeros.p_value == pytest.approx(2 / 32)
    assert with_zeros.n == 45 and with_zeros.better == 5


def test_the_sampled_path_separates_a_real_shift_from_noise():
    shifted = paired_permutation_test([1] * 30 + [0] * 60 + [-1] * 10)  # 40 nonzero: sampled
    assert shifted.p_value < 0.01
    assert shifted.p_value == paired_permutation_test([1] * 30 + [0] * 60 + [-1] * 10).p_value  # seeded
    balanced = paired_permutation_test([1] * 20 + [-1] * 20)
    assert balanced.p_value > 0.5


def test_cases_are_matched_by_id_and_a_case_missing_on_one_side_is_left_out():
    before = [{"case_id": "a", "m": 0.0}, {"case_id": "b", "m": 1.0}, {"case_id": "c", "m": 0.5}]
    after = [{"case_id": "c", "m": 1.0}, {"case_id": "a", "m": 1.0}, {"case_id": "z", "m": 0.0}]
    test = paired_case_tests(before, after, ["m", "absent"])["m"]
    assert test.n == 2 and test.mean == pytest.approx(0.75)
    assert "absent" not in paired_case_tests(before, after, ["m", "absent"])


def test_the_report_shows_and_saves_the_paired_test(tmp_path):
    points = {
        "post_edit": {"tf_reliability": 0.5, "tf_locality": 0.9},
        "post_refinement": {"tf_reliability": 1.0, "tf_locality": 0.9},
    }
    per_case = {
        "post_edit": [{"case_id": i, "tf_reliability": 0.0, "tf_locality": 0.9} for i in range(20)],
        "post_refinement": [{"case_id": i, "tf_reliability": 1.0, "tf_locality": 0.9} for i in range(20)],
    }
    markdown = write_report(points, tmp_path, per_case=per_case)
    saved = json.loads((tmp_path / "report_paired.json").read_text())
    assert saved["tf_reliability"]["better"] == 20 and saved["tf_reliability"]["p_value"] < 1e-3
    assert saved["tf_locality"]["p_value"] == 1.0
    assert "| Edit Succ. | 20 | +100.0 |" in markdown
    no_cases = write_report(points, tmp_path / "plain")
    assert "Paired over cases" not in no_cases and not (tmp_path / "plain" / "report_paired.json").exists()
