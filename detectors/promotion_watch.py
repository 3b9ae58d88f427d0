"""A watched promotion: a new champion's errors on its first labelled events against the
validation figures of the champion it replaced.

The retrainer promotes a challenger that beat the champion on a holdout; a holdout can
mislead (too small, a leak, a regime already gone). Over the new champion's first
``rows`` labelled events this compares its live MAE, RMSE (regression) or accuracy
(classification; errors as ``detectors.prediction_error`` defines them) with the old champion's figures on that holdout, with the design's
relative thresholds (``DetectorConfig``: MAE ``error_threshold`` +15 %, RMSE
``rmse_threshold`` +10 %, accuracy ``accuracy_threshold`` -5 %). One verdict, when the
``rows``-th event arrives; then the watch is over.

>>> watch = PromotionWatch("regression", {"mae": 1.0, "rmse": 1.2}, rows=4)
>>> watch.update_many([0.0, 0.0, 0.0], [1.0, 1.1, 0.9]) is None  # 3 of 4 events
True
>>> verdict = watch.update_many([0.0, 0.0, 0.0], [2.0, 9.0, 9.0])  # the 4th decides
>>> verdict.index, verdict.regressed, round(verdict.live["mae"], 3)
(0, ['mae', 'rmse'], 1.25)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.config import DetectorConfig
from detectors.fusion import Decision
from detectors.prediction_error import prediction_errors

TRIGGER_TYPE = "promotion_regression"


@dataclass(frozen=True)
class WatchVerdict:
    """Where in the batch the watch ended (index of its last event), the live and the old
    champion's figures, and the metrics worse than the thresholds allow (empty: passed)."""

    index: int
    live: dict[str, float]
    baseline: dict[str, float]
    regressed: list[str]
    thresholds: dict[str, float]

    def strength(self, metric: str) -> float:
        """How far past its threshold a metric is (1.0: exactly at it)."""
        change = _change(metric, self.live[metric], self.baseline[metric])
        return change / self.thresholds[metric]


def _change(metric: str, live: float, baseline: float) -> float:
    """Relative worsening (positive: worse) of a live figure against the baseline's."""
    sign = -1.0 if metric == "accuracy" else 1.0
    return sign * (live - baseline) / abs(baseline)


class PromotionWatch:
    """Sums over the first ``rows`` labelled events; ``baseline`` holds the old
    champion's mae/rmse or accuracy (the metrics missing from it are not compared)."""

    def __init__(self, task: str, baseline: dict[str, float], rows: int,
                 config: DetectorConfig = DetectorConfig()) -> None:
        if rows < 1:
            raise ValueError("rows must be at least 1")
        self.task = task
        self.rows = rows
        wanted = ("accuracy",) if task == "classification" else ("mae", "rmse")
        self.baseline = {m: float(baseline[m]) for m in wanted if baseline.get(m) not in (None, 0)}
        self.thresholds = {"mae": config.error_threshold, "rmse": config.rmse_threshold,
                           "accuracy": config.accuracy_threshold}
        self.seen = 0
        self.error_sum = 0.0
        self.squared_sum = 0.0

    @property
    def watching(self) -> bool:
        """False once decided, or when there is nothing to compare with."""
        return bool(self.baseline) and self.seen < self.rows

    def update_many(self, predictions: Any, actuals: Any) -> WatchVerdict | None:
        """Adds a batch of labelled events (a pair with a missing side is not counted);
        the verdict when this batch completes the watch."""
        if not self.watching:
            return None
        errors = prediction_errors(self.task, predictions, actuals)
        usable = ~np.isnan(errors)
        counted = np.cumsum(usable)
        needed = self.rows - self.seen
        done = counted.size > 0 and counted[-1] >= needed
        end = int(np.searchsorted(counted, needed)) + 1 if done else len(errors)  # events used
        used = errors[:end][usable[:end]]
        self.error_sum += float(used.sum())  # absolute errors, or mismatches
        self.squared_sum += float(used @ used)
        self.seen += len(used)
        return self._verdict(end - 1) if done else None

    def _verdict(self, index: int) -> WatchVerdict:
        n = self.seen
        if self.task == "classification":
            live = {"accuracy": 1.0 - self.error_sum / n}
        else:
            live = {"mae": self.error_sum / n, "rmse": float(np.sqrt(self.squared_sum / n))}
        live = {m: v for m, v in live.items() if m in self.baseline}
        regressed = [m for m in live if _change(m, live[m], self.baseline[m]) > self.thresholds[m]]
        return WatchVerdict(index, live, dict(self.baseline), regressed, {m: self.thresholds[m] for m in live})

    # -- state ---------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"task": self.task, "rows": self.rows, "baseline": self.baseline, "thresholds": self.thresholds,
                "seen": self.seen, "error_sum": self.error_sum, "squared_sum": self.squared_sum}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PromotionWatch:
        watch = cls(state["task"], state["baseline"], state["rows"])
        watch.thresholds = dict(state["thresholds"])
        watch.seen = int(state["seen"])
        watch.error_sum, watch.squared_sum = float(state["error_sum"]), float(state["squared_sum"])
        return watch


def regression_decision(verdict: WatchVerdict, offset: int, version: str) -> Decision:
    """The `promotion_regression` trigger of a watch whose verdict regressed; `offset`
    counts labelled events as ``Decision.offset`` does."""
    figures = ", ".join(
        f"{m} {verdict.live[m]:.4g} vs {verdict.baseline[m]:.4g} "
        f"({100 * _change(m, verdict.live[m], verdict.baseline[m]):+.1f} % worse, limit {100 * verdict.thresholds[m]:.0f} %)"
        for m in verdict.regressed)
    return Decision(
        triggered=True,
        offset=offset,
        trigger_types=[TRIGGER_TYPE],
        severity="HIGH",
        confidence=1.0,  # a rule on the design's thresholds, not a statistical test
        reason=f"promoted version {version} is worse on live traffic than the champion it replaced: {figures}",
        root_cause=[{"signal": f"promotion_{m}", "strength": verdict.strength(m)} for m in verdict.regressed],
        metrics={"promotion_watch": {"live": verdict.live, "champion": verdict.baseline}},
    )
