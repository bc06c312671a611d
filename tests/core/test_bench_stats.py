"""Interval code against known cases: a proportion's textbook interval, exact variance, paired differences, the
exact methods for 0/1 metrics (Clopper-Pearson, McNemar) and their coverage by simulation."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from lemcore.benchmarks.stats import (
    BOOTSTRAP,
    CLOPPER_PEARSON,
    MCNEMAR,
    bootstrap_mean,
    difference,
    mean_interval,
    paired_difference,
    paired_proportion_interval,
    proportion_interval,
    rescoring_changes,
    sign_test_p,
    wilson_interval,
)


def _items(values: list[float]) -> dict[str, list[float]]:
    return {f"Q{i:03d}": [v] for i, v in enumerate(values)}


def _wald_interval(p: float, n: int) -> tuple[float, float]:
    """The textbook normal-approximation interval, p ± 1.96·sqrt(p(1-p)/n): what a bootstrap approaches."""
    half = NormalDist().inv_cdf(0.975) * (p * (1 - p) / n) ** 0.5
    return p - half, p + half


def test_proportion_matches_the_normal_approximation() -> None:
    """17 of 50 correct (the lab's 34%): the bootstrap interval approaches p ± 1.96·sqrt(p(1-p)/n) ≈ ±13 pp."""
    data = _items([100.0] * 17 + [0.0] * 33)
    iv = bootstrap_mean(data, n_boot=20000, seed=1)
    low, high = _wald_interval(0.34, 50)
    assert iv.mean == 34.0
    assert (iv.n_items, iv.n_values) == (50, 50)
    assert abs(iv.low - 100 * low) < 1.5 and abs(iv.high - 100 * high) < 1.5
    # "About 13 points either way": docs/lab-formats.md, "Samples too small for the claims".
    assert 12.0 < (iv.high - iv.low) / 2 < 14.5


def test_bootstrap_spread_equals_the_plug_in_standard_error() -> None:
    """For one value per item, the bootstrap mean's variance is exactly σ²/n (σ² with divisor n)."""
    values = [1.0, 2.0, 2.0, 3.0, 5.0, 8.0, 8.0, 9.0, 10.0, 10.0]
    data = _items(values)
    expected_sd = float(np.std(values) / math.sqrt(len(values)))
    lo = bootstrap_mean(data, n_boot=40000, seed=3)
    # Percentile interval of a near-normal statistic: half-width ≈ 1.96 sd.
    assert abs((lo.high - lo.low) / 2 - 1.96 * expected_sd) < 0.08 * 1.96 * expected_sd


def test_same_data_same_interval_and_constant_data_has_zero_width() -> None:
    data = _items([3.0, 7.0, 5.0, 9.0])
    assert bootstrap_mean(data, seed=5) == bootstrap_mean(data, seed=5)
    flat = bootstrap_mean(_items([6.0] * 20))
    assert (flat.mean, flat.low, flat.high) == (6.0, 6.0, 6.0)


def test_samples_are_averaged_per_item_and_add_their_noise() -> None:
    one = {"a": [0.0], "b": [10.0]}
    many = {"a": [0.0, 0.0, 0.0], "b": [10.0]}  # extra samples of one item must not outweigh the other item
    assert bootstrap_mean(one).mean == bootstrap_mean(many).mean == 5.0
    # Items that agree on the mean but whose samples disagree: only the second-level draw creates spread.
    noisy = {f"q{i}": [0.0, 10.0] for i in range(30)}
    iv = bootstrap_mean(noisy, n_boot=4000, seed=0)
    assert iv.mean == 5.0 and iv.high - iv.low > 1.0
    assert iv.n_values == 60


def test_empty_items_are_ignored_and_no_data_is_nan() -> None:
    assert bootstrap_mean({"a": [4.0], "b": []}).n_items == 1
    assert math.isnan(bootstrap_mean({}).mean)


def test_paired_difference_of_identical_runs_is_exactly_zero() -> None:
    a = _items([0.0, 100.0, 100.0, 0.0, 100.0])
    diff = paired_difference(a, a)
    assert (diff.delta.mean, diff.delta.low, diff.delta.high) == (0.0, 0.0, 0.0)
    assert not diff.distinguishable


def test_paired_difference_of_a_constant_shift() -> None:
    rng = np.random.default_rng(0)
    base = {f"q{i}": [float(x)] for i, x in enumerate(rng.integers(1, 8, 40))}
    shifted = {k: [v[0] + 0.5] for k, v in base.items()}
    diff = paired_difference(base, shifted)
    assert abs(diff.delta.mean - 0.5) < 1e-12 and abs(diff.delta.low - 0.5) < 1e-12
    assert diff.distinguishable


def test_pairing_removes_item_difficulty() -> None:
    """Large spread between items, small consistent gain: unpaired intervals overlap, the paired one does not."""
    rng = np.random.default_rng(7)
    difficulty = rng.uniform(1, 9, 50)
    a = {f"q{i}": [float(d)] for i, d in enumerate(difficulty)}
    b = {f"q{i}": [float(d) + 0.3 + rng.normal(0, 0.1)] for i, d in enumerate(difficulty)}
    ia, ib = bootstrap_mean(a), bootstrap_mean(b)
    assert ib.low < ia.high  # unpaired: cannot tell them apart
    diff = paired_difference(a, b)
    assert diff.distinguishable and diff.delta.low > 0.2


def test_paired_difference_uses_common_items_only() -> None:
    a = {"x": [1.0], "y": [2.0], "only_a": [9.0]}
    b = {"x": [2.0], "y": [3.0], "only_b": [0.0]}
    diff = paired_difference(a, b)
    assert diff.delta.mean == 1.0 and diff.delta.n_items == 2
    assert (diff.only_a, diff.only_b) == (1, 1)


# -- exact methods for 0/1 metrics (GSM8K accuracy) -----------------------------------------------------------
def _cp_by_direct_sums(x: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson from its definition, by bisection on plain binomial sums (independent of stats.py)."""
    tail = (1 - level) / 2

    def cdf(k: int, p: float) -> float:
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))

    def solve(f: Any) -> float:  # f increasing on [0, 1]
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
        return (lo + hi) / 2

    low = 0.0 if x == 0 else solve(lambda p: (1 - cdf(x - 1, p)) - tail)
    high = 1.0 if x == n else solve(lambda p: tail - cdf(x, p))
    return low, high


def test_exact_interval_at_the_extremes_where_the_bootstrap_fails() -> None:
    """1 of 50: the bootstrap gave [0, 6] %, Wilson [0.4, 10.5] %, Clopper-Pearson [0.05, 10.6] %. 0 of 6: the
    bootstrap gave [0, 0]; the exact upper bound is 45.9 %."""
    one = _items([100.0] + [0.0] * 49)
    boot = bootstrap_mean(one)
    assert (boot.low, round(boot.high)) == (0.0, 6)  # the old interval, kept for judge means
    iv = mean_interval(one, binary_scale=100.0)
    assert iv.method == CLOPPER_PEARSON and (iv.mean, iv.n_items) == (2.0, 50)
    assert iv.low == pytest.approx(0.0506, abs=1e-3) and iv.high == pytest.approx(10.647, abs=1e-3)
    w_low, w_high = wilson_interval(1, 50)
    assert (round(100 * w_low, 1), round(100 * w_high, 1)) == (0.4, 10.5)
    none = mean_interval(_items([0.0] * 6), binary_scale=100.0)
    assert (none.mean, none.low) == (0.0, 0.0) and none.high == pytest.approx(45.93, abs=0.01)
    assert bootstrap_mean(_items([0.0] * 6)).high == 0.0
    for x, n in ((0, 6), (1, 50), (17, 50), (49, 50), (50, 50), (3, 7), (600, 1319)):
        if n <= 100:  # the direct sums are slow for big n; the continued fraction is checked where they agree
            want = _cp_by_direct_sums(x, n)
            got = proportion_interval(x, n)
            assert got == pytest.approx(want, abs=1e-9), (x, n)
        low, high = proportion_interval(x, n)
        assert 0.0 <= low <= x / n <= high <= 1.0


def test_multi_sample_and_non_binary_values_keep_the_bootstrap() -> None:
    three = {f"q{i}": [100.0, 0.0, 100.0] for i in range(10)}
    assert mean_interval(three, binary_scale=100.0).method == BOOTSTRAP
    assert mean_interval(_items([7.0, 8.0, 3.0]), binary_scale=100.0).method == BOOTSTRAP
    assert mean_interval(_items([100.0, 0.0])).method == BOOTSTRAP  # no scale given: not known to be 0/1
    empty = mean_interval({}, binary_scale=100.0)
    assert empty.n_items == 0 and empty.as_dict()["mean"] is None  # JSON-safe: no NaN in summary.json


def test_exact_mcnemar_for_paired_binary_deltas() -> None:
    """Gaining 5 items and losing 0 of 50: the bootstrap called it distinguishable [+2, +18]; the exact sign
    test gives p = 1/16 = 0.0625, so it is within noise, and the interval contains 0."""
    a = _items([100.0] * 10 + [0.0] * 40)
    b = _items([100.0] * 15 + [0.0] * 35)
    boot = paired_difference(a, b)
    assert boot.distinguishable and round(boot.delta.low) == 2  # the old verdict
    diff = difference(a, b, binary_scale=100.0)
    assert diff.p_value == 0.0625 and (diff.gains, diff.losses) == (5, 0)
    assert diff.delta.method == MCNEMAR and diff.delta.mean == 10.0
    assert diff.delta.low < 0 < diff.delta.high and not diff.distinguishable
    more = difference(a, _items([100.0] * 20 + [0.0] * 30), binary_scale=100.0)  # +10 / −0
    assert more.p_value == pytest.approx(2 / 2**10) and more.distinguishable and more.delta.low > 0
    same = difference(a, a, binary_scale=100.0)
    assert (same.p_value, same.delta.mean, same.distinguishable) == (1.0, 0.0, False)
    assert sign_test_p(10, 1) == pytest.approx(24 / 2048) and sign_test_p(3, 3) == 1.0


def test_the_paired_interval_agrees_with_the_exact_test_everywhere() -> None:
    """Excludes zero exactly when p < 0.05, for every split of up to 30 changed items among 50."""
    for gains in range(31):
        for losses in range(31 - gains):
            low, high = paired_proportion_interval(gains, losses, 50)
            p = sign_test_p(gains, losses)
            assert (low > 0 or high < 0) == (p < 0.05), (gains, losses, p, low, high)
            assert low <= (gains - losses) / 50 <= high


def test_coverage_of_the_exact_intervals_by_simulation() -> None:
    """Seeded simulation at n = 50: the share of replicates whose 95% interval holds the true value. Exact
    intervals must cover at least 94% at every p; Wilson is shown beside them (it dips at p = 0.02 and 0.5).
    Run with -s to see the figures."""
    rng = np.random.default_rng(20240501)
    n, reps = 50, 4000
    exact = {x: proportion_interval(x, n) for x in range(n + 1)}
    wilson = {x: wilson_interval(x, n) for x in range(n + 1)}
    lines = []
    for p in (0.02, 0.3, 0.5):
        draws = rng.binomial(n, p, size=reps)
        cover = float(np.mean([exact[x][0] <= p <= exact[x][1] for x in draws]))
        cover_w = float(np.mean([wilson[x][0] <= p <= wilson[x][1] for x in draws]))
        lines.append(f"proportion n={n} p={p}: Clopper-Pearson {cover:.3f}, Wilson {cover_w:.3f}")
        assert cover >= 0.94, lines[-1]
    cache: dict[tuple[int, int], tuple[float, float]] = {}
    for p_gain, p_loss in ((0.1, 0.0), (0.05, 0.05), (0.2, 0.1), (0.02, 0.0)):
        cells = rng.multinomial(n, [p_gain, p_loss, 1 - p_gain - p_loss], size=reps)
        hits = 0
        for g, l_, _rest in cells:
            key = (int(g), int(l_))
            if key not in cache:
                cache[key] = paired_proportion_interval(*key, n)
            low, high = cache[key]
            hits += low - 1e-12 <= p_gain - p_loss <= high + 1e-12
        lines.append(f"paired difference n={n} gain={p_gain} loss={p_loss}: coverage {hits / reps:.3f}")
        assert hits / reps >= 0.94, lines[-1]
    print("\n" + "\n".join(lines))


def test_rescoring_changes_are_counts_not_noise() -> None:
    original = _items([0.0, 0.0, 100.0, 100.0, 0.0]) | {"only_orig": [0.0]}
    rescored = _items([100.0, 0.0, 100.0, 0.0, 100.0])
    c = rescoring_changes(original, rescored)
    assert (c.n_items, c.changed, c.up, c.down, c.only_original, c.only_rescored) == (5, 3, 2, 1, 1, 0)
    assert c.delta == pytest.approx(20.0) and c.text() == "re-scoring changed 3 items (+2 / −1)"
    assert rescoring_changes(original, {}).n_items == 0 and rescoring_changes(original, {}).delta is None
