"""``ks``: the exact two-sample KS statistic of every numeric column's last
``config.ks_window`` values against its reference, every ``config.ks_stride`` events."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..calibration import Calibration, ks_critical, ks_lambda
from .base import Checks, Context, FeatureBatch, WindowedSignal, per_column


class KS(WindowedSignal):
    """The window of :class:`~detectors.ks_window.KSWindow` (the context's, which it
    advances). Strength: the statistic over its critical value at the level
    ``ks_stride / arl_test`` (a union bound over checks) for the window's effective size
    (``n / tau`` under serial dependence); 0 while fewer than ``config.min_samples``
    values. Readings: the statistic, the window size and its missing values."""

    name = "ks"

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.window = context.window

    def calibrate(self, cal: Calibration) -> None:
        self.alpha = cal.ks_alpha
        self.tau = per_column(cal.ks_tau, len(self.columns))
        self._crit_full = np.array([self.critical(j, self.config.ks_window)
                                    for j in range(len(self.columns))])

    def critical(self, j: int, n: int) -> float:
        """Critical KS statistic of column ``j`` for a window of ``n`` values (cached
        per level and effective size by :func:`ks_critical`)."""
        return ks_critical(self.alpha, int(self.window.reference_sizes[j]), n, float(self.tau[j]))

    def update(self, batch: FeatureBatch) -> Checks:
        at, d, size, missing = self.window.update_slots(batch.slots)
        readings = {"ks": d[-1], "ks_n": size[-1], "missing": missing[-1]} if len(at) else {}
        return Checks(at, np.arange(len(self.columns)), self._strength(d, size).T, readings,
                      (d, size))

    def _strength(self, d: np.ndarray, size: np.ndarray) -> np.ndarray:
        """Statistic over critical value (checks, columns). A window with fewer values
        has a larger critical value, so a statistic below 0.9 of the full window's
        cannot pass it: only the others (rare) get their own critical value (each costs
        an inversion of the KS distribution); the rest keep ``d`` over the full
        window's, which is below 1 as well."""
        w, least = self.config.ks_window, self.config.min_samples
        out = d / self._crit_full
        partial = (size < w) & (out >= 0.9)
        out[(size < w) & (size < least)] = 0.0
        if partial.any():  # the first window, or NaN in the window
            for r, j in zip(*np.nonzero(partial)):
                nn = int(size[r, j])
                out[r, j] = d[r, j] / self.critical(int(j), nn) if nn >= least else 0.0
        return out

    def lam(self, checks: Checks, test: int, check: int) -> float:
        d, size = checks.detail
        return ks_lambda(float(d[check, test]), int(self.window.reference_sizes[test]),
                         int(size[check, test]), float(self.tau[test]), self.alpha)

    def snapshot(self, last: dict[str, Any]) -> dict[str, dict[str, float]]:
        size = last.get("ks_n", np.zeros(len(self.columns)))
        out = {}
        for j, name in enumerate(self.columns):
            n = int(size[j])
            out[name] = {"ks_statistic": float(last["ks"][j]) if "ks" in last else 0.0,
                         "ks_threshold": float(self.critical(j, n) if n > 0 else np.nan)}
        return out

    def get_state(self) -> dict[str, Any]:
        return self.window.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.window.set_state(state)
