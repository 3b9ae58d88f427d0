"""Exact two-sample Kolmogorov-Smirnov statistic over a sliding window.

The window keeps, per column, the *slot* (see :mod:`detectors.ranks`) of each of the
last ``window`` values. The slot fixes ``#ref < x`` and ``#ref <= x``, and the KS
supremum is attained at data points, so sorting the window's slots is enough to get
the statistic exactly as ``scipy.stats.ks_2samp(reference, window).statistic``. With
the window sorted, value ``j`` (1-based) gives ``j/n - le_j/m`` (the ECDF gap just at
it) and ``lt_j/m - (j-1)/n`` (just below it); inside a run of ties the run's last and
first values give the largest of these, so the maximum over *all* positions is the
statistic and no tie bookkeeping is needed. In integers (``j*m - le*n``), the only
division is the last one. Evaluation costs ``O(window log window)`` per column and
does not grow with the reference size.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.stats import kstwo

from .base import StreamDetector
from .grid import SlotLookup, column_chunks
from .ranks import RankTransform

_BIG = 1 << 40  # le/lt of NaN and empty codes: their terms are never the maximum


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
    transforms
        Prebuilt :class:`RankTransform` per column (to share with the caller).

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

    def __init__(self, samples, window: int = 1000, stride: int = 500,
                 transforms: list[RankTransform] | None = None) -> None:
        self.samples = [np.sort(np.asarray(s, dtype=np.float64)) for s in samples]
        self.window = int(window)
        self.stride = int(stride)
        self.transforms = transforms or [RankTransform(s) for s in self.samples]
        self.lookup = lk = SlotLookup([t.values for t in self.transforms])
        self._m = np.array([t.m for t in self.transforms], dtype=np.int64)
        # lt/le counts indexed by global slot; NaN/empty codes make their terms hugely
        # negative, so they drop out of the maxima
        self._lt = np.full(lk.n_slots, -_BIG, dtype=np.int64)
        self._le = np.full(lk.n_slots, _BIG, dtype=np.int64)
        for j, t in enumerate(self.transforms):
            at = 2 * lk.starts[j]
            self._lt[at:at + len(t.lt_count)] = t.lt_count
            self._le[at:at + len(t.le_count)] = t.le_count
        w = self.window
        # full windows (the usual case): tables pre-multiplied by n = window, and
        # int32 when every product fits
        small = w * max(int(self._m.max(initial=1)), 1) < 2**31 - 1
        dt = np.int32 if small else np.int64
        self._ltw = np.where(self._lt > -_BIG, self._lt * w, -2**31 + 1).astype(dt)
        self._lew = np.where(self._le < _BIG, self._le * w, 2**31 - 1).astype(dt)
        pos = np.arange(w, dtype=np.int64)
        self._jm = ((pos + 1)[None, :] * self._m[:, None]).astype(dt)[:, None, :]
        self._pm = (pos[None, :] * self._m[:, None]).astype(dt)[:, None, :]
        self._slot_dtype = np.int32 if lk.n_slots < 2**31 - 1 else np.int64
        self._reset()

    def _reset(self) -> None:
        self.ring = np.repeat(self.lookup.empty_code[:, None], self.window, axis=1) \
            .astype(self._slot_dtype)
        self.seen = 0

    @property
    def reference_sizes(self) -> np.ndarray:
        return self._m

    def slots(self, values: np.ndarray) -> np.ndarray:
        """Global slot of every value; ``values`` is (columns, n)."""
        return self.lookup.slots(values).astype(self._slot_dtype, copy=False)

    def update_many(self, values: np.ndarray):
        """Push values (n, columns); see :meth:`update_slots` for the result."""
        x = np.ascontiguousarray(np.asarray(values, dtype=np.float64).T)
        return self.update_slots(self.slots(x))

    def update_slots(self, slots: np.ndarray):
        """Push global slots (columns, n); return KS at the checkpoints in the batch.

        Returns ``(index, d, n, missing)``: batch indices of the checkpoints, the KS
        statistic and window size (checkpoints, columns), and NaN counts in the window.
        """
        c, nb = slots.shape
        hist = np.concatenate([self.ring, slots], axis=1)
        first = (-self.seen - 1) % self.stride  # batch index of the next checkpoint
        idx = np.arange(first, nb, self.stride)
        if len(idx):
            d = np.empty((len(idx), c))
            n = np.empty((len(idx), c), dtype=np.int64)
            missing = np.empty((len(idx), c), dtype=np.int64)
            view = sliding_window_view(hist, self.window, axis=1)
            for cols in column_chunks(c):  # a few columns at a time: arrays stay in cache
                win = view[cols, idx + 1]  # (columns, checkpoints, W), a copy
                win.sort(axis=2)  # NaN and empty codes are the largest: they sort last
                d[:, cols], n[:, cols], missing[:, cols] = (
                    r.T for r in self._ks(win, cols))
        else:
            d = n = missing = np.empty((0, c))
        self.ring = hist[:, -self.window:].copy()
        self.seen += nb
        return idx, d, n, missing

    def _ks(self, win: np.ndarray, cols: slice):
        """KS statistic, window size and NaN count of sorted windows (c, k, W) of the
        columns ``cols``."""
        c, k, w = win.shape
        lk = self.lookup
        nan_code, m_int = lk.nan_code[cols], self._m[cols]
        m = m_int[:, None].astype(np.float64)
        # windows with no NaN nor empty position (the usual case): integer tables
        # pre-multiplied by n = W, one gather each
        t1 = np.take(self._lew, win)
        np.subtract(self._jm[cols], t1, out=t1)
        t2 = np.take(self._ltw, win)
        t2 -= self._pm[cols]
        num = np.maximum(t1.max(axis=2), t2.max(axis=2))
        np.maximum(num, 0, out=num)
        d = num / (m * w)
        n = np.full((c, k), w, dtype=np.int64)
        missing = np.zeros((c, k), dtype=np.int64)
        pos = np.arange(w)
        for j, r in zip(*np.nonzero(win[:, :, -1] >= nan_code[:, None])):
            # a window with NaN or not yet full (rare): the general formula, one row
            row = win[j, r]
            missing[j, r] = np.count_nonzero(row == nan_code[j])
            nn = n[j, r] = np.count_nonzero(row < nan_code[j])
            if nn == 0:
                d[j, r] = np.nan
                continue
            v = row[:nn]  # NaN and empty codes sort last
            t1 = (pos[:nn] + 1) * m_int[j] - self._le[v] * nn
            t2 = self._lt[v] * nn - pos[:nn] * m_int[j]
            d[j, r] = max(int(t1.max()), int(t2.max()), 0) / (m_int[j] * nn)
        return d, n, missing
