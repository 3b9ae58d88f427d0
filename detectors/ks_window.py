"""Exact two-sample Kolmogorov-Smirnov statistic over a sliding window.

The window keeps, per column, the *slot* (see :mod:`detectors.ranks`) of each of the
last ``window`` values. The slot fixes ``#ref < x`` and ``#ref <= x``, and the KS
supremum is attained at data points, so sorting the window's slots is enough to get
the statistic exactly as ``scipy.stats.ks_2samp(reference, window).statistic``: the
same integer counts divided by the same sample sizes. Evaluation costs
``O(window log window)`` per column and does not grow with the reference size.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import kstwo

from .base import StreamDetector
from .ranks import NAN_SLOT, RankTransform

EMPTY_SLOT = -2  # a window position not filled yet (before ``window`` events)


def ks_from_slots(sorted_slots: np.ndarray, lt: np.ndarray, le: np.ndarray,
                  m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KS statistic and window size of each row of sorted slot indices.

    ``sorted_slots`` is (rows, W) sorted ascending, negative entries ignored; ``lt``
    and ``le`` are (rows, W) reference counts below/at each slot (already gathered),
    ``m`` the reference size per row.
    """
    rows, w = sorted_slots.shape
    valid = sorted_slots >= 0
    n = valid.sum(axis=1)
    skip = w - n  # invalid entries sort first
    j = np.arange(w)
    same_next = np.zeros_like(valid)
    same_next[:, :-1] = sorted_slots[:, 1:] == sorted_slots[:, :-1]
    same_prev = np.zeros_like(valid)
    same_prev[:, 1:] = same_next[:, :-1]
    nf = np.maximum(n, 1)[:, None].astype(np.float64)
    mf = m[:, None].astype(np.float64)
    # F_W - F_R just at a run's last value; F_R - F_W just below a run's first value
    cw_right = (j + 1 - skip[:, None]) / nf
    cw_left = (j - skip[:, None]) / nf
    below = np.where(valid & ~same_next, cw_right - le / mf, -np.inf)
    above = np.where(valid & ~same_prev, lt / mf - cw_left, -np.inf)
    d = np.maximum(np.maximum(below.max(axis=1), above.max(axis=1)), 0.0)
    d[n == 0] = np.nan
    return d, n


def ks_pvalue(d: np.ndarray, m: np.ndarray, n: np.ndarray) -> np.ndarray:
    """scipy's asymptotic two-sided p-value (``ks_2samp(..., method='asymp')``)."""
    d = np.asarray(d, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    p = np.full(d.shape, np.nan)
    ok = (n > 0) & np.isfinite(d)
    en = np.round(m[ok] * n[ok] / (m[ok] + n[ok]))
    p[ok] = np.clip(kstwo.sf(d[ok], en), 0.0, 1.0)
    return p


class KSWindow(StreamDetector):
    """Sliding-window KS statistic of every column against its reference sample.

    Parameters
    ----------
    samples
        One reference sample per column (any order; NaN not allowed).
    window
        Number of most recent events in the window (NaN values are counted as
        missing and left out of the statistic).
    stride
        The statistic is evaluated after every ``stride``-th event.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ks = KSWindow([rng.normal(size=2000)], window=200, stride=100)
    >>> idx, d, n, missing = ks.update_many(rng.normal(0.5, size=(400, 1)))
    >>> idx.tolist(), n[:, 0].tolist()
    ([99, 199, 299, 399], [100, 200, 200, 200])
    """

    _state_fields = ("ring", "seen")
    _settings = ("samples", "window", "stride")

    def __init__(self, samples, window: int = 1000, stride: int = 500) -> None:
        self.samples = [np.sort(np.asarray(s, dtype=np.float64)) for s in samples]
        self.window = int(window)
        self.stride = int(stride)
        self.transforms = [RankTransform(s) for s in self.samples]
        self._offsets = np.cumsum([0] + [len(t.lt_count) for t in self.transforms])
        self._lt = np.concatenate([t.lt_count for t in self.transforms])
        self._le = np.concatenate([t.le_count for t in self.transforms])
        self._m = np.array([t.m for t in self.transforms])
        self._reset()

    def _reset(self) -> None:
        self.ring = np.full((self.window, len(self.samples)), EMPTY_SLOT, dtype=np.int64)
        self.seen = 0

    def slots(self, values: np.ndarray) -> np.ndarray:
        """Slot of every value (n, columns)."""
        return np.stack([t.slots(values[:, j]) for j, t in enumerate(self.transforms)],
                        axis=1) if values.size else np.empty(values.shape, np.int64)

    def update_many(self, values: np.ndarray):
        return self.update_slots(self.slots(np.asarray(values, dtype=np.float64)))

    def update_slots(self, slots: np.ndarray):
        """Push slots (n, columns); return KS at the checkpoints inside the batch.

        Returns ``(index, d, n, missing)``: batch indices of the checkpoints, the KS
        statistic and window size (checkpoints, columns), and NaN counts in the window.
        """
        nb, c = slots.shape
        start = self.ring  # kept in chronological order
        hist = np.concatenate([start, slots], axis=0)
        first = (-self.seen - 1) % self.stride  # batch index of the next checkpoint
        idx = np.arange(first, nb, self.stride)
        if len(idx):
            win = hist[idx[:, None] + 1 + np.arange(self.window)]  # (k, W, c)
            win = np.sort(np.transpose(win, (0, 2, 1)), axis=2)
            missing = (win == NAN_SLOT).sum(axis=2)
            g = np.where(win >= 0, win + self._offsets[:-1][None, :, None], 0)
            flat = win.reshape(-1, self.window)
            mm = np.broadcast_to(self._m, (len(idx), c)).reshape(-1)
            d, n = ks_from_slots(flat, self._lt[g].reshape(flat.shape),
                                 self._le[g].reshape(flat.shape), mm)
            d, n = d.reshape(len(idx), c), n.reshape(len(idx), c)
        else:
            d = n = missing = np.empty((0, c))
        self.ring = hist[-self.window:].copy()
        self.seen += nb
        return idx, d, n, missing

    @property
    def reference_sizes(self) -> np.ndarray:
        return self._m
