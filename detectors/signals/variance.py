"""``variance``: a CUSUM on every numeric column's squared normal scores."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..calibration import Calibration, cusum_lambda
from ..cusum import CUSUM, monotone_extremes
from .base import Checks, FeatureBatch, SequentialSignal, per_column
from .mean_shift import FINE_BLOCK


class Variance(SequentialSignal):
    """Log-likelihood-ratio CUSUM per column for a variance ratio of
    ``config.variance_ratio`` on the squared normal scores. Their cumulative sums never
    decrease, so their block extremes cost nothing, and short blocks keep the bound of
    :func:`~detectors.cusum.affine_scan` tight (the CUSUM's drift is large).

    Reported strength: the variance ratio at Hinkley's change-point estimate since the
    CUSUM last stood at zero, over ``config.variance_ratio``."""

    name = "variance"

    def calibrate(self, cal: Calibration) -> None:
        c = len(self.columns)
        tau = per_column(cal.var_tau, c)
        self.cusum = CUSUM(cal.var_scale / tau, per_column(cal.var_drift, c) / tau,
                           per_column(cal.var_h, c))

    @property
    def threshold(self) -> np.ndarray:
        return self.cusum.threshold

    def update(self, batch: FeatureBatch) -> Checks:
        paths: dict[int, np.ndarray] = {}
        det = self.cusum
        for cols in batch.chunks():
            cz = np.square(batch.scores(cols))
            np.cumsum(cz, axis=1, out=cz)
            rows, found = det.advance_affine(cz, monotone_extremes(cz, FINE_BLOCK), cols,
                                             FINE_BLOCK)
            for j, pth in zip(rows, found):
                paths[j] = pth / det.threshold[j]
        return Checks.sparse(paths, batch.n, {"variance": det.s.copy()} if batch.n else {})

    def effect(self) -> np.ndarray:
        """Per column, the variance ratio of the normal scores since the CUSUM last stood
        at zero, over ``config.variance_ratio`` (read off the state)."""
        return self.cusum.segment_mean() / self.cusum.scale / self.config.variance_ratio

    def _hinkley(self, j: int) -> float | None:
        """The variance ratio at the maximum-likelihood change point since the CUSUM
        last stood at zero, over the design ratio; None without data."""
        z = self.context.recent_scores(j, self.cusum.n[j])
        if not len(z):
            return None
        length = np.arange(1.0, len(z) + 1)
        r = np.cumsum(z * z) / length
        with np.errstate(divide="ignore"):
            llr = np.where(r > 1, length * (r - 1 - np.log(r)), 0.0)
        return float(r[int(np.argmax(llr))]) / self.config.variance_ratio

    def report(self, j: int, lam_seen: float) -> dict[str, Any]:
        e = self._hinkley(j)
        e = float(self.effect()[j]) if e is None else e
        det = self.cusum
        lam = min(float(cusum_lambda(det.s[j], det.threshold[j])), lam_seen)
        return {"signal": self.name, "column": self.columns[j], "strength": max(1.0, e),
                "lambda": lam}

    def restart(self) -> None:
        self.cusum._reset()

    def snapshot(self, last: dict[str, Any]) -> dict[str, dict[str, float]]:
        return self.per_column(variance_statistic=last.get("variance", 0.0), variance_threshold=self.threshold)

    def get_state(self) -> dict[str, Any]:
        return self.cusum.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.cusum.set_state(state)
