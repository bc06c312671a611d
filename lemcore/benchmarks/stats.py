"""Confidence intervals for benchmark metrics, paired differences between two runs, and re-scoring changes.

Values come as {item id: [one value per sample]}. Each item counts once (its samples are averaged), so an
item with more successful samples does not weigh more. Which method applies depends on the data:

- **0/1 metrics with one sample per item** (GSM8K accuracy, TruthfulQA MC1: every value is 0 or the metric's
  full scale, e.g. 100 for a percentage): the exact **Clopper-Pearson** interval, inverted from the binomial
  distribution. Its coverage is at least the nominal level for every n and every true proportion. A
  percentile bootstrap of such data under-covers at the extremes (1 of 50 gave [0, 6] %, 0 of 6 gave
  [0, 0]); Wilson's score interval is better but still dips below 95 %: at n = 50 its exact coverage is
  92.2 % at p = 0.02 and 93.5 % at p = 0.5 (Clopper-Pearson: 98.2 % and 96.7 %).
- **Paired 0/1 differences** (B − A over the items both runs scored, one sample each): the exact **McNemar**
  test, i.e. a two-sided sign test on the discordant items. With g items that B got right and A wrong
  (gains) and l the other way round (losses), under "no difference" g ~ Binomial(g + l, 1/2); the p-value
  is min(1, 2 · P(X <= min(g, l))). Gaining 5 items and losing 0 gives p = 0.0625: not distinguishable.
  The interval for the difference Δ = p_gain − p_loss writes Δ = D · (2θ − 1), with D = p_gain + p_loss
  the share of discordant items and θ = p_gain / D the share of gains among them. θ gets the exact
  (conditional) Clopper-Pearson interval from g of g + l, D the Clopper-Pearson interval from g + l of n,
  and the interval for Δ is the range of D · (2θ − 1) over both. It excludes zero exactly when the McNemar
  p-value is below 1 − level (D > 0, and 2θ − 1 keeps one sign exactly when θ's interval excludes 1/2), so
  the interval and the verdict never disagree. Each part covers with probability at least 95 %, so the
  pair does with at least 90 % (Bonferroni); computed exactly at n = 50 over a grid of (p_gain, p_loss)
  its coverage never fell below 96.9 %. Newcombe's paired score method was not used: it is not tied to
  the exact test, and for 5 gains and 0 losses in 50 it excludes zero while the exact p-value is 0.0625.
- **Everything else** (judge means on 1–10, several samples per item): the two-level percentile bootstrap.
  Items are drawn with replacement, then each drawn item's samples are drawn with replacement, which
  captures both the choice-of-questions noise and the run-to-run sampling noise the lab's single runs
  could not see. Fixed seed: the same data always gives the same interval.

Re-scoring the same responses with a different scorer (`lem score --original`) is not a sample of
anything: the difference is exact, so it is reported as counts of changed items (`rescoring_changes`),
never with an interval or a noise verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

Values = Mapping[str, Sequence[float]]
_BLOCK = 256  # bootstrap replicates per vectorised block (bounds memory for big runs)

BOOTSTRAP = "two-level percentile bootstrap"
CLOPPER_PEARSON = "exact Clopper-Pearson"
MCNEMAR = "exact McNemar (sign) test; interval D·(2θ−1) from Clopper-Pearson intervals"


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n_items: int
    n_values: int
    level: float = 0.95
    method: str = BOOTSTRAP

    def as_dict(self) -> dict[str, float | int | str | None]:
        """JSON-safe: a missing value (no items) is None, never NaN."""
        return {"mean": _finite(self.mean), "low": _finite(self.low), "high": _finite(self.high),
                "n_items": self.n_items, "n_values": self.n_values, "level": self.level, "method": self.method}


@dataclass(frozen=True)
class Difference:
    """B − A over the items both runs scored."""

    delta: Interval
    distinguishable: bool  # the difference is larger than the noise (interval excludes 0; exact: p < 1 − level)
    only_a: int  # items only run A has (left out)
    only_b: int
    p_value: float | None = None  # exact McNemar test (0/1 metrics); None for the bootstrap
    gains: int | None = None  # 0/1 metrics: items B got right and A wrong
    losses: int | None = None  # ... and A right, B wrong

    def as_dict(self) -> dict[str, float | int | str | bool | None]:
        return {**self.delta.as_dict(), "distinguishable": self.distinguishable, "only_a": self.only_a,
                "only_b": self.only_b, "p_value": self.p_value, "gains": self.gains, "losses": self.losses}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# -- exact binomial machinery ----------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz evaluation)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for a, b > 0."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return _betainc(n - k, k + 1, 1.0 - p)


def _solve_increasing(f: Callable[[float], float], target: float) -> float:
    """p in [0, 1] with f(p) = target for an increasing f (bisection to double precision)."""
    lo, hi = 0.0, 1.0
    for _ in range(64):
        mid = (lo + hi) / 2
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return (lo + hi) / 2


def proportion_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact Clopper-Pearson interval for a proportion (as fractions, 0-1). n = 0: (0, 1)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"{successes} successes out of {n}")
    tail = (1 - level) / 2
    # Lower: P(X >= x | p) = tail, increasing in p. Upper: P(X <= x | p) = tail, decreasing in p.
    low = 0.0 if successes == 0 else _solve_increasing(lambda p: 1.0 - binom_cdf(successes - 1, n, p), tail)
    high = 1.0 if successes == n else _solve_increasing(lambda p: -binom_cdf(successes, n, p), -tail)
    return low, high


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval (fractions); kept for comparison (see the module docstring), not used."""

    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test_p(gains: int, losses: int) -> float:
    """Two-sided exact McNemar / sign test: min(1, 2 · P(X <= min(g, l))), X ~ Binomial(g + l, 1/2)."""
    m = gains + losses
    if m == 0:
        return 1.0
    tail: int = sum(math.comb(m, i) for i in range(min(gains, losses) + 1))  # exact integers: 5 vs 0 is 1/16
    return min(1.0, 2 * tail / (1 << m))  # int / int: exact, and no overflow for big m


def paired_proportion_interval(gains: int, losses: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Interval for p_gain − p_loss (fractions) from the discordant counts of n paired items (see the module
    docstring): the range of D · (2θ − 1) over the Clopper-Pearson intervals of D and θ."""
    m = gains + losses
    if n <= 0:
        return -1.0, 1.0
    t_low, t_high = proportion_interval(gains, m, level) if m else (0.0, 1.0)
    d_low, d_high = proportion_interval(m, n, level)
    lo_factor, hi_factor = 2 * t_low - 1, 2 * t_high - 1
    low = (d_low if lo_factor >= 0 else d_high) * lo_factor
    high = (d_high if hi_factor >= 0 else d_low) * hi_factor
    return low, high


# -- which method -----------------------------------------------------------------------------------------
def _usable(values: Values) -> dict[str, list[float]]:
    return {i: [float(v) for v in vs] for i, vs in values.items() if len(vs)}


def _binary(data: Mapping[str, list[float]], scale: float | None) -> bool:
    """One value per item, each 0 or `scale`: the exact methods apply."""
    if not scale or not data:
        return False
    return all(len(vs) == 1 and vs[0] in (0.0, scale) for vs in data.values())


def mean_interval(values: Values, *, binary_scale: float | None = None, n_boot: int = 4000, seed: int = 0,
                  level: float = 0.95) -> Interval:
    """The metric's mean with its interval: Clopper-Pearson when `binary_scale` is given and every item has
    one value of 0 or `binary_scale`, else the two-level bootstrap."""
    data = _usable(values)
    if _binary(data, binary_scale):
        assert binary_scale is not None
        n = len(data)
        k = sum(vs[0] == binary_scale for vs in data.values())
        low, high = proportion_interval(k, n, level)
        return Interval(binary_scale * k / n, binary_scale * low, binary_scale * high, n, n, level,
                        CLOPPER_PEARSON)
    return bootstrap_mean(data, n_boot=n_boot, seed=seed, level=level)


def difference(a: Values, b: Values, *, binary_scale: float | None = None, n_boot: int = 4000, seed: int = 0,
               level: float = 0.95) -> Difference:
    """B − A over common items: the exact McNemar test and its interval for paired 0/1 data (one sample each
    side), else the paired bootstrap."""
    da, db = _usable(a), _usable(b)
    ids = sorted(set(da) & set(db))
    common_a, common_b = {i: da[i] for i in ids}, {i: db[i] for i in ids}
    if ids and _binary(common_a, binary_scale) and _binary(common_b, binary_scale):
        assert binary_scale is not None
        gains = sum(common_b[i][0] > common_a[i][0] for i in ids)
        losses = sum(common_b[i][0] < common_a[i][0] for i in ids)
        n = len(ids)
        p = sign_test_p(gains, losses)
        low, high = paired_proportion_interval(gains, losses, n, level)
        iv = Interval(binary_scale * (gains - losses) / n, binary_scale * low, binary_scale * high, n, 2 * n,
                      level, MCNEMAR)
        return Difference(iv, p < 1 - level, len(set(da) - set(db)), len(set(db) - set(da)), p, gains, losses)
    return paired_difference(a, b, n_boot=n_boot, seed=seed, level=level)


# -- bootstrap --------------------------------------------------------------------------------------------
def _padded(values: Values, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    counts = np.array([len(values[i]) for i in ids], dtype=np.int64)
    width = int(counts.max()) if len(counts) else 1
    grid = np.zeros((len(ids), width), dtype=np.float64)
    for row, i in enumerate(ids):
        grid[row, : counts[row]] = values[i]
    return grid, counts


def _resampled_item_means(grid: np.ndarray, counts: np.ndarray, picks: np.ndarray,
                          rng: np.random.Generator) -> np.ndarray:
    """Item means for bootstrap picks (B, I): each picked item's samples redrawn with replacement."""
    k = counts[picks]  # (B, I)
    width = grid.shape[1]
    pos = np.floor(rng.random((*picks.shape, width)) * k[..., None]).astype(np.int64)
    drawn = grid[picks[..., None], pos]
    mask = np.arange(width) < k[..., None]
    return np.asarray((drawn * mask).sum(-1) / k)


def _percentiles(reps: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(reps, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean(values: Values, *, n_boot: int = 4000, seed: int = 0, level: float = 0.95) -> Interval:
    data = _usable(values)
    if not data:
        nan = float("nan")
        return Interval(nan, nan, nan, 0, 0, level)
    ids = sorted(data)
    grid, counts = _padded(data, ids)
    point = float(np.mean(grid.sum(1) / counts))
    rng = np.random.default_rng(seed)
    reps = []
    for start in range(0, n_boot, _BLOCK):
        b = min(_BLOCK, n_boot - start)
        picks = rng.integers(0, len(ids), size=(b, len(ids)))
        reps.append(_resampled_item_means(grid, counts, picks, rng).mean(1))
    low, high = _percentiles(np.concatenate(reps), level)
    return Interval(point, low, high, len(ids), int(counts.sum()), level)


def paired_difference(a: Values, b: Values, *, n_boot: int = 4000, seed: int = 0,
                      level: float = 0.95) -> Difference:
    """Mean of (B − A) per item over common items, with a bootstrap that draws the same items for both."""
    da, db = _usable(a), _usable(b)
    ids = sorted(set(da) & set(db))
    only_a, only_b = len(set(da) - set(db)), len(set(db) - set(da))
    if not ids:
        nan = float("nan")
        return Difference(Interval(nan, nan, nan, 0, 0, level), False, only_a, only_b)
    grid_a, count_a = _padded(da, ids)
    grid_b, count_b = _padded(db, ids)
    point = float(np.mean(grid_b.sum(1) / count_b - grid_a.sum(1) / count_a))
    rng = np.random.default_rng(seed)
    reps = []
    for start in range(0, n_boot, _BLOCK):
        n = min(_BLOCK, n_boot - start)
        picks = rng.integers(0, len(ids), size=(n, len(ids)))
        mb = _resampled_item_means(grid_b, count_b, picks, rng)
        ma = _resampled_item_means(grid_a, count_a, picks, rng)
        reps.append((mb - ma).mean(1))
    low, high = _percentiles(np.concatenate(reps), level)
    # Rounding guard: identical runs give an interval of exactly zero width, which is not "distinguishable".
    distinguishable = bool(low > 1e-12 or high < -1e-12)
    n_values = int(count_a.sum() + count_b.sum())
    return Difference(Interval(point, low, high, len(ids), n_values, level), distinguishable, only_a, only_b)


# -- deterministic re-scoring -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Changes:
    """The same responses scored twice (original scorer, then ours): exact counts, no sampling noise."""

    n_items: int  # items both scorings have
    changed: int
    up: int  # items the re-scoring scored higher
    down: int
    original_mean: float | None  # over the common items; None when there are none
    rescored_mean: float | None
    delta: float | None
    only_original: int
    only_rescored: int

    def as_dict(self) -> dict[str, float | int | None]:
        return dict(self.__dict__)

    def text(self) -> str:
        """"re-scoring changed 5 items (+5 / −0)"."""
        return f"re-scoring changed {self.changed} item{'s' if self.changed != 1 else ''} (+{self.up} / −{self.down})"


def rescoring_changes(original: Values, rescored: Values, *, tolerance: float = 1e-9) -> Changes:
    """Per item, the re-scored value (mean over samples) against the original one."""
    do, dr = _usable(original), _usable(rescored)
    ids = sorted(set(do) & set(dr))
    before = {i: sum(do[i]) / len(do[i]) for i in ids}
    after = {i: sum(dr[i]) / len(dr[i]) for i in ids}
    up = sum(after[i] > before[i] + tolerance for i in ids)
    down = sum(after[i] < before[i] - tolerance for i in ids)
    n = len(ids)
    mean_o = sum(before.values()) / n if n else None
    mean_r = sum(after.values()) / n if n else None
    delta = mean_r - mean_o if mean_o is not None and mean_r is not None else None
    return Changes(n, up + down, up, down, mean_o, mean_r, delta, len(set(do) - set(dr)), len(set(dr) - set(do)))
