"""How far two judges agree on the same items: rank correlations with bootstrap intervals, mean absolute
difference, and a two-by-two table for a yes/no reading of the scores (refusal or not).

Used by judge calibration (`calibration.py`): the same responses judged by the lab's judge (stored scores) and
by ours. Definitions, all on the items both judged (one value per item and judge):

- **Spearman's rho**: Pearson's correlation of the two rank vectors, tied values given the mean of the ranks
  they span (so it is the usual tie-corrected rho).
- **Kendall's tau-b**: (concordant − discordant pairs) / sqrt((pairs not tied in x) · (pairs not tied in y)),
  which with sign matrices is sum(sx·sy) / sqrt(sum|sx| · sum|sy|) over all pairs. Judges' 1-10 scores tie
  a lot; tau-b is the variant that accounts for ties in both.
- **Mean absolute difference** |ours − lab| in score points, and the **mean difference** ours − lab (a judge
  that is systematically harsher or kinder shows here, even when it ranks the items the same way).
- **Intervals**: percentile bootstrap over items. All replicate draws come from one call,
  `numpy.random.default_rng(seed).integers(0, n, size=(replicates, n))`, so the same data and seed always give
  the same interval. A replicate where a correlation is undefined (every drawn value of one judge equal) is
  left out and counted (`undefined_replicates`).
- **Two-by-two table**: counts of (lab yes, ours yes) and so on, the share of items where both agree, and
  Cohen's kappa, (p_agree − p_chance) / (1 − p_chance).

Undefined values (no items, a judge that gave every item the same score) are None, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_CELLS = 2_000_000  # pair comparisons per vectorised bootstrap block (about 16 MB per array)


@dataclass(frozen=True)
class Estimate:
    value: float | None
    low: float | None
    high: float | None
    undefined_replicates: int = 0

    def as_dict(self) -> dict[str, float | int | None]:
        return {"value": self.value, "low": self.low, "high": self.high,
                "undefined_replicates": self.undefined_replicates}


@dataclass(frozen=True)
class Agreement:
    n: int  # items both judged
    spearman: Estimate
    kendall_tau_b: Estimate
    mean_abs_diff: Estimate
    mean_diff: Estimate  # ours − lab
    lab_mean: float | None
    ours_mean: float | None
    level: float
    replicates: int
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "spearman": self.spearman.as_dict(), "kendall_tau_b": self.kendall_tau_b.as_dict(),
                "mean_abs_diff": self.mean_abs_diff.as_dict(), "mean_diff": self.mean_diff.as_dict(),
                "lab_mean": self.lab_mean, "ours_mean": self.ours_mean, "level": self.level,
                "replicates": self.replicates, "seed": self.seed}


@dataclass(frozen=True)
class Confusion:
    both_yes: int  # lab yes, ours yes
    lab_only: int  # lab yes, ours no
    ours_only: int  # lab no, ours yes
    both_no: int

    @property
    def n(self) -> int:
        return self.both_yes + self.lab_only + self.ours_only + self.both_no

    @property
    def agreement(self) -> float | None:
        return (self.both_yes + self.both_no) / self.n if self.n else None

    @property
    def kappa(self) -> float | None:
        n = self.n
        if not n:
            return None
        lab_yes, ours_yes = self.both_yes + self.lab_only, self.both_yes + self.ours_only
        chance = (lab_yes * ours_yes + (n - lab_yes) * (n - ours_yes)) / (n * n)
        if chance >= 1.0:  # both said the same thing of every item: kappa is undefined
            return None
        return ((self.both_yes + self.both_no) / n - chance) / (1.0 - chance)

    def as_dict(self) -> dict[str, Any]:
        return {"both_yes": self.both_yes, "lab_only": self.lab_only, "ours_only": self.ours_only,
                "both_no": self.both_no, "n": self.n, "agreement": self.agreement, "kappa": self.kappa}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


# -- the statistics, vectorised over rows (one row per bootstrap replicate) ------------------------------
def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties given the mean of the ranks they span."""
    less = (x[..., None, :] < x[..., :, None]).sum(-1)
    equal = (x[..., None, :] == x[..., :, None]).sum(-1)
    return np.asarray(less + (equal + 1) / 2.0, dtype=np.float64)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    da = a - a.mean(-1, keepdims=True)
    db = b - b.mean(-1, keepdims=True)
    den = np.sqrt((da * da).sum(-1) * (db * db).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (da * db).sum(-1) / den
    return np.where(den > 0, out, np.nan)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _pearson_rows(average_ranks(x), average_ranks(y))


def kendall_tau_b_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    den = np.sqrt(np.abs(sx).sum((-1, -2)) * np.abs(sy).sum((-1, -2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (sx * sy).sum((-1, -2)) / den
    return np.where(den > 0, out, np.nan)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    return _finite(float(spearman_rows(np.asarray(x, float)[None], np.asarray(y, float)[None])[0]))


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    return _finite(float(kendall_tau_b_rows(np.asarray(x, float)[None], np.asarray(y, float)[None])[0]))


# -- with intervals ---------------------------------------------------------------------------------------
def _estimate(point: float, reps: np.ndarray, level: float) -> Estimate:
    defined = reps[np.isfinite(reps)]
    undefined = int(reps.size - defined.size)
    if not math.isfinite(point) or not defined.size:
        return Estimate(_finite(point), None, None, undefined)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(defined, [tail, 100 - tail])
    return Estimate(float(point), float(low), float(high), undefined)


def agreement(lab: Sequence[float], ours: Sequence[float], *, replicates: int = 2000, seed: int = 0,
              level: float = 0.95) -> Agreement:
    """Agreement of two judges' scores on the same items (`lab[i]` and `ours[i]` judge item i)."""
    x, y = np.asarray(lab, dtype=np.float64), np.asarray(ours, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("agreement needs two score lists of the same length")
    n = int(x.size)
    none = Estimate(None, None, None)
    if n == 0:
        return Agreement(0, none, none, none, none, None, None, level, replicates, seed)
    points = {"spearman": float(spearman_rows(x[None], y[None])[0]),
              "kendall": float(kendall_tau_b_rows(x[None], y[None])[0]),
              "mad": float(np.abs(y - x).mean()), "diff": float((y - x).mean())}
    picks = np.random.default_rng(seed).integers(0, n, size=(replicates, n))
    reps: dict[str, list[np.ndarray]] = {k: [] for k in points}
    block = max(1, _CELLS // (n * n))
    for start in range(0, replicates, block):
        rx, ry = x[picks[start:start + block]], y[picks[start:start + block]]
        reps["spearman"].append(spearman_rows(rx, ry))
        reps["kendall"].append(kendall_tau_b_rows(rx, ry))
        reps["mad"].append(np.abs(ry - rx).mean(-1))
        reps["diff"].append((ry - rx).mean(-1))
    est = {k: _estimate(points[k], np.concatenate(v) if v else np.empty(0), level) for k, v in reps.items()}
    return Agreement(n, est["spearman"], est["kendall"], est["mad"], est["diff"], float(x.mean()),
                     float(y.mean()), level, replicates, seed)


def confusion(lab: Sequence[bool], ours: Sequence[bool]) -> Confusion:
    pairs = list(zip(lab, ours, strict=True))
    return Confusion(sum(a and b for a, b in pairs), sum(a and not b for a, b in pairs),
                     sum(b and not a for a, b in pairs), sum(not a and not b for a, b in pairs))
