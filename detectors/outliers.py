"""Outlier rate: share of |z| > 3 against the reference's own rate."""

from __future__ import annotations

import numpy as np

from .base import StreamDetector
from .cusum import affine_scan, lindley, monotone_extremes


def bernoulli_llr(p0: np.ndarray, p1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, drift)`` so that ``scale * o - drift`` is the LLR of rate p1 vs p0."""
    miss = np.log((1 - p1) / (1 - p0))
    return np.log(p1 / p0) - miss, -miss


class OutlierRate(StreamDetector):
    """Bernoulli CUSUM on the outlier indicator ``|x - mean| / std > z_threshold``.

    The CUSUM tests the reference rate ``p0`` (an upper confidence bound of the
    reference's own outlier share) against ``p1``; it alarms when the log-likelihood
    ratio passes ``threshold`` *and* the outlier share since the CUSUM last stood at
    zero (its change-point estimate) is at least ``floor`` (the design's 5 %). On a
    serially dependent stream the LLR increments are divided by ``tau`` (the indicators'
    long-run variance factor; see :mod:`detectors.calibration`).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(600, 1)); x[300::10] = 9.0  # 10 % outliers from 300
    >>> det = OutlierRate([0.0], [1.0], p0=[0.005], p1=[0.08], threshold=[12.0])
    >>> stat, rate = det.update_many(x)
    >>> int(np.argmax((stat[:, 0] > 12.0) & (rate[:, 0] >= 0.05)))
    340
    """

    _state_fields = ("s", "seg_len", "seg_count")
    _settings = ("means", "stds", "p0", "p1", "threshold", "z_threshold", "floor", "tau")

    def __init__(self, means, stds, p0, p1, threshold, z_threshold: float = 3.0,
                 floor: float = 0.05, tau=1.0) -> None:
        self.means = np.asarray(means, dtype=np.float64)
        self.stds = np.asarray(stds, dtype=np.float64)
        self.p0 = np.asarray(p0, dtype=np.float64)
        self.p1 = np.asarray(p1, dtype=np.float64)
        self.threshold = np.broadcast_to(np.asarray(threshold, np.float64),
                                         self.means.shape).copy()  # one per column
        self.z_threshold = float(z_threshold)
        self.floor = float(floor)
        self.tau = np.broadcast_to(np.asarray(tau, np.float64), self.means.shape).copy()
        scale, drift = bernoulli_llr(self.p0, self.p1)
        self._scale, self._drift = scale / self.tau, drift / self.tau
        # a constant reference column: any different value is an outlier
        self._limit = np.where(self.stds > 0, self.z_threshold * self.stds, 0.0)
        self._reset()

    def _reset(self) -> None:
        self.s = np.zeros_like(self.means)
        self.seg_len = np.zeros(len(self.means), dtype=np.int64)
        self.seg_count = np.zeros(len(self.means), dtype=np.int64)

    def indicators(self, values: np.ndarray) -> np.ndarray:
        """Outlier indicator (NaN is not an outlier)."""
        with np.errstate(invalid="ignore"):
            return np.abs(values - self.means) > self._limit

    def indicators_t(self, xt: np.ndarray, cols: slice = slice(None)) -> np.ndarray:
        """Outlier indicator of ``xt`` laid out (columns ``cols``, n)."""
        with np.errstate(invalid="ignore"):
            dev = xt - self.means[cols, None]
            np.abs(dev, out=dev)
            return dev > self._limit[cols, None]

    def update_many(self, values: np.ndarray):
        return self.update_indicators(self.indicators(np.asarray(values, np.float64)))

    def advance(self, o: np.ndarray, cols: slice = slice(None)):
        """Fast path for indicators ``o`` (columns ``cols``, n): only columns whose
        CUSUM may pass its threshold get exact paths (see
        :func:`~detectors.cusum.lindley_scan`).

        Returns ``(rows, paths, rates, count)``: candidate (absolute) columns, their
        paths and segment outlier shares (len(rows), n), and the outlier count per
        column of ``cols`` in the batch.
        """
        c, n = o.shape
        first = cols.start or 0
        # integer counts (exact; a float cumulative sum of booleans is 7x slower)
        co = np.cumsum(o, axis=1, dtype=np.int32 if n < 2**31 - 1 else np.int64)
        s0 = self.s[cols]
        s_end, rows, paths, last0 = affine_scan(co, *monotone_extremes(co), self._scale[cols],
                                                self._drift[cols], s0, self.threshold[cols])
        rates = np.empty(paths.shape)
        for i, j in enumerate(rows):
            rates[i] = self._segment_rate(paths[i], co[j], first + j)
        if n:
            hit = last0 >= 0  # the CUSUM's last zero in the batch
            base = np.where(hit, co[np.arange(c), np.maximum(last0, 0)], 0.0)
            self.seg_len[cols] = np.where(hit, n - 1 - last0, self.seg_len[cols] + n)
            self.seg_count[cols] = np.where(hit, co[:, -1] - base,
                                            self.seg_count[cols] + co[:, -1])
            self.s[cols] = s_end
        return rows + first, paths, rates, (co[:, -1] if n else np.zeros(c))

    def _segment_rate(self, path: np.ndarray, co: np.ndarray, j: int) -> np.ndarray:
        """Outlier share since the CUSUM last stood at zero, per event of one column."""
        idx = np.arange(len(path))
        last0 = np.maximum.accumulate(np.where(path == 0, idx, -1))
        base = co[np.maximum(last0, 0)]
        seg_len = np.where(last0 >= 0, idx - last0, self.seg_len[j] + idx + 1)
        seg_cnt = np.where(last0 >= 0, co - base, self.seg_count[j] + co)
        return np.where(seg_len > 0, seg_cnt / np.maximum(seg_len, 1), 0.0)

    def update_indicators(self, o: np.ndarray):
        """Return the CUSUM path and the segment outlier share, both (n, columns)."""
        n = len(o)
        if n == 0:
            return np.empty(o.shape), np.empty(o.shape)
        path = lindley(o * self._scale - self._drift, self.s)
        idx = np.arange(n)[:, None]
        co = np.cumsum(o, axis=0)
        last0 = np.maximum.accumulate(np.where(path == 0, idx, -1), axis=0)
        base = np.take_along_axis(co, np.maximum(last0, 0), axis=0)
        seg_len = np.where(last0 >= 0, idx - last0, self.seg_len + idx + 1)
        seg_cnt = np.where(last0 >= 0, co - base, self.seg_count + co)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(seg_len > 0, seg_cnt / np.maximum(seg_len, 1), 0.0)
        self.s = path[-1].copy()
        self.seg_len = seg_len[-1].astype(np.int64)
        self.seg_count = seg_cnt[-1].astype(np.int64)
        return path, rate
