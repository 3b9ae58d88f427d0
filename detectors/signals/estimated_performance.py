"""``estimated_performance``: the model's performance estimated without labels (CBPE or
DLE), tested sequentially (:class:`~detectors.estimated_performance.EstimatedPerformance`).

One test per model, none when the reference profile has no estimator. It reads the
batch's estimated errors (``FeatureBatch.estimated_errors``: from the events' predictions
and scores, see :meth:`detectors.monitor.ModelMonitor.estimated_errors`). Unlike the
drift tests it restarts only after a decision it is part of: a drift decision says
nothing about the model's performance, which keeps accumulating its own evidence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..calibration import Calibration
from ..errors import DetectorError
from ..estimated_performance import EstimatedPerformance
from ..performance_estimate import scores_to_q
from .base import Checks, Context, FeatureBatch, SequentialSignal


class EstimatedPerformanceSignal(SequentialSignal):
    name = "estimated_performance"

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        # one test per model, none without an estimator
        self.columns = [self.name] if context.profile.estimator is not None else []
        self.test: EstimatedPerformance | None = None
        self._fired = False

    def calibrate(self, calibration: Calibration) -> None:
        p = self.context.profile
        if p.estimator is not None:
            self.test = EstimatedPerformance(p.estimator, p.numeric_columns, self.config,
                                             calibration.arl_test)

    @property
    def threshold(self) -> np.ndarray:
        return np.array([self.test.threshold]) if self.test else np.zeros(0)

    def update(self, batch: FeatureBatch) -> Checks:
        if self.test is None:
            return Checks.sparse({}, batch.n, {})
        losses = batch.estimated_errors
        strength, lam = self.test.update(np.full(batch.n, np.nan) if losses is None else losses)
        checks = Checks.sparse({0: strength} if (strength >= 1).any() else {}, batch.n, {})
        checks.detail = lam
        return checks

    def evidence(self, checks: Checks, flags: np.ndarray, first: int, last: int
                 ) -> dict[int, float]:
        on = flags[0, first:last] if len(flags) else np.zeros(0, bool)
        return {0: float(checks.detail[first:last][on].min())} if on.any() else {}

    def report(self, test: int, lam_seen: float) -> dict[str, Any]:
        self._fired = True
        impact = self.test.expected_impact()
        strength = max(1.0, float(impact["strength"])) if impact else 1.0
        return {"signal": self.name, "column": None, "strength": strength, "lambda": lam_seen}

    def test_for(self, task: str) -> EstimatedPerformance | None:
        """The test, when the profile's estimator is for ``task`` (CBPE: classification,
        DLE: regression), else None."""
        test = self.test
        if test is None or (test.estimator.kind == "cbpe") != (task == "classification"):
            return None
        return test

    def estimated_errors(self, task: str, numeric: np.ndarray, predictions=None, scores=None
                         ) -> np.ndarray | None:
        """Each event's estimated error (see :mod:`detectors.performance_estimate`), or
        None when the model has no estimator for ``task``. ``scores``: per event, the
        positive class's probability (a binary model) or a mapping class -> probability."""
        test = self.test_for(task)
        if test is None:
            return None
        est, n = test.estimator, len(numeric)
        if predictions is not None and len(predictions) != n or \
                scores is not None and len(scores) != n:
            raise DetectorError("predictions and scores must have one value per event")
        q = None
        if est.kind == "cbpe" and scores is not None and predictions is not None:
            q = scores_to_q(scores, np.asarray(predictions), est.positive)
        return est.losses(numeric, predictions, q)

    def expected_impact(self) -> dict[str, Any] | None:
        """The estimate since the change the decision being fired found (None: the
        model has no estimator)."""
        if self.test is None:
            return None
        return self.test.expected_impact(None if self._fired else np.inf)

    def restart(self) -> None:
        if self._fired and self.test is not None:
            self.test.restart()
        self._fired = False

    def model_snapshot(self) -> dict[str, float]:
        return self.test.snapshot() if self.test else {}

    def get_state(self) -> dict[str, Any]:
        return self.test.get_state() if self.test else {}

    def set_state(self, state: dict[str, Any]) -> None:
        if self.test is not None and state:
            self.test.set_state(state)
