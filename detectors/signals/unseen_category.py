"""``unseen_category``: the share of a categorical column's values whose level the
reference never had, against what the reference's own rare levels make plausible."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..calibration import Calibration, cusum_lambda
from .base import Checks, Context, FeatureBatch, SequentialSignal, per_column
from ._rate import RateCUSUM

UNSEEN_SHIFT = 0.02  # design share of values of unseen levels (the CUSUM's alternative)
KEEP_LEVELS = 20  # new levels counted per column (the most frequent are kept)
REPORT_LEVELS = 5  # new levels named in a root cause


class UnseenCategory(SequentialSignal):
    """Bernoulli CUSUM per categorical column on "the value's level is not in the
    reference" (a missing value is not a level). The rate of unseen levels a
    reference makes plausible is its share of levels seen once (Good-Turing: the
    probability that the next value is of a new level); ``p0`` is an upper confidence
    bound of it, ``p1 = p0 + UNSEEN_SHIFT``, the increments divided by the column's
    level dependence factor.

    The new levels' counts since the CUSUM last stood at zero are kept (at most
    ``KEEP_LEVELS`` per column); the root cause's ``detail`` lists the most frequent
    ``REPORT_LEVELS`` with their shares. Reported strength: the share of unseen levels
    over ``UNSEEN_SHIFT``. A model asked about levels it was never trained on needs a
    look: a decision is at least MEDIUM while a column is past its threshold."""

    name = "unseen_category"

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        p = context.profile
        self.columns = list(p.categorical_columns)
        self.levels = {c: pd.Index(list(p.categories[c])) for c in self.columns}
        counts = [np.array(list(p.categories[c].values()), dtype=np.int64)
                  for c in self.columns]
        self.singletons = np.array([float(np.count_nonzero(k == 1)) for k in counts])
        self.rows = np.array([float(k.sum()) for k in counts])
        self.new: dict[str, dict[str, int]] = {c: {} for c in self.columns}

    def calibrate(self, cal: Calibration) -> None:
        tau = per_column(cal.cat_tau, len(self.columns))
        self.rate = RateCUSUM.calibrated(self.singletons, self.rows, tau, UNSEEN_SHIFT, cal.arl_test)
        self.new = {c: {} for c in self.columns}

    @property
    def threshold(self) -> np.ndarray:
        return self.rate.threshold

    def unseen(self, values: np.ndarray, column: str) -> np.ndarray:
        """Whether each value is of a level the reference lacks."""
        s = pd.Series(values, dtype=object)
        known = self.levels[column].get_indexer(s.astype(str)) >= 0
        return ~known & s.notna().to_numpy()

    def update(self, batch: FeatureBatch) -> Checks:
        n, paths = batch.n, {}
        if not n or not self.columns:
            return Checks.sparse(paths, n, {})
        o = np.array([self.unseen(batch.cats[c], c) for c in self.columns]).reshape(-1, n)
        rows, found = self.rate.advance(o)
        for j, pth in zip(rows, found):
            paths[int(j)] = pth / self.rate.threshold[j]
        for j, c in enumerate(self.columns):
            self._count_levels(c, batch.cats[c], o[j], int(self.rate.seg_len[j]), n)
        return Checks.sparse(paths, n, {"unseen_batch_share": o.mean(axis=1)})

    def _count_levels(self, column: str, values: np.ndarray, unseen: np.ndarray,
                      seg_len: int, n: int) -> None:
        """Count the batch's new levels into the column's segment counts (restarted
        when the segment started inside the batch)."""
        first = max(n - seg_len, 0)
        counts = {} if first > 0 or seg_len == 0 else dict(self.new[column])
        picked = values[first:][unseen[first:]]
        if len(picked):
            names, k = np.unique(pd.Series(picked, dtype=object).astype(str).to_numpy(),
                                 return_counts=True)
            for name, c in zip(names.tolist(), k.tolist()):
                counts[name] = counts.get(name, 0) + c
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:KEEP_LEVELS]
        self.new[column] = dict(top)

    def report(self, j: int, lam_seen: float) -> dict[str, Any]:
        c, r = self.columns[j], self.rate
        share = float(r.share()[j])
        seg = max(int(r.seg_len[j]), 1)
        levels = {k: round(v / seg, 4) for k, v in list(self.new[c].items())[:REPORT_LEVELS]}
        lam = min(float(cusum_lambda(r.s[j], r.threshold[j])), lam_seen)
        return {"signal": self.name, "column": c, "strength": max(1.0, share / UNSEEN_SHIFT),
                "lambda": lam, "detail": {"share": round(share, 4), "levels": levels}}

    def severity_floor(self) -> str | None:
        return "MEDIUM" if (self.rate.s >= self.rate.threshold).any() else None

    def restart(self) -> None:
        self.rate._reset()
        self.new = {c: {} for c in self.columns}

    def snapshot(self, last: dict[str, Any]) -> dict[str, dict[str, float]]:
        return self.per_column(unseen_share=last.get("unseen_batch_share", 0.0))

    def get_state(self) -> dict[str, Any]:
        return {**self.rate.get_state(), "new_levels": {c: dict(v) for c, v in self.new.items()}}

    def set_state(self, state: dict[str, Any]) -> None:
        self.rate.set_state(state)
        self.new = {c: {str(k): int(v) for k, v in state["new_levels"].get(c, {}).items()}
                    for c in self.columns}
