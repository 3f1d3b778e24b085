"""Statistics of the report against hand-computed cases (and scipy's own tests as a second opinion).

stats.py computes t statistics from their formulas and takes only the t distribution from scipy;
the references here are numbers worked by hand in the comments and scipy.stats.ttest_rel /
ttest_ind, which share no code with those formulas.
"""

import math

import pytest
from scipy import stats as scipy_stats

from harness.report.stats import ALPHA, compare, ranking_stability, t_interval


def test_t_interval_by_hand():
    # values 60, 62, 64: mean 62, s = 2, t(0.975, 2) = 4.3027 (tables), half width 4.3027 * 2 / sqrt(3) = 4.968.
    interval = t_interval([60.0, 62.0, 64.0])
    assert interval.mean == pytest.approx(62.0, abs=1e-12)
    assert interval.half_width == pytest.approx(4.968, abs=5e-4)  # a z quantile (1.96) would give 2.263
    assert (interval.low, interval.high, interval.n) == pytest.approx((57.032, 66.968, 3), abs=5e-4)
    single = t_interval([50.0])
    assert single.half_width is None and single.low == single.high == 50.0


def test_paired_t_by_hand_and_against_scipy():
    # Seeds 0..3; method - full = 2, 3, 1, 2: mean 2, s = sqrt(((0)^2 + 1 + 1 + 0) / 3) = 0.8165,
    # se = 0.8165 / 2 = 0.40825, t = 4.899 on 3 df; two-sided p = 0.0163 (t tables: between 0.01 and 0.02).
    full = {0: 50.0, 1: 52.0, 2: 51.0, 3: 49.0}
    method = {0: 52.0, 1: 55.0, 2: 52.0, 3: 51.0}
    result = compare(method, full)
    assert result.test == "paired t" and result.n == 4 and result.df == 3
    assert result.difference == pytest.approx(2.0)
    assert result.statistic == pytest.approx(4.899, abs=5e-4)
    reference = scipy_stats.ttest_rel([method[s] for s in range(4)], [full[s] for s in range(4)])
    assert result.statistic == pytest.approx(reference.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert 0.01 < result.p_value < 0.02 and result.significant
    # The same numbers compared unpaired (Welch) are not significant: pairing by seed is what found it.
    assert compare(method, {s + 10: v for s, v in full.items()}).p_value > ALPHA


def test_welch_when_seeds_differ_against_scipy():
    # a = 70, 72, 74 (mean 72, var 4), b = 60, 61 (mean 60.5, var 0.5): se^2 = 4/3 + 0.5/2 = 1.5833,
    # t = 11.5 / 1.2583 = 9.139; df = 1.5833^2 / ((4/3)^2/2 + 0.25^2/1) = 2.507 / 0.9514 = 2.635.
    a, b = {0: 70.0, 1: 72.0, 2: 74.0}, {0: 60.0, 5: 61.0}
    result = compare(a, b)
    assert result.test == "Welch t" and result.n == 2
    assert result.statistic == pytest.approx(9.139, abs=5e-4)
    assert result.df == pytest.approx(2.635, abs=5e-4)
    reference = scipy_stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert compare({0: 1.0}, {0: 2.0}) is None  # one seed each: no test


def test_identical_runs_are_no_evidence_and_constant_shift_is_certain():
    same = {0: 30.0, 1: 33.0, 2: 35.0}
    assert compare(same, same).p_value == 1.0 and not compare(same, same).significant
    shifted = compare({s: v + 1 for s, v in same.items()}, same)
    assert math.isinf(shifted.statistic) and shifted.significant


def test_ranking_stability():
    # Three methods, three seeds: a > b > c on every seed: stable. Swap b and c on seed 2: not stable,
    # 2 of 3 pairs (a-b, a-c) still ordered the same on every seed.
    stable = ranking_stability({"a": {0: 9, 1: 9, 2: 9}, "b": {0: 5, 1: 6, 2: 5}, "c": {0: 1, 1: 2, 2: 3}})
    assert stable.stable and stable.order == ["a", "b", "c"] and stable.pairs == 3
    swapped = ranking_stability({"a": {0: 9, 1: 9, 2: 9}, "b": {0: 5, 1: 6, 2: 2}, "c": {0: 1, 1: 2, 2: 3}})
    assert not swapped.stable and swapped.consistent_pairs == 2
    assert swapped.best_by_seed == {0: "a", 1: "a", 2: "a"}
    assert ranking_stability({"a": {0: 1, 1: 2}}) is None  # one method
    assert ranking_stability({"a": {0: 1}, "b": {0: 2}}) is None  # one shared seed
