"""The vectorised row maximum of our Numba softmaxes (lemcore/generate/cpu/row_max.py) against NumPy's."""

from __future__ import annotations

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from lemcore.generate.cpu.row_max import row_max  # noqa: E402


@numba.njit
def _max_of(row, end):  # pragma: no cover - compiled
    return row_max(row, end)


@pytest.mark.parametrize("end", [1, 15, 63, 64, 65, 130, 1000])
def test_the_maximum_of_the_first_end_values_of_unit_and_other_strides(end: int) -> None:
    rng = np.random.default_rng(end)
    values = (rng.standard_normal((1000, 3)) * 50 - 200).astype(np.float32)  # mostly negative
    values[end - 1, 0] = 7.5  # the largest value last, where the loop's remainder reads it
    values[end:, :] = 1e9  # past `end`: never read
    row = np.ascontiguousarray(values[:, 0])
    assert _max_of(row, end) == np.float32(7.5)
    column = values[:, 1]  # a strided view: one value at a time
    assert _max_of(column, end) == values[:end, 1].max()
    assert _max_of(row[1:], end - 1) == (np.float32(7.5) if end > 1 else np.float32(-3.0e38))


def test_an_empty_row_gives_the_lowest_value() -> None:
    assert _max_of(np.ones(5, np.float32), 0) == np.float32(-3.0e38)
