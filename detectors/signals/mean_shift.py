"""``mean_shift``: Page's CUSUMs on every numeric column's normal scores, up and down,
for the design shift and for large shifts."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..calibration import Calibration, cusum_lambda
from ..cusum import BLOCK, CUSUM, block_extremes
from .base import Checks, FeatureBatch, SequentialSignal, per_column

FINE_BLOCK = 8  # events per block of the large-shift CUSUMs' bound (see cusum.affine_scan)


class MeanShift(SequentialSignal):
    """Four log-likelihood-ratio CUSUMs per column on the normal scores: up and down
    for ``config.mean_shift`` and for ``config.mean_shift_large`` (calibrated with
    ``config.mean_large_weight`` of a test's share of the false-alarm budget; scale 0 and
    an infinite threshold when off). They share one cumulative sum of the scores and
    its block extremes (:func:`~detectors.cusum.affine_scan`): only columns that may
    pass a threshold in the batch get an exact path. A column's strength is the largest
    of its four CUSUMs' statistic over threshold.

    Reported strength: the shift of the normal scores at Hinkley's change-point
    estimate since the leading CUSUM last stood at zero, over ``config.mean_shift``."""

    name = "mean_shift"

    def calibrate(self, cal: Calibration) -> None:
        c = len(self.columns)
        d, dl, tau = cal.mean_scale, cal.mean_scale_large, per_column(cal.mean_tau, c)
        h, h_large = per_column(cal.mean_h, c), per_column(cal.mean_h_large, c)
        self.up = CUSUM(d / tau, per_column(cal.mean_drift_up, c) / tau, h)
        self.down = CUSUM(-d / tau, per_column(cal.mean_drift_down, c) / tau, h)
        self.up_large = CUSUM(np.full(c, dl) / tau, per_column(cal.mean_drift_up_large, c) / tau,
                              h_large)
        self.down_large = CUSUM(np.full(c, -dl) / tau,
                                per_column(cal.mean_drift_down_large, c) / tau, h_large)

    @property
    def threshold(self) -> np.ndarray:
        """The design-shift CUSUMs' threshold (the unit of ``lambda``)."""
        return self.up.threshold

    @property
    def cusums(self) -> tuple[CUSUM, ...]:
        """Up and down for the design shift, then for large shifts."""
        return (self.up, self.down, self.up_large, self.down_large)

    def update(self, batch: FeatureBatch) -> Checks:
        paths: dict[int, np.ndarray] = {}
        for cols in batch.chunks():
            cz = np.cumsum(batch.scores(cols), axis=1)
            # blocks of 16 events for the design-shift pair, of 8 for the large-shift one
            ext = block_extremes(cz, BLOCK, FINE_BLOCK)
            for k, det in enumerate(self.cusums):
                rows, found = det.advance_affine(cz, ext[k // 2], cols,
                                                 (BLOCK, FINE_BLOCK)[k // 2])
                for j, pth in zip(rows, found):
                    st = pth / det.threshold[j]
                    paths[j] = np.maximum(paths[j], st) if j in paths else st
        readings = {"mean_shift": np.maximum(self.up.s, self.down.s)} if batch.n else {}
        return Checks.sparse(paths, batch.n, readings)

    def _leading(self, j: int) -> CUSUM:
        """The CUSUM of column ``j`` farthest past (or least short of) its threshold."""
        dets = self.cusums
        return dets[int(np.argmax([d.s[j] - d.threshold[j] for d in dets]))]

    def effect(self) -> np.ndarray:
        """Per column, the mean shift of the normal scores since the higher design-shift
        CUSUM last stood at zero (Page's estimate), over ``config.mean_shift``: read off
        the state (segment sum ``S + N * drift``), no cost per event."""
        up, down = self.up, self.down
        shift = np.where(up.s >= down.s, up.segment_mean() / np.abs(up.scale),
                         down.segment_mean() / np.abs(down.scale))
        return shift / self.config.mean_shift

    def _hinkley(self, j: int) -> float | None:
        """The shift at the change point that maximises the likelihood ratio among the
        events since the leading CUSUM last stood at zero, over the design shift; None
        without data. (Page's run often starts well before the change, and its mean is
        diluted by those events; the maximum-likelihood change point inside it is not.
        The window's scores cost ``O(ks_window)`` per decision only.)"""
        lead = self._leading(j)
        z = self.context.recent_scores(j, lead.n[j])
        if not len(z):
            return None
        length = np.arange(1.0, len(z) + 1)
        mean = np.cumsum(z if lead.scale[j] > 0 else -z) / length
        best = int(np.argmax(np.where(mean > 0, length * mean * mean, 0.0)))
        return float(mean[best]) / self.config.mean_shift

    def report(self, j: int, lam_seen: float) -> dict[str, Any]:
        e = self._hinkley(j)
        e = float(self.effect()[j]) if e is None else e
        lead = self._leading(j)
        lam = min(float(cusum_lambda(lead.s[j], lead.threshold[j])), lam_seen)
        return {"signal": self.name, "column": self.columns[j], "strength": max(1.0, e),
                "lambda": lam}

    def restart(self) -> None:
        for det in self.cusums:
            det._reset()

    def snapshot(self, last: dict[str, Any]) -> dict[str, dict[str, float]]:
        return self.per_column(mean_shift_statistic=last.get("mean_shift", 0.0), mean_shift_threshold=self.threshold)

    def get_state(self) -> dict[str, Any]:
        return {"cusums": [det.get_state() for det in self.cusums]}

    def set_state(self, state: dict[str, Any]) -> None:
        for det, st in zip(self.cusums, state["cusums"]):
            det.set_state(st)
