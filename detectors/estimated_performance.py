"""``estimated_performance``: a sequential test of the model's performance estimated
without labels (CBPE or DLE, see :mod:`detectors.performance_estimate`).

Each event's estimated error ``l`` goes through the normal-score transform of the
reference's estimated errors (:mod:`detectors.ranks`: distribution-free, as the error
CUSUM), and a one-sided upward CUSUM in log-likelihood-ratio form with the exact
reference cumulant tests it for a rise of ``config.concept_shift`` standard deviations,
calibrated like every other test of the model: its increments divided by the long-run
variance factor ``tau`` of the reference's estimated-error series, the threshold of
:func:`~detectors.calibration.dependent_threshold` for the model's per-test run length
(``target_arl`` times the model's test count, which counts this one), and the in-control
drift raised by ``reference_margin`` standard errors of the dependence's excess. When
``tau`` is unknown (a shuffled or short reference) it is learnt from the stream's first
``dependence_warmup`` estimated errors, during which the test does not fire.

The test fires only when the estimated metric since its change-point estimate (the
events since the CUSUM last stood at zero) is worse than the reference's estimate by
more than the design's floor: an accuracy drop over ``accuracy_threshold`` (5 %) for
CBPE, an MAE rise over ``rmse_threshold`` (10 %) for DLE (the estimate is of the
absolute error: for errors of one shape, MAE and RMSE rise by the same ratio). Its
strength stands for the labelled signals the estimate predicts, as theirs would: the
larger of that change over its floor and the estimated error's (error rate's, MAE's)
relative rise over the concept floor ``error_threshold`` (15 %). A classifier at 0.81
losing 8 points has an accuracy drop of 9.6 % (1.9 floors) and an error rate up 42 %
(2.8 floors): strength 2.8. An event without what the estimator
needs (no scores) carries no evidence (score 0, as a missing feature).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .calibration import cusum_lambda, dependent_threshold
from .cusum import lindley
from .dependence import long_run_factor
from .performance_estimate import PerformanceEstimator, floor_of, harm_and_strength, impact
from .ranks import RankTransform


IMPACT_MIN_EVENTS = 100  # the expected impact is an estimate over at least this many events


class EstimatedPerformance:
    """The test of one model's estimated error (see the module docstring).

    >>> import numpy as np
    >>> from detectors.config import DetectorConfig
    >>> rng = np.random.default_rng(0)
    >>> ref = 1 - rng.uniform(0.6, 1.0, 5000)  # estimated errors 1 - q
    >>> rec = {"kind": "cbpe", "metric": "accuracy", "losses": np.sort(ref), "tau": 1.0,
    ...        "reference_estimate": 1 - ref.mean(), "reference_realized": 0.8,
    ...        "calibration": {"recalibrated": False, "knots": np.zeros(0),
    ...                        "values": np.zeros(0), "hl_statistic": 0.0,
    ...                        "hl_pvalue": 1.0, "ece": 0.0}}
    >>> sig = EstimatedPerformance(rec, [], DetectorConfig(), arl=1e8)
    >>> q = np.r_[rng.uniform(0.6, 1.0, 3000), rng.uniform(0.5, 0.85, 2000)]
    >>> strength, lam = sig.update(1 - q)
    >>> int(np.argmax(strength >= 1))  # the change at 3000
    3035
    """

    name = "estimated_performance"

    def __init__(self, record: dict[str, Any], numeric_columns, config, arl: float) -> None:
        self.estimator = PerformanceEstimator(record, numeric_columns)
        self.config, self.arl = config, float(arl)
        self.floor = floor_of(self.estimator.metric, config)
        self.delta = float(config.concept_shift)
        self._rt = RankTransform(np.asarray(record["losses"], np.float64))
        self._ring_size = max(config.performance_window, config.ks_window)
        tau = float(record["tau"])
        self.tau = tau if np.isfinite(tau) else float("nan")
        self._reset()
        self._prepare()

    def _reset(self) -> None:
        self.restart()
        self.ring = np.full(self._ring_size, np.nan)  # newest last
        self.warm = np.zeros(0)  # estimated errors kept to learn tau
        self.seen = 0

    def restart(self) -> None:
        """Restart the CUSUM (after a decision): its statistic and the run since it
        last stood at zero (Page's change-point estimate)."""
        self.s = 0.0
        self.run_len = 0
        self.run_sum = 0.0
        self.run_count = 0

    def _prepare(self) -> None:
        tau = self.tau if np.isfinite(self.tau) else 1.0
        m = self._rt.m
        self._psi = self._rt.cgf(self.delta) + self.config.reference_margin * self.delta \
            * np.sqrt(max(tau - 1.0, 0.0) / m)
        self.threshold = float(dependent_threshold(self.arl, self.delta, tau))

    @property
    def ready(self) -> bool:
        return bool(np.isfinite(self.tau))

    def update(self, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance on the estimated errors of a micro-batch; return each event's
        strength (>= 1: the test fires) and ``lambda``."""
        losses = np.asarray(losses, dtype=np.float64)
        n = len(losses)
        self.ring = np.concatenate([self.ring, losses])[-self._ring_size:]
        strength, lam = np.zeros(n), np.full(n, np.inf)
        skip = 0 if self.ready else self._learn_tau(losses)
        self.seen += n
        if skip >= n:
            return strength, lam
        e = losses[skip:]
        finite = np.isfinite(e)
        z = np.where(finite, self._rt.score[self._rt.slots(np.where(finite, e, 0.0))], 0.0)
        tau = self.tau
        path = lindley(((self.delta * z - self._psi) / tau)[:, None], np.array([self.s]))[:, 0]
        self.s = float(path[-1])
        harm, st = self._run_harm(path, np.where(finite, e, 0.0), finite)
        strength[skip:] = np.where((path > self.threshold) & (harm > self.floor),
                                   np.maximum(st, 1.0), 0.0)
        lam[skip:] = cusum_lambda(path, self.threshold)
        return strength, lam

    def _learn_tau(self, losses: np.ndarray) -> int:
        take = min(self.config.dependence_warmup - len(self.warm), len(losses))
        self.warm = np.concatenate([self.warm, losses[:take]])
        if len(self.warm) >= self.config.dependence_warmup:
            w = self.warm[np.isfinite(self.warm)]
            self.tau = float(max(long_run_factor(w)[0], 1.0)) if len(w) > 50 else 1.0
            self.warm = np.zeros(0)
            self._prepare()
        return take

    def _run_harm(self, path: np.ndarray, e: np.ndarray, finite: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """The estimate's relative harm and strength since the CUSUM last stood at
        zero, per event (the run carries over batches)."""
        idx = np.arange(len(e))
        last0 = np.maximum.accumulate(np.where(path == 0, idx, -1))
        ce, cf = np.cumsum(e), np.cumsum(finite)
        base = np.maximum(last0, 0)
        run_sum = np.where(last0 >= 0, ce - ce[base], self.run_sum + ce)
        run_cnt = np.where(last0 >= 0, cf - cf[base], self.run_count + cf)
        run_len = np.where(last0 >= 0, idx - last0, self.run_len + idx + 1)
        self.run_len, self.run_sum, self.run_count = int(run_len[-1]), float(run_sum[-1]), \
            int(run_cnt[-1])
        mean = run_sum / np.maximum(run_cnt, 1)
        harm, strength = harm_and_strength(self.estimator, mean, self.config)
        some = run_cnt > 0
        return np.where(some, harm, 0.0), np.where(some, strength, 0.0)

    def expected_impact(self, events: int | None = None) -> dict[str, Any] | None:
        """The estimate since the change: over the last ``k`` events, ``k`` the
        maximum-likelihood change point (Hinkley's, two-sided: it favours neither
        direction) among the last ``events`` (default: since the test last stood at
        zero; at least :data:`IMPACT_MIN_EVENTS`, at most the ring: a drift decision
        searches the whole ring). Returns the
        metric, reference value, estimate, change (estimate - reference: for accuracy
        > 0 is better, for MAE > 0 is worse), ``harmful`` (worse than the reference by
        more than the floor) and ``strength``; None before any event with an
        estimate."""
        events = self.run_len if events is None else events
        lo = IMPACT_MIN_EVENTS
        m = int(min(max(events, lo), self._ring_size))
        window = self.ring[-m:]
        window = window[np.isfinite(window)][::-1]  # newest first
        if len(window) > lo:
            z = self._rt.score[self._rt.slots(window)]
            llr = np.cumsum(z) ** 2 / np.arange(1.0, len(z) + 1)
            llr[:lo - 1] = -1.0
            window = window[:int(np.argmax(llr)) + 1]
        if not len(window):
            return None
        return impact(self.estimator, float(window.mean()), len(window), self.config)

    def report(self, strength: float, lam: float) -> dict[str, Any]:
        """The root cause of a firing test."""
        return {"signal": self.name, "column": None, "strength": float(strength),
                "lambda": float(lam)}

    def snapshot(self) -> dict[str, float]:
        """The estimate over the last ``performance_window`` events, the reference's
        estimated and realized values, the statistic and threshold."""
        w = self.ring[-self.config.performance_window:]
        w = w[np.isfinite(w)]
        est = self.estimator
        key = f"estimated_{est.metric}"
        return {key: est.metric_of(float(w.mean())) if len(w) else float("nan"),
                f"reference_estimated_{est.metric}": est.reference_estimate,
                f"reference_realized_{est.metric}": est.reference_realized,
                "estimated_performance_statistic": self.s,
                "estimated_performance_threshold": self.threshold,
                "estimate_recalibrated": float(bool(
                    est.calibration is not None and est.calibration.recalibrated))}

    _state_fields = ("s", "run_len", "run_sum", "run_count", "ring", "warm", "seen", "tau")

    def get_state(self) -> dict[str, Any]:
        return {k: (v.copy() if isinstance(v, np.ndarray) else v)
                for k, v in ((k, getattr(self, k)) for k in self._state_fields)}

    def set_state(self, state: dict[str, Any]) -> None:
        for k in self._state_fields:
            v = state[k]
            setattr(self, k, v.copy() if isinstance(v, np.ndarray) else v)
        self._prepare()
