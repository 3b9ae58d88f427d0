"""``categorical``: a windowed chi-square test of every categorical column against its
reference's level counts."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import chi2

from ..calibration import Calibration
from ..categorical import CategoricalWindow
from .base import Checks, Context, FeatureBatch, WindowedSignal


class Categorical(WindowedSignal):
    """One :class:`~detectors.categorical.CategoricalWindow` per categorical column
    (``config.categorical_window`` values, checked every ``config.categorical_stride``
    events; all columns share the checks). Strength: the statistic over its critical
    value at the level ``categorical_stride / arl_test``, times ``tau`` (a chi-square
    statistic on dependent events is ``tau`` times a chi-square variable); 0 before
    ``config.min_samples`` events. Readings: the statistic and the total-variation
    distance."""

    name = "categorical"

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        cfg, p = self.config, context.profile
        self.windows = {name: CategoricalWindow(p.categories[name], cfg.categorical_window,
                                                cfg.categorical_stride)
                        for name in p.categorical_columns}
        self.columns = list(self.windows)

    def calibrate(self, cal: Calibration) -> None:
        self.alpha = cal.cat_alpha
        t = np.broadcast_to(np.asarray(cal.cat_tau, np.float64), (len(self.windows),))
        self.tau = {name: float(t[j]) for j, name in enumerate(self.windows)}
        self.critical = {name: w.critical(cal.cat_alpha) * float(t[j])
                         for j, (name, w) in enumerate(self.windows.items())}

    def codes(self, cats: dict[str, np.ndarray], n: int) -> np.ndarray:
        """The level codes (columns, n) of a batch's categorical values."""
        return np.array([w.codes(cats[c]) for c, w in self.windows.items()],
                        dtype=np.int64).reshape(len(self.windows), n)

    def update(self, batch: FeatureBatch) -> Checks:
        at = np.zeros(0, dtype=np.intp)
        strength = np.zeros((0, len(self.windows)))
        readings = {}
        for j, (name, win) in enumerate(self.windows.items()):
            ci, stat, tv = win.update_codes(win.codes(batch.cats[name]))
            if j == 0:
                at, strength = ci, np.zeros((len(ci), len(self.windows)))
            enough = batch.start + ci + 1 >= self.config.min_samples
            strength[:, j] = np.where(enough, stat / self.critical[name], 0.0)
            if len(ci):
                readings[f"cat:{name}"] = (stat[-1], tv[-1])
        return Checks(at, np.arange(len(self.windows)), strength.T, readings)

    def lam(self, checks: Checks, test: int, check: int) -> float:
        name = self.columns[test]
        stat = float(checks.strength[test, check]) * self.critical[name]
        return float(chi2.sf(stat / self.tau[name], self.windows[name]._df)) / self.alpha

    def snapshot(self, last: dict[str, Any]) -> dict[str, dict[str, float]]:
        out = {}
        for name in self.windows:
            stat, tv = last.get(f"cat:{name}", (0.0, 0.0))
            out[name] = {"chi2_statistic": float(stat), "chi2_threshold": self.critical[name],
                         "total_variation": float(tv)}
        return out

    def get_state(self) -> dict[str, Any]:
        return {name: w.get_state() for name, w in self.windows.items()}

    def set_state(self, state: dict[str, Any]) -> None:
        for name, w in self.windows.items():
            w.set_state(state[name])
