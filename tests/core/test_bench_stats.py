"""Interval code against known cases: a proportion's textbook interval, exact variance, paired differences."""

from __future__ import annotations

import math

import numpy as np

from lemcore.benchmarks.stats import bootstrap_mean, normal_proportion_interval, paired_difference


def _items(values: list[float]) -> dict[str, list[float]]:
    return {f"Q{i:03d}": [v] for i, v in enumerate(values)}


def test_proportion_matches_the_normal_approximation() -> None:
    """17 of 50 correct (the lab's 34%): the bootstrap interval approaches p ± 1.96·sqrt(p(1-p)/n) ≈ ±13 pp."""
    data = _items([100.0] * 17 + [0.0] * 33)
    iv = bootstrap_mean(data, n_boot=20000, seed=1)
    low, high = normal_proportion_interval(0.34, 50)
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
