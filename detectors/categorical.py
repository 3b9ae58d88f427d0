"""Categorical columns: windowed chi-square test of homogeneity with the reference.

Why chi-square: it is the categorical counterpart of the KS test (a two-sample test of
equal distributions), needs no ordering of categories, handles any number of them, and
its statistic has a chi-square(k-1) null distribution, so its threshold can be derived
from the same false-alarm budget as the other signals. Unseen categories are pooled in
one "other" cell so a new category is itself evidence of drift. The total-variation
distance is reported as the effect size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2

from .base import StreamDetector

MISSING_CODE = -1


class CategoricalWindow(StreamDetector):
    """Chi-square statistic of the last ``window`` values against reference counts.

    Examples
    --------
    >>> det = CategoricalWindow({"a": 500, "b": 500}, window=100, stride=50)
    >>> idx, stat, tv = det.update_many(np.array(["a"] * 80 + ["b"] * 20, dtype=object))
    >>> idx.tolist(), round(float(tv[-1]), 2)
    ([49, 99], 0.3)
    """

    _state_fields = ("ring", "seen")
    _settings = ("counts", "window", "stride")

    def __init__(self, counts: dict, window: int = 1000, stride: int = 500) -> None:
        self.counts = {str(k): int(v) for k, v in counts.items()}
        self.window = int(window)
        self.stride = int(stride)
        self._index = pd.Index(list(self.counts))
        ref = np.array(list(self.counts.values()) + [0], dtype=np.float64)
        self._ref = ref
        self._df = max(int(np.count_nonzero(ref)), 1)  # (k cells incl. other) - 1
        self._reset()

    def _reset(self) -> None:
        self.ring = np.full(self.window, MISSING_CODE, dtype=np.int64)
        self.seen = 0

    def critical(self, alpha: float) -> float:
        return float(chi2.isf(alpha, self._df))

    def codes(self, values: np.ndarray) -> np.ndarray:
        values = pd.Series(values, dtype=object)
        codes = self._index.get_indexer(values.astype(str))
        codes[codes < 0] = len(self.counts)  # unseen category -> "other"
        codes[values.isna().to_numpy()] = MISSING_CODE
        return codes.astype(np.int64)

    def update_many(self, values):
        return self.update_codes(self.codes(values))

    def update_codes(self, codes: np.ndarray):
        """Return checkpoint indices, chi-square statistics and TV distances."""
        codes = np.asarray(codes, dtype=np.int64)
        hist = np.concatenate([self.ring, codes])
        first = (-self.seen - 1) % self.stride
        idx = np.arange(first, len(codes), self.stride)
        k = len(self._ref)
        if len(idx):
            # window counts at every checkpoint at once: cumulative level counts (one
            # row per level) read at the window's two ends
            cum = np.zeros((k, len(hist) + 1))
            for level in range(k):
                np.cumsum(hist == level, out=cum[level, 1:])
            ends = idx + 1 + self.window
            cnt = cum[:, ends] - cum[:, ends - self.window]  # (levels, checkpoints)
            stat, tv = chi2_homogeneity_many(self._ref, cnt)
        else:
            stat = tv = np.zeros(0)
        self.ring = hist[-self.window:].copy()
        self.seen += len(codes)
        return idx, stat, tv


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
