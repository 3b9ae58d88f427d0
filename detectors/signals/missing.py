"""``missing``: the share of missing values of every feature column against the
reference's own share."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..calibration import Calibration, cusum_lambda
from .base import Checks, Context, FeatureBatch, SequentialSignal, per_column
from ._rate import RateCUSUM

MISSING_SHIFT = 0.10  # design rise of a missing share (the CUSUM's alternative)
BROKEN_FEED = 0.20  # a rise of this much or more is a broken feed: at least HIGH


class Missing(SequentialSignal):
    """Bernoulli CUSUM per feature column (numeric, then categorical) on "the value is
    missing" (NaN, None, an absent field): ``p0`` an upper confidence bound of the
    reference's missing share, ``p1 = p0 + MISSING_SHIFT``, the increments divided by
    the missing indicator's dependence factor in the reference (else the column's
    outlier or level factor). A column missing in the reference is allowed its rate.

    Reported strength: the rise of the missing share since the CUSUM last stood at
    zero over ``MISSING_SHIFT`` (a rise of 20 points is 2: HIGH); the root cause's
    ``detail`` holds both shares. A decision is at least HIGH while a column's CUSUM is
    past its threshold with a rise of ``BROKEN_FEED`` or more."""

    name = "missing"

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        p = context.profile
        self.columns = list(p.numeric_columns) + list(p.categorical_columns)
        q = (p.quality or {}).get("missing", {})
        self.reference = np.array([float(q.get(c, 0.0)) for c in self.columns])

    def calibrate(self, cal: Calibration) -> None:
        p, c = self.context.profile, len(self.columns)
        quality = p.quality or {}
        nnum = len(p.numeric_columns)
        fallback = np.r_[per_column(cal.out_tau, nnum), per_column(cal.cat_tau, c - nnum)]
        known = quality.get("missing_factor", {})
        tau = np.array([max(float(known.get(col, f)), 1.0)
                        for col, f in zip(self.columns, fallback)])
        rows = float(quality.get("rows", 0))
        self.rate = RateCUSUM.calibrated(self.reference * rows, rows, tau, MISSING_SHIFT, cal.arl_test)

    @property
    def threshold(self) -> np.ndarray:
        return self.rate.threshold

    def indicators(self, batch: FeatureBatch) -> np.ndarray:
        """Missing indicators (columns, n)."""
        rows = [np.isnan(batch.xt)] + [pd.isna(batch.cats[c])[None, :]
                                       for c in self.context.profile.categorical_columns]
        return np.concatenate(rows, axis=0) if len(rows) > 1 else rows[0]

    def update(self, batch: FeatureBatch) -> Checks:
        o = self.indicators(batch)
        paths: dict[int, np.ndarray] = {}
        rows, found = self.rate.advance(o)
        for j, pth in zip(rows, found):
            paths[int(j)] = pth / self.rate.threshold[j]
        readings = {"missing_batch_share": o.mean(axis=1)} if batch.n else {}
        return Checks.sparse(paths, batch.n, readings)

    def report(self, j: int, lam_seen: float) -> dict[str, Any]:
        share = float(self.rate.share()[j])
        lam = min(float(cusum_lambda(self.rate.s[j], self.rate.threshold[j])), lam_seen)
        return {"signal": self.name, "column": self.columns[j],
                "strength": max(1.0, (share - self.reference[j]) / MISSING_SHIFT),
                "lambda": lam, "detail": {"share": round(share, 4),
                                          "reference_share": round(float(self.reference[j]), 4)}}

    def severity_floor(self) -> str | None:
        r = self.rate
        broken = (r.s >= r.threshold) & (r.share() - self.reference >= BROKEN_FEED)
        return "HIGH" if broken.any() else None

    def restart(self) -> None:
        self.rate._reset()

    def snapshot(self, last: dict[str, Any]) -> dict[str, dict[str, float]]:
        return self.per_column(missing_share=last.get("missing_batch_share", 0.0),
                               missing_reference_share=self.reference)

    def get_state(self) -> dict[str, Any]:
        return self.rate.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.rate.set_state(state)
