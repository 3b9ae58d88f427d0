"""Categorical columns: windowed chi-square test of homogeneity with the reference.

Why chi-square: it is the categorical counterpart of the KS test (a two-sample test of
equal distributions), needs no ordering of categories, handles any number of them, and
its statistic has a chi-square(cells - 1) null distribution, so its threshold can be
derived from the same false-alarm budget as the other signals.

That null holds only when every cell expects enough events in a window (Cochran's rule:
at least 5). A column with many levels (a country, a merchant, a product id) has
hundreds of levels that a window of a few hundred events expects far less than once of;
their squared deviations have a much heavier tail than chi-square's, and such columns
raised false alarms hundreds of times too often. So the cells are the reference's levels
that a window expects at least ``MIN_EXPECTED`` times, each its own cell, and one pooled
"other" cell with all the others. Levels the reference never saw are in no cell: they are
the `unseen_category` signal's (:mod:`detectors.signals.unseen_category`), which knows
how many new levels a long-tailed column makes plausible and names them; counted here as
well, a new level would fire this test first, as drift of unknown cause. The
total-variation distance between the cells is reported as the effect size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2

from .base import StreamDetector

MISSING_CODE = -1
MIN_EXPECTED = 5.0  # least expected window count of a cell (Cochran's rule)


def pooled_cells(counts: np.ndarray, window: int) -> np.ndarray:
    """The cell of every level code: the levels a window of ``window`` events expects
    at least ``MIN_EXPECTED`` times get cells ``0, 1, ...`` by falling frequency; the
    others share the last cell. If that pooled cell expects some but fewer than ``MIN_EXPECTED`` events, the
    least frequent common levels join it until it expects enough.

    >>> pooled_cells(np.array([600, 10, 300, 90]), window=100).tolist()
    [0, 2, 1, 2]
    """
    counts = np.asarray(counts, dtype=np.float64)
    expected = window * counts / max(counts.sum(), 1.0)
    order = np.argsort(-expected, kind="stable")
    n_common = int(np.count_nonzero(expected >= MIN_EXPECTED))
    rare = expected[order[n_common:]].sum()
    if 0 < rare < MIN_EXPECTED:
        # pool the least frequent common levels too, as few as make the pool enough
        added = np.cumsum(expected[order[:n_common]][::-1])
        n_common -= min(int(np.searchsorted(added, MIN_EXPECTED - rare)) + 1, n_common)
    cell = np.full(len(counts), n_common, dtype=np.int64)
    cell[order[:n_common]] = np.arange(n_common)
    return cell


class CategoricalWindow(StreamDetector):
    """Chi-square statistic of the last ``window`` values against reference counts, over
    the cells of :func:`pooled_cells`.

    Examples
    --------
    >>> det = CategoricalWindow({"a": 500, "b": 500}, window=100, stride=50)
    >>> idx, stat, tv = det.update_many(np.array(["a"] * 80 + ["b"] * 20, dtype=object))
    >>> idx.tolist(), round(float(tv[-1]), 2), det.df
    ([49, 99], 0.3, 1)
    """

    _state_fields = ("ring", "seen")
    _settings = ("counts", "window", "stride")

    def __init__(self, counts: dict, window: int = 1000, stride: int = 500) -> None:
        self.counts = {str(k): int(v) for k, v in counts.items()}
        self.window = int(window)
        self.stride = int(stride)
        self._index = pd.Index(list(self.counts))
        level_counts = np.array(list(self.counts.values()), dtype=np.float64)
        cell = pooled_cells(level_counts, self.window)
        # the ring keeps level codes; a trailing -1 sends MISSING_CODE (index -1), and the
        # unseen code len(counts) of rings saved before unseen levels left this test, to
        # no cell
        self._cell_of = np.append(cell, MISSING_CODE)
        self.reference_cells = np.bincount(cell, weights=level_counts,
                                           minlength=int(cell.max()) + 1)
        # cells that can fill under no change, less one (an empty pooled cell stays empty)
        self.df = max(int(np.count_nonzero(self.reference_cells)) - 1, 1)
        self._reset()

    def _reset(self) -> None:
        self.ring = np.full(self.window, MISSING_CODE, dtype=np.int64)
        self.seen = 0

    def critical(self, alpha: float) -> float:
        return float(chi2.isf(alpha, self.df))

    def codes(self, values: np.ndarray) -> np.ndarray:
        values = pd.Series(values, dtype=object)
        codes = self._index.get_indexer(values.astype(str))
        codes[codes < 0] = MISSING_CODE  # unseen levels: the unseen_category signal's
        return codes.astype(np.int64)

    def update_many(self, values):
        return self.update_codes(self.codes(values))

    def update_codes(self, codes: np.ndarray):
        """Return checkpoint indices, chi-square statistics and TV distances."""
        codes = np.asarray(codes, dtype=np.int64)
        hist = np.concatenate([self.ring, codes])
        first = (-self.seen - 1) % self.stride
        idx = np.arange(first, len(codes), self.stride)
        if len(idx):
            ends = idx + 1 + self.window  # the windows are hist[ends - window:ends]
            stat, tv = chi2_homogeneity_many(
                self.reference_cells, self.window_counts(hist, ends - self.window, ends))
        else:
            stat = tv = np.zeros(0)
        self.ring = hist[-self.window:].copy()
        self.seen += len(codes)
        return idx, stat, tv

    def window_counts(self, hist: np.ndarray, starts: np.ndarray, ends: np.ndarray
                      ) -> np.ndarray:
        """Cell counts (cells, windows) of ``hist[starts[i]:ends[i]]``: one bincount of
        the events by (cell, stretch between consecutive window ends), then cumulative
        counts read at each window's two ends."""
        bounds = np.union1d(starts, ends)
        stretch = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
        cell = self._cell_of[hist[bounds[0]:bounds[-1]]]
        ok = cell >= 0
        n_cells, n_stretch = len(self.reference_cells), len(bounds) - 1
        per = np.bincount(cell[ok] * n_stretch + stretch[ok],
                          minlength=n_cells * n_stretch).reshape(n_cells, n_stretch)
        cum = np.zeros((n_cells, len(bounds)))
        np.cumsum(per, axis=1, out=cum[:, 1:])
        return cum[:, np.searchsorted(bounds, ends)] - cum[:, np.searchsorted(bounds, starts)]


def chi2_homogeneity_many(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`chi2_homogeneity` of ``ref`` against every column of ``cur`` (levels, k).

    >>> ref = np.array([50.0, 30.0, 0.0])
    >>> stat, tv = chi2_homogeneity_many(ref, np.array([[10.0, 0.0], [5.0, 0.0], [1.0, 0.0]]))
    >>> (float(stat[0]), float(tv[0])) == chi2_homogeneity(ref, np.array([10.0, 5.0, 1.0]))
    True
    >>> stat[1], tv[1]  # an empty window
    (np.float64(0.0), np.float64(0.0))
    """
    n1 = ref.sum()
    n2 = cur.sum(axis=0)
    tot = ref[:, None] + cur
    keep = tot > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        e1 = tot * n1 / (n1 + n2)
        e2 = tot * n2 / (n1 + n2)
        t1 = np.where(keep, (ref[:, None] - e1) ** 2 / np.where(keep, e1, 1.0), 0.0)
        t2 = np.where(keep, (cur - e2) ** 2 / np.where(keep, e2, 1.0), 0.0)
        stat = t1.sum(axis=0) + t2.sum(axis=0)
        tv = 0.5 * np.abs(ref[:, None] / n1 - cur / np.where(n2 > 0, n2, 1.0)).sum(axis=0)
    empty = n2 == 0
    return np.where(empty, 0.0, stat), np.where(empty, 0.0, tv)


def chi2_homogeneity(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """Two-sample chi-square statistic and total-variation distance of two count vectors."""
    n1, n2 = ref.sum(), cur.sum()
    if n2 == 0:
        return 0.0, 0.0
    tot = ref + cur
    keep = tot > 0
    e1 = tot[keep] * n1 / (n1 + n2)
    e2 = tot[keep] * n2 / (n1 + n2)
    stat = float(((ref[keep] - e1) ** 2 / e1).sum() + ((cur[keep] - e2) ** 2 / e2).sum())
    tv = 0.5 * float(np.abs(ref / n1 - cur / n2).sum())
    return stat, tv
