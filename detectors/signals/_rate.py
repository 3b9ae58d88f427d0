"""A Bernoulli CUSUM per test on an event indicator (a value missing, repeated, of an
unseen level), calibrated like the outlier CUSUM: shared by the data-quality signals."""

from __future__ import annotations

import numpy as np

from ..base import StreamDetector
from ..cusum import affine_scan, monotone_extremes
from ..outliers import bernoulli_llr

MAX_RATE = 0.98  # a reference rate above this leaves nothing to detect


def upper_rate(count: np.ndarray, n: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """An upper confidence bound of a reference rate ``count / n`` (``n`` events whose
    indicator has long-run variance factor ``tau``), so that a finite reference's
    sampling error does not turn into false alarms (as the outlier CUSUM's ``p0``)."""
    n = np.maximum(np.asarray(n, np.float64), 1.0)
    p = (np.asarray(count, np.float64) + 1.0) / (n + 2.0)
    return np.minimum(p + 3.0 * np.sqrt(p * (1 - p) * tau / n), MAX_RATE)


def rate_threshold(arl: float, p0: np.ndarray, p1: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """The CUSUM threshold for a mean run length of ``arl`` events between false alarms
    of one test (the outlier CUSUM's, :func:`detectors.calibration.calibrate`)."""
    info = np.maximum(p0 * np.log(p0 / p1) + (1 - p0) * np.log((1 - p0) / (1 - p1)), 1e-12)
    return np.maximum(np.log(arl / tau) + np.log(info) / tau, 1.0)


class RateCUSUM(StreamDetector):
    """Bernoulli CUSUM per test of rate ``p0`` against ``p1`` (LLR increments divided
    by ``tau``), with the indicator's count and length since the CUSUM last stood at
    zero (its change-point estimate). A test with ``p0 >= MAX_RATE`` never fires.

    >>> cus = RateCUSUM([0.01], [0.11], threshold=[8.0])
    >>> o = np.zeros((1, 300), bool); o[0, 100:] = np.arange(200) % 3 == 0
    >>> rows, paths = cus.advance(o)
    >>> rows.tolist(), int(np.argmax(paths[0] > 8.0))
    ([0], 109)
    """

    _state_fields = ("s", "seg_len", "seg_count")
    _settings = ("p0", "p1", "threshold", "tau")

    def __init__(self, p0, p1, threshold, tau=1.0) -> None:
        self.p0 = np.asarray(p0, dtype=np.float64)
        self.p1 = np.asarray(p1, dtype=np.float64)
        self.threshold = np.where(self.p0 < MAX_RATE, np.asarray(threshold, np.float64), np.inf)
        self.tau = np.broadcast_to(np.asarray(tau, np.float64), self.p0.shape).copy()
        scale, drift = bernoulli_llr(self.p0, self.p1)
        self._scale, self._drift = scale / self.tau, drift / self.tau
        self._reset()

    @classmethod
    def calibrated(cls, count, rows, tau, shift: float, arl: float) -> "RateCUSUM":
        """Tests of reference rates ``count / rows`` (their upper bounds) against those
        plus ``shift``, each with mean run length ``arl`` between false alarms."""
        p0 = upper_rate(count, rows, tau)
        p1 = np.minimum(p0 + shift, 0.99)
        return cls(p0, p1, rate_threshold(arl, p0, p1, tau), tau)

    def _reset(self) -> None:
        self.s = np.zeros_like(self.p0)
        self.seg_len = np.zeros(len(self.p0), dtype=np.int64)
        self.seg_count = np.zeros(len(self.p0), dtype=np.int64)

    def share(self) -> np.ndarray:
        """Per test, the indicator's share since the CUSUM last stood at zero."""
        return np.where(self.seg_len > 0, self.seg_count / np.maximum(self.seg_len, 1), 0.0)

    def advance(self, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance on indicators ``o`` (tests, n); return the tests whose CUSUM may pass
        its threshold in the batch and their exact paths (len(rows), n). Tests without
        an indicator in the batch (the usual case) only drift down, in closed form."""
        c, n = o.shape
        if not n:
            return np.zeros(0, np.intp), np.zeros((0, 0))
        busy = o.any(axis=1) | (self.s > self.threshold)
        quiet = ~busy
        if quiet.any():  # the walk falls by the drift every event: its minimum is its end
            left = self.s[quiet] - self._drift[quiet] * float(n)
            zero = left <= 0
            self.s[quiet] = np.maximum(left, 0.0)
            self.seg_len[quiet] = np.where(zero, 0, self.seg_len[quiet] + n)
            self.seg_count[quiet] = np.where(zero, 0, self.seg_count[quiet])
        idx = np.flatnonzero(busy)
        if not len(idx):
            return idx, np.zeros((0, n))
        co = np.cumsum(o[idx], axis=1, dtype=np.int64)
        s_end, rows, paths, last0 = affine_scan(co, *monotone_extremes(co), self._scale[idx],
                                                self._drift[idx], self.s[idx],
                                                self.threshold[idx])
        hit = last0 >= 0
        base = np.where(hit, co[np.arange(len(idx)), np.maximum(last0, 0)], 0)
        self.seg_len[idx] = np.where(hit, n - 1 - last0, self.seg_len[idx] + n)
        self.seg_count[idx] = np.where(hit, co[:, -1] - base, self.seg_count[idx] + co[:, -1])
        self.s[idx] = s_end
        return idx[rows], paths
