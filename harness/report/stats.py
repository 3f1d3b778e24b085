"""Statistics over seeds: intervals, tests against a reference method, ranking stability.

A seed is the unit of replication, so a cell's n is its number of ok seeds. With so few seeds
and an unknown variance every interval and test uses Student's t: the 95% interval of a mean is
mean ± t(0.975, n-1)·s/√n; a method is compared with the reference by a paired t-test on the
seeds both ran (when their seed sets are the same), else by Welch's t-test; two-sided, alpha 0.05,
uncorrected for the number of comparisons (the report says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Mapping, Optional, Sequence

from scipy import stats as scipy_stats

LEVEL = 0.95
ALPHA = 0.05


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided t interval; `half_width` is None with fewer than two values."""

    mean: float
    half_width: Optional[float]
    n: int

    @property
    def low(self) -> float:
        return self.mean - (self.half_width or 0.0)

    @property
    def high(self) -> float:
        return self.mean + (self.half_width or 0.0)


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    n = len(values)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(mean, None, n)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    quantile = float(scipy_stats.t.ppf(1 - (1 - level) / 2, n - 1))
    return Interval(mean, quantile * sd / math.sqrt(n), n)


@dataclass(frozen=True)
class Comparison:
    """A method against the reference: difference of means (method - reference) and its test."""

    test: str  # "paired t" or "Welch t"
    n: int  # pairs (paired) or the smaller group (Welch)
    difference: float
    statistic: float
    df: float
    p_value: float
    # half width of the 95% t interval of the difference: what the seeds allow it to be, beside the p value
    difference_ci95: float = math.nan

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def compare(method: Mapping[int, float], reference: Mapping[int, float]) -> Optional[Comparison]:
    """Paired by seed when both ran the same seeds, else Welch; None when a side has < 2 values."""
    if set(method) == set(reference) and len(method) >= 2:
        differences = [method[s] - reference[s] for s in sorted(method)]
        n = len(differences)
        mean = math.fsum(differences) / n
        sd = math.sqrt(math.fsum((d - mean) ** 2 for d in differences) / (n - 1))
        return _result("paired t", n, mean, mean, sd / math.sqrt(n), n - 1)
    a, b = list(method.values()), list(reference.values())
    if len(a) < 2 or len(b) < 2:
        return None
    mean_a, mean_b = math.fsum(a) / len(a), math.fsum(b) / len(b)
    se2_a = math.fsum((v - mean_a) ** 2 for v in a) / (len(a) - 1) / len(a)
    se2_b = math.fsum((v - mean_b) ** 2 for v in b) / (len(b) - 1) / len(b)
    denominator = se2_a ** 2 / (len(a) - 1) + se2_b ** 2 / (len(b) - 1)
    df = (se2_a + se2_b) ** 2 / denominator if denominator > 0 else float(len(a) + len(b) - 2)
    return _result("Welch t", min(len(a), len(b)), mean_a - mean_b, mean_a - mean_b, math.sqrt(se2_a + se2_b), df)


def _result(test: str, n: int, difference: float, numerator: float, standard_error: float, df: float) -> Comparison:
    if standard_error == 0:  # identical spreads of zero: equal means are no evidence, unequal ones certain
        statistic = 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
        p_value = 1.0 if numerator == 0 else 0.0
    else:
        statistic = numerator / standard_error
        p_value = float(2 * scipy_stats.t.sf(abs(statistic), df))
    half_width = float(scipy_stats.t.ppf(1 - (1 - LEVEL) / 2, df)) * standard_error
    return Comparison(test, n, difference, statistic, df, p_value, half_width)


@dataclass(frozen=True)
class RankingStability:
    """Whether every seed orders the methods the same way (ties count as an order of their own)."""

    order: list[str]  # by mean over the seeds, best first
    seeds: list[int]
    consistent_pairs: int
    pairs: int
    best_by_seed: dict[int, str]

    @property
    def stable(self) -> bool:
        return self.consistent_pairs == self.pairs


def ranking_stability(accuracy: Mapping[str, Mapping[int, float]]) -> Optional[RankingStability]:
    """Over the seeds every method ran; None with fewer than two methods or two such seeds."""
    if len(accuracy) < 2:
        return None
    seeds = sorted(set.intersection(*(set(by_seed) for by_seed in accuracy.values())))
    if len(seeds) < 2:
        return None
    methods = list(accuracy)
    means = {m: math.fsum(accuracy[m][s] for s in seeds) / len(seeds) for m in methods}
    order = sorted(methods, key=lambda m: -means[m])
    consistent = sum(
        len({_sign(accuracy[a][s] - accuracy[b][s]) for s in seeds}) == 1 for a, b in combinations(methods, 2))
    best = {s: max(methods, key=lambda m: accuracy[m][s]) for s in seeds}
    return RankingStability(order, seeds, consistent, len(methods) * (len(methods) - 1) // 2, best)


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)
