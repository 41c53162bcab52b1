"""Paired comparisons over edit cases: is one point (or method) better than another on the same cases?

Two evaluations of the same cases give, per case and metric, a difference ``d_i = after_i - before_i``.
Whether their mean differs from 0 is tested with a sign-flip permutation test: under the null hypothesis
that the two points are exchangeable, each ``d_i`` is as likely as ``-d_i``, so the observed mean is
compared with the means of every sign pattern (all ``2^n`` of them for up to ``EXACT_UP_TO`` cases, else a
seeded random sample). It assumes nothing about the shape of the differences (many are 0 or +-1 here:
per-case scores are shares of a few probes), and it is two-sided.

Pure functions; the report (``report.py``) and the benchmark call them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

EXACT_UP_TO = 16  # 65,536 sign patterns
DEFAULT_RESAMPLES = 20_000


@dataclass(frozen=True)
class PairedTest:
    """The paired difference of one metric over ``n`` cases, and its sign-flip permutation p-value."""

    n: int
    mean: float  # mean of after - before
    stderr: float  # its standard error (sample std / sqrt(n)); 0 with fewer than 2 cases
    better: int  # cases with after > before
    worse: int  # cases with after < before
    p_value: float  # two-sided; 1.0 when every difference is 0 or there are no cases


def paired_permutation_test(
    differences: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> PairedTest:
    """Sign-flip permutation test of ``mean(differences) != 0``."""
    values = [float(d) for d in differences]
    n = len(values)
    if n == 0:
        return PairedTest(0, 0.0, 0.0, 0, 0, 1.0)
    mean = sum(values) / n
    stderr = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else 0.0
    better, worse = sum(v > 0 for v in values), sum(v < 0 for v in values)
    observed = abs(sum(values))
    if observed == 0:
        return PairedTest(n, mean, stderr, better, worse, 1.0)
    tolerance = 1e-9 * max(1.0, observed)  # sums equal up to float rounding count as "as extreme"
    nonzero = np.array([v for v in values if v != 0])  # a zero difference flips to itself
    if len(nonzero) <= EXACT_UP_TO:
        patterns = np.arange(2 ** len(nonzero))[:, None] >> np.arange(len(nonzero))[None, :] & 1
        signs = 1 - 2 * patterns  # every +-1 pattern once
        p_value = float(np.mean(np.abs(signs @ nonzero) >= observed - tolerance))
    else:
        signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=(resamples, len(nonzero)))
        extreme = int(np.sum(np.abs(signs @ nonzero) >= observed - tolerance))
        p_value = (extreme + 1) / (resamples + 1)  # the observed pattern counts as one of the draws
    return PairedTest(n, mean, stderr, better, worse, min(1.0, p_value))


def paired_case_tests(
    before: Iterable[Mapping], after: Iterable[Mapping], metrics: Sequence[str], key: str = "case_id"
) -> dict[str, PairedTest]:
    """Per metric, the paired test of ``after - before`` over the cases both hold a value for.

    ``before`` and ``after`` are per-case rows (``per_case.jsonl``), matched by ``key``.
    """
    earlier = {row[key]: row for row in before}
    later = {row[key]: row for row in after}
    shared = [case for case in later if case in earlier]
    results = {}
    for metric in metrics:
        differences = [
            later[case][metric] - earlier[case][metric]
            for case in shared
            if isinstance(later[case].get(metric), int | float)
            and isinstance(earlier[case].get(metric), int | float)
        ]
        if differences:
            results[metric] = paired_permutation_test(differences)
    return results
