"""``stuck``: a numeric column repeating its last value far more often than the
reference's own rate of consecutive equal values allows."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..calibration import Calibration, cusum_lambda
from ..profile import repeats
from .base import Checks, Context, FeatureBatch, SequentialSignal, per_column
from ._rate import RateCUSUM

STUCK_SHIFT = 0.30  # design rise of the repeat rate (the CUSUM's alternative)


def collision_rate(sample: np.ndarray) -> float:
    """The repeat rate of independent draws from a sample: ``sum p_v^2``."""
    _, counts = np.unique(sample, return_counts=True)
    p = counts / max(len(sample), 1)
    return float(p @ p)


class Stuck(SequentialSignal):
    """Bernoulli CUSUM per numeric column on "the value equals the one before" (a
    missing value never does): ``p0`` an upper confidence bound of the reference's
    repeat rate in time order (which holds its ties, Poisson counts say, and its serial
    dependence, an AR(1) stream's runs), ``p1 = p0 + STUCK_SHIFT``, the increments
    divided by the repeat indicator's dependence factor. A profile saved before it
    knew the repeat rate uses that of independent draws from its sample.

    Reported strength: the rise of the repeat rate since the CUSUM last stood at zero
    over ``STUCK_SHIFT``; ``detail`` names the repeated value. A stuck column is a
    broken feed: a decision is at least HIGH while one is past its threshold."""

    name = "stuck"

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        p = context.profile
        known = (p.quality or {}).get("repeat", {})
        self.reference = np.array([float(known[c]) if c in known else collision_rate(s)
                                   for c, s in zip(self.columns, p.samples)])
        self.previous = np.full(len(self.columns), np.nan)

    def calibrate(self, cal: Calibration) -> None:
        p, c = self.context.profile, len(self.columns)
        quality = p.quality or {}
        known = quality.get("repeat_factor", {})
        fallback = per_column(cal.out_tau, c)
        tau = np.array([max(float(known.get(col, f)), 1.0)
                        for col, f in zip(self.columns, fallback)])
        rows = float(quality.get("rows", min(len(s) for s in p.samples) if c else 0))
        self.rate = RateCUSUM.calibrated(self.reference * rows, rows, tau, STUCK_SHIFT, cal.arl_test)

    @property
    def threshold(self) -> np.ndarray:
        return self.rate.threshold

    def update(self, batch: FeatureBatch) -> Checks:
        paths: dict[int, np.ndarray] = {}
        if not batch.n:
            return Checks.sparse(paths, 0, {})
        o = repeats(np.concatenate([self.previous[:, None], batch.xt], axis=1).T).T
        self.previous = batch.xt[:, -1].copy()
        rows, found = self.rate.advance(o)
        for j, pth in zip(rows, found):
            paths[int(j)] = pth / self.rate.threshold[j]
        return Checks.sparse(paths, batch.n, {"repeat_batch_share": o.mean(axis=1)})

    def report(self, j: int, lam_seen: float) -> dict[str, Any]:
        share = float(self.rate.share()[j])
        lam = min(float(cusum_lambda(self.rate.s[j], self.rate.threshold[j])), lam_seen)
        return {"signal": self.name, "column": self.columns[j],
                "strength": max(1.0, (share - self.reference[j]) / STUCK_SHIFT),
                "lambda": lam, "detail": {"value": float(self.previous[j]),
                                          "repeat_share": round(share, 4),
                                          "reference_repeat_share":
                                              round(float(self.reference[j]), 4)}}

    def severity_floor(self) -> str | None:
        return "HIGH" if (self.rate.s >= self.rate.threshold).any() else None

    def restart(self) -> None:
        self.rate._reset()

    def snapshot(self, last: dict[str, Any]) -> dict[str, dict[str, float]]:
        return self.per_column(repeat_share=last.get("repeat_batch_share", 0.0), repeat_reference_share=self.reference)

    def get_state(self) -> dict[str, Any]:
        return {**self.rate.get_state(), "previous": self.previous.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.rate.set_state(state)
        self.previous = np.array(state["previous"], dtype=np.float64)
