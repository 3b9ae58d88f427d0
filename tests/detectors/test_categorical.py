"""The categorical chi-square test on columns with many levels: its pooled cells, its
statistic against scipy's, and its false-alarm rate on a long-tailed column.

A column like a country, a merchant or a product id has a few common levels and a long
tail of rare ones (Zipf frequencies), many of them missing from a finite reference. A
window of a few hundred events expects most levels far less than once; without pooling,
their cells gave the statistic a much heavier tail than its chi-square null, and such a
column raised false alarms hundreds of times too often."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings, strategies as st
from scipy.stats import chi2_contingency

from detectors import DetectorConfig, ModelMonitor, ReferenceProfile
from detectors.categorical import MIN_EXPECTED, CategoricalWindow, pooled_cells

TARGET_ARL = 20_000
EVENTS = 1_000_000
HORIZONS = EVENTS / TARGET_ARL  # 50


def zipf_levels(rng: np.random.Generator, levels: int, size: int) -> np.ndarray:
    p = np.arange(1, levels + 1, dtype=np.float64) ** -1.1
    return np.array([f"L{i}" for i in range(levels)], dtype=object)[
        rng.choice(levels, size=size, p=p / p.sum())]


reference_counts = st.lists(st.integers(0, 3000), min_size=1, max_size=40).filter(
    lambda c: sum(c) > 0)


@settings(max_examples=200, deadline=None)
@given(counts=reference_counts, window=st.integers(1, 800))
def test_every_cell_expects_enough_events_and_pools_only_the_rarest_levels(counts, window):
    counts = np.array(counts)
    cell = pooled_cells(counts, window)
    assert len(cell) == len(counts)  # levels only: unseen ones are unseen_category's
    expected = np.bincount(cell, weights=window * counts / counts.sum())
    assert (expected[:-1] >= MIN_EXPECTED).all()
    # the last cell expects enough, nothing (levels of count 0), or holds every level
    assert expected[-1] >= MIN_EXPECTED or expected[-1] == 0 or cell.max() == 0
    # cells by falling frequency: every level of a cell at least as frequent as the next cell's
    for k in range(cell.max()):
        assert counts[cell == k].min() >= counts[cell == k + 1].max()


@settings(max_examples=200, deadline=None)
@given(counts=reference_counts, data=st.data())
def test_the_pooled_statistic_is_scipys_chi2_contingency(counts, data):
    window = data.draw(st.integers(20, 700))
    det = CategoricalWindow({f"l{i}": c for i, c in enumerate(counts)}, window=window,
                            stride=window)
    # a window's level codes, the unseen code len(counts) and missing values (in no cell)
    codes = np.array(data.draw(st.lists(st.integers(-1, len(counts)), min_size=window,
                                        max_size=window)), dtype=np.int64)
    _, stat, tv = det.update_codes(codes)
    cell = pooled_cells(np.array(counts), window)
    known = codes[(codes >= 0) & (codes < len(counts))]
    seen = np.bincount(cell[known], minlength=len(det.reference_cells))
    table = np.array([det.reference_cells, seen])
    table = table[:, table.sum(axis=0) > 0]  # scipy refuses an empty cell
    if seen.sum() == 0:
        assert stat[0] == 0 and tv[0] == 0
    elif table.shape[1] == 1:
        assert stat[0] == 0
    else:
        want = chi2_contingency(table, correction=False).statistic
        assert np.isclose(stat[0], want, rtol=1e-9, atol=1e-9)
        assert np.isclose(tv[0], 0.5 * np.abs(table[0] / table[0].sum()
                                              - table[1] / table[1].sum()).sum())


def test_a_column_of_a_thousand_zipf_levels_raises_no_more_false_alarms_than_the_target():
    config = DetectorConfig(target_arl=TARGET_ARL)
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"merchant": zipf_levels(rng, 1000, 50_000)})
    monitor = ModelMonitor(ReferenceProfile.from_frame(reference, config=config), config)
    stream = zipf_levels(rng, 1000, EVENTS)
    alarms = sum(len(monitor.update_features(np.zeros((10_000, 0)),
                                             {"merchant": stream[i:i + 10_000]}))
                 for i in range(0, EVENTS, 10_000))
    # 7 today (conservative like the numeric tests); the unpooled test gave about 150
    assert HORIZONS / 16 <= alarms <= 1.2 * HORIZONS, alarms
