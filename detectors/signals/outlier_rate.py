"""``outlier_rate``: the share of z-score outliers of every numeric column against the
reference's own share."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..calibration import Calibration, cusum_lambda
from ..outliers import OutlierRate
from .base import Checks, FeatureBatch, SequentialSignal, per_column


class Outliers(SequentialSignal):
    """Bernoulli CUSUM per column on ``|x - mean| / std > config.z_score_threshold``
    (:class:`~detectors.outliers.OutlierRate`); a column's strength counts only while
    its outlier share since the CUSUM last stood at zero is at least the design's
    ``config.outlier_pct_threshold``.

    Reported strength: that share over the design's share. A decision is at least
    MEDIUM while some column's share is above it and its CUSUM at least
    ``config.outlier_medium_fraction`` of the way to its threshold."""

    name = "outlier_rate"

    def calibrate(self, cal: Calibration) -> None:
        p, cfg, c = self.context.profile, self.config, len(self.columns)
        self.rate = OutlierRate(p.means, p.stds, cal.out_p0, cal.out_p1,
                                per_column(cal.out_h, c), cfg.z_score_threshold,
                                cfg.outlier_pct_threshold / 100,
                                tau=per_column(cal.out_tau, c))

    @property
    def threshold(self) -> np.ndarray:
        return self.rate.threshold

    def update(self, batch: FeatureBatch) -> Checks:
        paths: dict[int, np.ndarray] = {}
        floor = self.config.outlier_pct_threshold / 100
        o, count = self.rate, np.zeros(len(self.columns))
        for cols in batch.chunks():
            rows, found, rates, count[cols] = o.advance(o.indicators_t(batch.xt[cols], cols),
                                                        cols)
            for j, pth, rate in zip(rows, found, rates):
                paths[j] = np.where(rate >= floor, pth / o.threshold[j], 0.0)
        readings = {}
        if batch.n:
            with np.errstate(invalid="ignore", divide="ignore"):
                readings["outlier_segment_rate"] = np.where(
                    o.seg_len > 0, o.seg_count / np.maximum(o.seg_len, 1), 0.0)
            readings["batch_outlier_rate"] = count / batch.n
        return Checks.sparse(paths, batch.n, readings)

    def _share(self) -> np.ndarray:
        """Per column, the outlier share since the CUSUM last stood at zero."""
        o = self.rate
        return np.where(o.seg_len > 0, o.seg_count / np.maximum(o.seg_len, 1), 0.0)

    def report(self, j: int, lam_seen: float) -> dict[str, Any]:
        e = float((self._share() / (self.config.outlier_pct_threshold / 100))[j])
        o = self.rate
        lam = min(float(cusum_lambda(o.s[j], o.threshold[j])), lam_seen)
        return {"signal": self.name, "column": self.columns[j], "strength": max(1.0, e),
                "lambda": lam}

    def severity_floor(self) -> str | None:
        o, cfg = self.rate, self.config
        share = o.seg_count / np.maximum(o.seg_len, 1)
        over = (o.seg_len > 0) & (share > cfg.outlier_pct_threshold / 100) \
            & (o.s >= cfg.outlier_medium_fraction * o.threshold)
        return "MEDIUM" if over.any() else None

    def restart(self) -> None:
        self.rate._reset()

    def snapshot(self, last: dict[str, Any]) -> dict[str, dict[str, float]]:
        return self.per_column(outlier_rate=last.get("batch_outlier_rate", 0.0), outlier_reference_rate=self.rate.p0)

    def get_state(self) -> dict[str, Any]:
        return self.rate.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.rate.set_state(state)
