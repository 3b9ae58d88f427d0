"""Vectorised one-sided CUSUM on log-likelihood-ratio increments."""

from __future__ import annotations

import numpy as np

from .base import StreamDetector


def lindley(incr: np.ndarray, s0: np.ndarray) -> np.ndarray:
    """All values of ``S_t = max(0, S_{t-1} + incr_t)`` along axis 0, without a loop.

    ``S_t = C_t - min(-S_0, min_{s<=t} C_s)`` with ``C`` the cumulative sum of the
    increments (the Lindley recursion unrolled).

    >>> lindley(np.array([[1.0], [-3.0], [2.0]]), np.array([0.5])).ravel().tolist()
    [1.5, 0.0, 2.0]
    """
    c = np.cumsum(incr, axis=0)
    low = np.minimum.accumulate(c, axis=0)
    np.minimum(low, -s0, out=low)
    return c - low


class CUSUM(StreamDetector):
    """One-sided CUSUM per column: ``S = max(0, S + scale * x - drift)``.

    With ``drift = log E0[exp(scale * x)]`` the increments are a log-likelihood ratio
    whose exponential is a mean-one martingale under no drift, so by Ville's inequality
    the mean run length to a false alarm is at least ``exp(threshold)``.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> x = np.r_[rng.normal(size=500), rng.normal(1.0, size=200)][:, None]
    >>> det = CUSUM(scale=[0.5], drift=[0.125], threshold=[9.0])
    >>> path = det.update_many(x)
    >>> int(np.argmax(path[:, 0] > 9.0))  # change at 500
    523
    """

    _state_fields = ("s",)
    _settings = ("scale", "drift", "threshold")

    def __init__(self, scale, drift, threshold) -> None:
        self.scale = np.asarray(scale, dtype=np.float64)
        self.drift = np.asarray(drift, dtype=np.float64)
        self.threshold = np.asarray(threshold, dtype=np.float64)
        self._reset()

    def _reset(self) -> None:
        self.s = np.zeros_like(self.scale)

    @property
    def drift_detected(self) -> np.ndarray:
        return self.s > self.threshold

    def update_many(self, values: np.ndarray) -> np.ndarray:
        """Feed ``values`` (n, columns); return the statistic after every event."""
        path = lindley(values * self.scale - self.drift, self.s)
        if len(path):
            self.s = path[-1].copy()
        return path
