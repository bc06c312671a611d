"""Confidence intervals by bootstrap over items and samples, and paired differences between two runs.

Values come as {item id: [one value per sample]}. Each item counts once (its samples are averaged), so an
item with more successful samples does not weigh more. The bootstrap is two-level: items are drawn with
replacement, then each drawn item's samples are drawn with replacement, which captures both the
choice-of-questions noise and the run-to-run sampling noise the lab's single runs could not see. Percentile
intervals, fixed seed: the same data always gives the same interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Values = Mapping[str, Sequence[float]]
_BLOCK = 256  # bootstrap replicates per vectorised block (bounds memory for big runs)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n_items: int
    n_values: int
    level: float = 0.95

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n_items": self.n_items,
                "n_values": self.n_values, "level": self.level}


@dataclass(frozen=True)
class Difference:
    """B − A over the items both runs scored."""

    delta: Interval
    distinguishable: bool  # the interval excludes zero: the difference is larger than the noise
    only_a: int  # items only run A has (left out)
    only_b: int


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


def _usable(values: Values) -> dict[str, list[float]]:
    return {i: [float(v) for v in vs] for i, vs in values.items() if len(vs)}


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


def normal_proportion_interval(p: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The textbook (Wald) interval for a proportion: what a bootstrap of n 0/1 items approaches."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    half = z * (p * (1 - p) / n) ** 0.5
    return p - half, p + half
