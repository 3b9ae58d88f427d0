"""The one streaming core: a per-model monitor over feature and labelled micro-batches.

The feature signals (:mod:`detectors.signals`, one module each on one contract) keep
their statistics; the monitor runs them on each micro-batch and fuses what they find.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _monitor_state, labelled
from .calibration import DEFAULT_CACHE, Calibration, CalibrationCache
from .config import DetectorConfig
from .errors import DetectorError
from .estimated_performance import IMPACT_MIN_EVENTS
from .fusion import Decision, fuse
from .persistence import n_of_m
from .profile import ReferenceProfile
from .severity import ORDER
from .signals import (FEATURE_SIGNALS, Checks, Context, FeatureBatch, feature_arrays,
                      prediction_array)
from .signals.base import merge_evidence
from .warmup import Warmup


def _rows(cats: dict[str, np.ndarray], start: int, stop: int | None) -> dict[str, np.ndarray]:
    """Events ``start:stop`` of every categorical column."""
    return {c: v[start:stop] for c, v in cats.items()}


def _cut(pred: np.ndarray | None, start: int, stop: int | None) -> np.ndarray | None:
    return None if pred is None else pred[start:stop]


def _causes(report) -> list[dict[str, Any]]:
    """A sequential test's root causes (a multivariate test names several columns)."""
    return report if isinstance(report, list) else [report]


class ModelMonitor(_monitor_state.Saving):
    """Streaming drift monitor of one model.

    Feed feature micro-batches to :meth:`update_features` and labelled ones to
    :meth:`update_labelled`; each returns the decisions that fired inside the batch
    (at most one per ``config.cooldown`` events, none before ``config.min_samples``).
    With ``persistence_n``/``persistence_m`` a signal counts only when alarmed in n of
    its last m checks (see :mod:`detectors.persistence`). A feature decision fires
    ``config.gather_events`` after its first signal (a model with a performance
    estimate: at least ``IMPACT_MIN_EVENTS``, so that the expected impact is estimated
    on events after it) and names every signal past its
    threshold meanwhile, with its strength (for severity): how far past its threshold
    it is, or for a sequential test its estimated effect over the design effect
    (:class:`~detectors.signals.base.SequentialSignal`). Saving and restoring:
    :class:`~detectors._monitor_state.Saving`.

    Examples
    --------
    >>> import pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> ref = pd.DataFrame(rng.normal(size=(5000, 3)), columns=["a", "b", "c"])
    >>> mon = ModelMonitor(ReferenceProfile.from_frame(ref))
    >>> x = rng.normal(size=(4000, 3)); x[2000:, 1] += 1.0
    >>> [(d.offset, d.columns, d.severity) for d in mon.update_features(x)]
    [(2051, ['b'], 'HIGH'), (3062, ['b'], 'HIGH')]
    """

    def __init__(self, profile: ReferenceProfile, config: DetectorConfig = DetectorConfig(),
                 task: str = "regression", *, cache: CalibrationCache = DEFAULT_CACHE,
                 calibration: Calibration | None = None) -> None:
        if task not in ("regression", "classification"):
            raise DetectorError("task must be 'regression' or 'classification'")
        self.profile, self.config, self.task, self._cache = profile, config, task, cache
        self._build(calibration)

    # -- construction -------------------------------------------------------------
    def _build(self, calibration: Calibration | None) -> None:
        p, cfg = self.profile, self.config
        self.context = Context.build(p, cfg)
        cal = calibration or self._cache.get(p, cfg, self.context.window.transforms)
        self.signals = {kind.name: kind(self.context) for kind in FEATURE_SIGNALS}
        self._sequential = [s for s in self.signals.values() if s.sequential]
        self._windowed = [name for name, s in self.signals.items() if not s.sequential]
        ends = np.cumsum([len(s.columns) for s in self._sequential], dtype=int)
        self._seq_rows = [slice(b - len(s.columns), b) for s, b in zip(self._sequential, ends)]
        self._apply(cal)
        self.labelled = labelled.calibrated(self.task, p, cfg, cal)
        self.events_seen = self.labelled_seen = 0
        # warm-up (a shuffled or short reference): no feature decision before its end
        self.warmup = Warmup(cfg.dependence_warmup if cal.dependence_source == "pending"
                             else 0, len(p.samples), len(p.categorical_columns),
                             self.context.window.ring.dtype)
        self._next_feature_fire = max(cfg.min_samples - 1, self.warmup.until)
        self._next_label_fire = cfg.min_samples - 1
        # a feature decision being gathered: the event it fires at (-1: none), the
        # sequential tests' (signal index, test) -> smallest lambda (see fusion.fuse)
        # and the windows' (signal, column) -> (largest strength, smallest lambda)
        self._gather_until = -1
        # A model with a performance estimate gathers long enough for the expected impact
        # to be estimated on events after the first alarm: right after a change, the
        # estimate over the last IMPACT_MIN_EVENTS is mostly of pre-change events and
        # would call harmful drift harmless.
        estimated = self.signals["estimated_performance"].test is not None
        self._gather_events = max(cfg.gather_events, IMPACT_MIN_EVENTS) if estimated else cfg.gather_events
        self._gather_seq: dict[tuple[int, int], float] = {}
        self._gather_other: dict[tuple[str, str], tuple[float, float]] = {}
        self._label_signals: list[dict[str, Any]] = []  # of the labelled alarm firing
        self._last: dict[str, Any] = {}  # the signals' latest readings, for the snapshot
        m1 = cfg.persistence_m - 1  # n-of-m histories: last m - 1 flags per test
        rows = {"seq": int(ends[-1]) if len(ends) else 0, "lab": 4, "trend": 1,
                **{s: len(self.signals[s].columns) for s in self._windowed}}
        self._hist = {k: np.zeros((rows[k], m1), bool)
                      for k in ("seq", *self._windowed, "lab", "trend")}

    def _apply(self, cal: Calibration) -> None:
        """Set the calibration's thresholds on the signals (sequential ones restart)."""
        self.calibration = cal
        for sig in self.signals.values():
            sig.calibrate(cal)

    @property
    def estimate(self):
        """The test of the performance estimated without labels, or None (see
        :class:`~detectors.signals.estimated_performance.EstimatedPerformanceSignal`)."""
        return self.signals["estimated_performance"].test_for(self.task)

    def estimated_errors(self, numeric: np.ndarray, predictions=None, scores=None
                         ) -> np.ndarray | None:
        """Each event's estimated error from the model's outputs, or None without an
        estimator (:meth:`.EstimatedPerformanceSignal.estimated_errors`)."""
        return self.signals["estimated_performance"].estimated_errors(self.task, numeric,
                                                                      predictions, scores)

    @property
    def dependence(self) -> dict[str, Any]:
        """The serial dependence calibrated to (:meth:`.Calibration.dependence`)."""
        p = self.profile
        return self.calibration.dependence(p.numeric_columns, p.categorical_columns,
                                           self.labelled.tau_e)

    # -- features -----------------------------------------------------------------
    def update_features(self, numeric: np.ndarray,
                        categorical: dict[str, np.ndarray] | None = None,
                        predictions=None, scores=None, *,
                        estimated_errors: np.ndarray | None = None) -> list[Decision]:
        """Process a micro-batch of feature events; return decisions fired in it.

        ``numeric`` is (n, len(profile.numeric_columns)) float with NaN for missing;
        ``categorical`` maps each categorical column to an array of n values.
        ``predictions`` and ``scores`` (n each, optional) are the model's outputs for
        the same events: the estimated performance and the prediction drift use them (see
        :meth:`estimated_errors`, which gives ``estimated_errors`` directly).
        """
        x, cats = feature_arrays(self.profile, numeric, categorical)
        n = len(x)
        losses = estimated_errors if estimated_errors is not None \
            else self.estimated_errors(x, predictions, scores)
        pred = prediction_array(predictions, n)
        xt = np.ascontiguousarray(x.T)  # (columns, events): time runs along rows
        if self.warmup.until > self.events_seen:
            k = self.warmup.until - self.events_seen
            if n > k:  # the calibration changes at the warm-up's end: split there
                cut = (None, None) if losses is None else (losses[:k], losses[k:])
                first = self.update_features(x[:k], _rows(cats, 0, k), _cut(pred, 0, k),
                                             estimated_errors=cut[0])
                return first + self.update_features(x[k:], _rows(cats, k, None),
                                                    _cut(pred, k, None),
                                                    estimated_errors=cut[1])
            self.warmup.keep(self.context.window.slots(xt),
                             self.signals["categorical"].codes(cats, n))
        decisions = self._replay(n, lambda a, b: self._feature_step(
                                     xt[:, a:b], _rows(cats, a, b),
                                     None if losses is None else losses[a:b], _cut(pred, a, b)),
                                 self._fire_features, list(self.signals.values()), "events_seen",
                                 ("seq", *self._windowed))
        if self.warmup.until and self.events_seen >= self.warmup.until \
                and self.calibration.dependence_source == "pending":
            self._apply(self.warmup.calibration(self.context, self.calibration))
            self._hist["seq"][:] = False
        return decisions

    def _replay(self, n: int, step, fire, parts: list, counter: str, hist: tuple
                ) -> list[Decision]:
        """Run ``step(start, stop)`` on a batch's events from ``start``; when it returns
        the index of a decision's firing event in them, roll back ``parts``, the
        ``counter`` attribute and the histories ``hist``, redo the step exactly up to
        that event, ``fire()`` and go on after it: decisions, and the state at each, do
        not depend on how the stream is cut into batches. None, or an index past the
        batch (a decision still gathering), ends the batch."""
        decisions, start = [], 0
        while start < n:
            saved = ([p.get_state() for p in parts], getattr(self, counter),
                     {k: self._hist[k].copy() for k in hist})
            i = step(start, n)
            if i is None or i > n - start - 1:
                break
            if i < n - start - 1:
                for part, state in zip(parts, saved[0]):
                    part.set_state(state)
                setattr(self, counter, saved[1])
                self._hist.update(saved[2])
                step(start, start + i + 1)
            decisions.append(fire())
            start += i + 1
        return decisions

    def _fire_features(self) -> Decision:
        """The decision gathered, with the state at its firing event; the sequential
        tests restart."""
        signals = [cause for (k, j), lam in sorted(self._gather_seq.items())
                   for cause in _causes(self._sequential[k].report(j, lam))] + [
            {"signal": sig, "column": col, "strength": st, "lambda": lam}
            for (sig, col), (st, lam) in self._gather_other.items()]
        self._gather_until, self._gather_seq, self._gather_other = -1, {}, {}
        offset = self.events_seen - 1
        floors = [f for s in self._sequential if (f := s.severity_floor()) is not None]
        decision = fuse(signals, offset, self.config, self.snapshot(),
                        floor=max(floors, key=ORDER.index, default=None),
                        expected_impact=self.signals["estimated_performance"].expected_impact())
        self._next_feature_fire = offset + self.config.cooldown + 1
        for sig in self._sequential:
            sig.restart()
        self._hist["seq"][:] = False
        return decision

    def _feature_step(self, xt: np.ndarray, cats: dict[str, np.ndarray],
                      losses: np.ndarray | None = None,
                      pred: np.ndarray | None = None) -> int | None:
        """Advance every signal on ``xt`` (columns, n). Return None when no decision is
        under way, else the index of the event it fires at (``gather_events`` after the
        first eligible alarm; possibly past the batch), and gather the tests alarmed from
        that alarm (or the batch start) to it (a redo finds the same)."""
        n = xt.shape[1]
        batch = FeatureBatch(self.context, xt, self.context.window.slots(xt), cats,
                             self.events_seen, losses, pred)
        checks = {}
        for name, sig in self.signals.items():
            checks[name] = found = sig.update(batch)
            self._last.update(found.readings)
        self.events_seen += n
        flags = self._persistent_flags(checks, n)
        span = self._decision_span(batch.start, n, checks, flags)
        if span is None:
            return None
        first, i = span
        last = min(i, n - 1) + 1  # tests past their thresholds in [first, i]
        for k, (sig, rows) in enumerate(zip(self._sequential, self._seq_rows)):
            for t, lam in sig.evidence(checks[sig.name], flags["seq"][rows], first,
                                       last).items():
                self._gather_seq[k, t] = min(lam, self._gather_seq.get((k, t), np.inf))
        for name in self._windowed:
            for col, (st, lam) in self.signals[name].evidence(checks[name], flags[name],
                                                              first, last).items():
                merge_evidence(self._gather_other, (name, col), st, lam)
        if i > n - 1:  # still gathering at the end of the batch
            self._gather_until = batch.start + i
        return i

    def _persistent_flags(self, checks: dict[str, Checks], n: int) -> dict[str, np.ndarray]:
        """Alarm flags (tests, checks) after the n-of-m rule: ``"seq"`` of every
        sequential signal's tests (checked at every event), and each window's."""
        flags = {"seq": np.zeros((len(self._hist["seq"]), n), bool),
                 **{name: checks[name].flags(len(self.signals[name].columns))
                    for name in self._windowed}}
        for sig, rows in zip(self._sequential, self._seq_rows):
            flags["seq"][rows][checks[sig.name].tests] = checks[sig.name].strength >= 1
        if self.config.persistence_m > 1:
            for key in flags:
                flags[key], self._hist[key] = n_of_m(flags[key], self._hist[key],
                                                     self.config.persistence_n)
        return flags

    def _decision_span(self, start: int, n: int, checks: dict[str, Checks],
                       flags: dict[str, np.ndarray]) -> tuple[int, int] | None:
        """``(first, fire)``: the batch's events from which signals join the decision and
        the one it fires at; None when no decision is under way."""
        if self._gather_until >= 0:  # a decision gathered since an earlier batch
            return 0, self._gather_until - start
        alarm = flags["seq"].any(axis=0) if any(len(checks[s.name].tests)
                                                for s in self._sequential) else np.zeros(n, bool)
        for name in self._windowed:
            alarm[checks[name].at] |= flags[name].any(axis=0)
        alarm[:max(self._next_feature_fire - start, 0)] = False  # cooldown, min_samples
        if not alarm.any():
            return None
        first = int(np.argmax(alarm))
        return first, first + self._gather_events

    # -- labelled -----------------------------------------------------------------
    def update_labelled(self, predictions: np.ndarray, actuals: np.ndarray) -> list[Decision]:
        """Process labelled events; ``offset`` counts labelled events."""
        pred = np.asarray(predictions, dtype=np.float64).ravel()
        act = np.asarray(actuals, dtype=np.float64).ravel()
        if pred.shape != act.shape:
            raise DetectorError("predictions and actuals must have the same length")
        return self._replay(len(pred), lambda a, b: self._label_step(pred[a:b], act[a:b]),
                            self._fire_labelled, [self.labelled], "labelled_seen",
                            ("lab", "trend"))

    def _label_step(self, pred: np.ndarray, act: np.ndarray) -> int | None:
        """Advance the labelled signals; the index of the first eligible alarm or None."""
        res = self.labelled.update_pairs(pred, act)
        i, self._label_signals = labelled.first_alarm(res, self._hist, self.config,
                                                      self.labelled_seen, self._next_label_fire)
        self._last["labelled"] = labelled.readings(res)
        self.labelled_seen += len(pred)
        return i

    def _fire_labelled(self) -> Decision:
        offset = self.labelled_seen - 1
        decision = fuse(self._label_signals, offset, self.config, self.snapshot())
        self._next_label_fire = offset + self.config.cooldown + 1
        self.labelled.reset_cusum()
        self.labelled.reset_trend()
        self._hist["lab"][:] = self._hist["trend"][:] = False
        return decision

    # -- reporting ------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Current statistics and thresholds as plain floats (for Prometheus): per
        column every signal's, ``missing`` (in the KS window) and the dependence
        (:attr:`dependence`: ``dependence_factor``, numeric ``lag1_autocorrelation``);
        the labelled metrics, ``error_dependence_factor`` (NaN until known) and
        ``dependence_pending`` (1.0 while the warm-up learns the dependence)."""
        last, dep = self._last, self.dependence
        cols: dict[str, dict[str, float]] = {}
        # the windows' readings first (the order of the snapshot's keys before signals)
        for sig in sorted(self.signals.values(), key=lambda s: s.sequential):
            for name, readings in sig.snapshot(last).items():
                cols.setdefault(name, {}).update(readings)
        missing = last.get("missing", np.zeros(len(self.profile.numeric_columns)))
        for j, name in enumerate(self.profile.numeric_columns):
            d = dep["columns"][name]
            cols[name].update(missing=float(missing[j]), dependence_factor=d["factor"],
                              lag1_autocorrelation=d["lag1"])
        for name in self.profile.categorical_columns:
            cols[name]["dependence_factor"] = dep["columns"][name]["factor"]
        return {"events_seen": float(self.events_seen),
                "labelled_seen": float(self.labelled_seen), "columns": cols,
                **labelled.snapshot(last.get("labelled", {}), self.labelled.baseline,
                                    self.calibration.trend_z),
                "error_dependence_factor": dep["errors"],
                "dependence_pending": float(dep["source"] == "pending"),
                **{k: v for sig in self.signals.values() for k, v in sig.model_snapshot().items()}}

    def rebaseline(self, profile: ReferenceProfile) -> None:
        """Swap in a new reference profile and baseline; all windows restart."""
        self.profile = profile
        self._build(None)
