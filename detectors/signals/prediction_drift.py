"""``prediction_drift``: the model's numeric prediction watched like an input (no label
needed): CUSUMs on its normal scores against the reference's predictions."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..calibration import Calibration, cusum_lambda, dependent_threshold
from ..cusum import CUSUM, block_extremes
from ..grid import SlotLookup
from ..ranks import RankTransform
from .base import Checks, Context, FeatureBatch, SequentialSignal
from .mean_shift import FINE_BLOCK

N_CUSUMS = 4  # tests counted in the model's budget (calibration.count_tests)


class PredictionDrift(SequentialSignal):
    """Four CUSUMs on the prediction's normal scores (:mod:`detectors.ranks`, so a
    class label 0/1 is a frequency test and a skewed score is distribution-free):
    mean up and down for ``config.mean_shift``, variance up for
    ``config.variance_ratio`` and down for its inverse (a prediction whose spread
    collapses). Each gets one test's share of the budget; dependence from the
    reference's predictions in time order, else the largest of the columns' factors.
    Events without a prediction leave them unchanged. No test when the profile has no
    numeric predictions.

    Reported strength: the largest CUSUM's estimated effect (mean shift over the
    design shift; variance ratio, or its inverse, over the design ratio)."""

    name = "prediction_drift"

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.record = context.profile.prediction
        self.columns = [self.record["column"]] if self.record is not None else []
        self.rank = RankTransform(self.record["sample"]) if self.record is not None else None
        # the grid lookup (several times faster than a binary search), local slots
        self.lookup = SlotLookup([self.rank.values]) if self.rank is not None else None

    def calibrate(self, cal: Calibration) -> None:
        if self.rank is None:
            self.cusum = CUSUM(np.zeros(0), np.zeros(0), np.zeros(0))
            return
        cfg, rt, arl = self.config, self.rank, cal.arl_test
        f = self.record["factors"]
        t_mean, t_var = (f["mean"], f["var"]) if f is not None else (
            float(np.max(cal.mean_tau)), float(np.max(cal.var_tau)))
        d = cfg.mean_shift
        up_v, down_v = 0.5 * (1 - 1 / cfg.variance_ratio), 0.5 * (1 - cfg.variance_ratio)
        scale = np.array([d / t_mean, -d / t_mean, up_v / t_var, down_v / t_var])
        cgf = np.array([rt.cgf(d), rt.cgf(-d), rt.cgf(up_v, 2), rt.cgf(down_v, 2)])
        info = np.maximum(cgf[2:] - np.array([up_v, down_v]), 1e-12)
        h_var = np.maximum(np.log(arl / t_var) + np.log(info) / t_var, 1.0)
        h = np.r_[np.full(2, dependent_threshold(arl, d, t_mean)), h_var]
        self.cusum = CUSUM(scale, cgf / np.repeat([t_mean, t_var], 2), h)
        self.design = np.array([d, d, cfg.variance_ratio, cfg.variance_ratio])

    @property
    def threshold(self) -> np.ndarray:
        return self.cusum.threshold[:1]

    def update(self, batch: FeatureBatch) -> Checks:
        pred = batch.predictions
        if self.rank is None or pred is None or not batch.n:
            return Checks.sparse({}, batch.n, {})
        ok = np.isfinite(pred)
        z = self.rank.score[self.lookup.local(self.lookup.slots(
            (pred[ok] if not ok.all() else pred)[None, :]))[0]]
        det = self.cusum
        s0 = float(np.max(det.s / det.threshold))
        if not len(z):
            return Checks.sparse({}, batch.n, {})
        # the four CUSUMs' walks from the cumulative sums of z (twice) and z^2 (twice),
        # exact paths only where a threshold may be passed (see cusum.affine_scan)
        cz = np.empty((4, len(z)))
        np.cumsum(z, out=cz[0])
        np.cumsum(z * z, out=cz[2])
        cz[1], cz[3] = cz[0], cz[2]
        rows, found = det.advance_affine(cz, block_extremes(cz, FINE_BLOCK), slice(0, 4),
                                         FINE_BLOCK)
        readings: dict[str, Any] = {}
        if not len(rows):
            return Checks.sparse({}, batch.n, readings)
        path = np.max([pth / det.threshold[r] for r, pth in zip(rows, found)], axis=0)
        st = np.r_[s0, path][np.cumsum(ok)]  # events without a prediction: unchanged
        return Checks.sparse({0: st} if st.max() >= 1 else {}, batch.n, readings)

    def effect(self) -> np.ndarray:
        """Per CUSUM, its estimated effect over its design (read off the state)."""
        det = self.cusum
        m = det.segment_mean() / det.scale  # mean of z (mean pair) or z^2 (variance)
        ratio = np.where(np.arange(4) == 3, 1 / np.maximum(m, 1e-12), m)
        return np.where(np.arange(4) < 2, np.abs(m), ratio) / self.design

    def report(self, test: int, lam_seen: float) -> dict[str, Any]:
        det = self.cusum
        lead = int(np.argmax(det.s / det.threshold))
        lam = min(float(cusum_lambda(det.s[lead], det.threshold[lead])), lam_seen)
        return {"signal": self.name, "column": self.columns[0],
                "strength": max(1.0, float(self.effect()[lead])), "lambda": lam}

    def lam(self, test: int, strength: float) -> float:
        return float(cusum_lambda(strength * self.threshold[0], self.threshold[0]))

    def restart(self) -> None:
        self.cusum._reset()

    def model_snapshot(self) -> dict[str, float]:
        """The largest of the four CUSUMs' statistic over its threshold (1: fires)."""
        if self.rank is None:
            return {}
        return {"prediction_drift_statistic": float(np.max(self.cusum.s / self.cusum.threshold))}

    def get_state(self) -> dict[str, Any]:
        return self.cusum.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.cusum.set_state(state)
