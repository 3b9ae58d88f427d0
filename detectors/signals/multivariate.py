"""``multivariate``: a CUSUM on the numeric columns' PCA reconstruction error, for a
change of how columns move together that leaves every marginal unchanged."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import reconstruction
from ..calibration import Calibration, cusum_lambda
from ..cusum import CUSUM
from .base import Checks, Context, FeatureBatch, SequentialSignal


class Multivariate(SequentialSignal):
    """One test: a log-likelihood-ratio CUSUM for the reconstruction error's variance
    ratio ``config.variance_ratio`` on the dropped components
    (:mod:`detectors.reconstruction`; the error of ``d`` dropped components is a mean
    of ``d`` squared whitened coordinates, so the LLR is ``theta * d * e - cgf`` with
    ``theta = (1 - 1/ratio) / 2``). Its cumulant is the larger of the held-out errors'
    and a Gaussian's, raised by ``config.reference_margin`` standard errors of the
    held-out mean; serial dependence as the variance CUSUM: increments over the error
    series' factor ``tau`` (the reference's, or for a reference without time order the
    largest of the columns' factors), the threshold of a run length ``arl / tau``.
    No test without a joint record (one numeric column, or a profile saved before).

    Reported: the columns with the largest shares of the squared residual since the
    CUSUM last stood at zero (at least half the largest share), each with the signal's
    strength: the error's mean there over the design ratio."""

    name = "multivariate"

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.joint = context.profile.joint
        self.names = self.columns
        self.columns = ["multivariate"] if self.joint is not None else []
        d = self.joint["weights"].shape[1] if self.joint is not None else 1
        self.pp = np.zeros((d, d))  # residual outer products since the last zero

    def calibrate(self, cal: Calibration) -> None:
        if self.joint is None:
            self.cusum = CUSUM(np.zeros(0), np.zeros(0), np.zeros(0))
            return
        cfg, j = self.config, self.joint
        d = j["weights"].shape[1]
        theta = 0.5 * (1.0 - 1.0 / cfg.variance_ratio) * d
        e = np.asarray(j["errors"], dtype=np.float64)
        top = float(np.max(theta * e))
        cgf = max(top + float(np.log(np.mean(np.exp(theta * e - top)))),
                  -0.5 * d * np.log(1.0 - 2.0 * theta / d))
        tau = max(float(j["tau"]), 1.0)
        if cal.dependence_source != "reference":  # no time order: the columns' factors
            tau = max(tau, float(np.max(cal.var_tau)), float(np.max(cal.mean_tau)))
        drift = cgf + cfg.reference_margin * theta * float(np.std(e)) * np.sqrt(tau / len(e))
        info = max(drift - theta * float(np.mean(e)), 1e-12)
        h = max(np.log(cal.arl_test / tau) + np.log(info) / tau, 1.0)
        self.cusum = CUSUM([theta / tau], [drift / tau], [h])
        self.pp[:] = 0.0  # restarts with the CUSUM

    @property
    def threshold(self) -> np.ndarray:
        return self.cusum.threshold

    def update(self, batch: FeatureBatch) -> Checks:
        if self.joint is None or not batch.n:
            return Checks.sparse({}, batch.n, {})
        w = self.joint["weights"]
        p = sum(w[cols].T @ batch.scores(cols) for cols in batch.chunks())  # (dropped, n)
        e = np.einsum("dn,dn->n", p, p) / p.shape[0]
        path = self.cusum.update_many(e[:, None])[:, 0]
        zero = np.flatnonzero(path == 0)
        tail = p[:, zero[-1] + 1:] if len(zero) else p
        self.pp = tail @ tail.T + (0.0 if len(zero) else self.pp)
        st = path / self.cusum.threshold[0]
        return Checks.sparse({0: st} if st.max() >= 1 else {}, batch.n,
                             {})

    def shares(self) -> np.ndarray:
        """Each numeric column's share of the squared residual since the last zero."""
        return reconstruction.residual_shares(self.pp, self.joint["weights"],
                                              self.joint["scale"])

    def report(self, test: int, lam_seen: float) -> list[dict[str, Any]]:
        det = self.cusum
        ratio = float(det.segment_mean()[0] / det.scale[0]) / self.joint["weights"].shape[1]
        strength = max(1.0, ratio / self.config.variance_ratio)
        lam = min(float(cusum_lambda(det.s[0], det.threshold[0])), lam_seen)
        share = self.shares()
        top = np.argsort(share)[::-1][:int(np.count_nonzero(share >= share.max() / 2))]
        return [{"signal": self.name, "column": self.names[j], "strength": strength,
                 "lambda": lam, "share": float(share[j])} for j in top]

    def restart(self) -> None:
        self.cusum._reset()
        self.pp[:] = 0.0

    def model_snapshot(self) -> dict[str, float]:
        if self.joint is None:
            return {}
        return {"multivariate_statistic": float(self.cusum.s[0]),
                "multivariate_threshold": float(self.threshold[0])}

    def get_state(self) -> dict[str, Any]:
        return {"cusum": self.cusum.get_state(), "pp": self.pp.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.cusum.set_state(state["cusum"])
        self.pp = np.array(state["pp"], dtype=np.float64)
