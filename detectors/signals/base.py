"""The contract of a feature signal of :class:`~detectors.monitor.ModelMonitor`.

A *signal* is a family of *tests*, usually one per column (``columns`` names them):
each has a statistic, a threshold, and a *strength*, the statistic over its threshold
(at least 1: past it). The monitor owns everything between signals: the n-of-m
persistence rule, gathering a decision for ``config.gather_events``, the cooldown, the
rollback of a batch to the event a decision fires at, the fusion into one
:class:`~detectors.fusion.Decision`, and saving. A signal owns its statistics.

Writing a new signal (missing values, stuck values, a multivariate statistic...):
subclass :class:`SequentialSignal` (a test checked at every event, like a CUSUM) or
:class:`WindowedSignal` (checked every ``stride`` events, like the KS window) in a new
module of this package and add the class to ``FEATURE_SIGNALS`` in its ``__init__``.
Give it a ``name``: its name in ``root_cause``, with its trigger type in
:data:`detectors.fusion.SIGNAL_TYPE`. Then:

1. ``__init__(context)``: call ``super().__init__(context)``; make the changing state
   from the reference (``context``: the profile, the config and what numeric signals
   share, see :class:`Context`). No thresholds yet.
2. ``calibrate(calibration)``: the thresholds, from the model's one
   :class:`~detectors.calibration.Calibration`: ``arl_test`` is each test's share of
   the one ``target_arl`` of the whole model (count the signal's tests in
   :func:`~detectors.calibration.count_tests`), and the dependence factors ``tau`` of
   every column say how serial dependence widens them (see
   :mod:`detectors.calibration`). Called again when the warm-up has learnt the
   dependence: a sequential signal's statistics restart there, a window keeps its
   values.
3. ``update(batch) -> Checks``: advance on a micro-batch (:class:`FeatureBatch`, every
   column at once, vectorised over the events: no per-event Python loop); return the
   strengths of the tests that may have passed their thresholds at each check, and
   the readings the snapshot shows (:class:`Checks`).
4. ``lam``: the ``lambda`` of a strength, the expected number of whole-model
   exceedances per ``target_arl`` horizon (1 at the threshold; the decision's
   confidence is ``exp(-lambda)``, see :func:`detectors.fusion.fuse`).
5. A sequential signal also gives ``report`` (a test's root cause when the decision
   fires: its strength read off the state then), ``restart`` and, if it has one, a
   ``severity_floor``.
6. ``snapshot(last)``: per column, the statistic and threshold (for the gauges), from
   the readings.
7. ``get_state()`` / ``set_state(state)``: everything that changes, as a dict of
   numpy arrays and plain values; ``set_state(get_state())`` continues exactly. The
   monitor saves it under the signal's ``name``; a state saved before the signal
   existed has none, and the signal starts fresh.

``tests/detectors/test_signal_contract.py`` registers a small complete signal and
checks that it fires, is saved and restored exactly, and that older states still
load. The monitor's own guarantees (decisions do not depend on how the stream is cut
into batches; a restored monitor continues exactly) are tested in ``tests/detectors``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..calibration import Calibration, cusum_lambda
from ..config import DetectorConfig
from ..errors import DetectorError
from ..grid import column_chunks
from ..ks_window import KSWindow
from ..profile import ReferenceProfile

SEQ_CHUNK = 5  # columns per pass of the sequential tests (arrays stay in L2 cache)


def per_column(value, c: int) -> np.ndarray:
    """``value`` (a scalar or one per column) as a new array of ``c`` floats."""
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (c,)).copy()


@dataclass(frozen=True)
class Context:
    """What the signals of one monitor share, built once per reference.

    ``window`` holds the last ``config.ks_window`` values of every numeric column as
    *slots* (:mod:`detectors.ranks`: a value's exact position in its reference), with
    the slot lookup; the KS signal advances it, other signals may read it (the recent
    normal scores, see :meth:`recent_scores`). ``score`` is the normal score of every
    slot, 0 for a missing value (no evidence)."""

    profile: ReferenceProfile
    config: DetectorConfig
    window: KSWindow
    score: np.ndarray

    @classmethod
    def build(cls, profile: ReferenceProfile, config: DetectorConfig) -> "Context":
        window = KSWindow(profile.samples, window=config.ks_window, stride=config.ks_stride)
        lk = window.lookup
        score = np.zeros(lk.n_slots)  # NaN and not-yet-filled codes score 0
        for j, t in enumerate(window.transforms):
            score[2 * lk.starts[j]:2 * lk.starts[j] + len(t.score)] = t.score
        return cls(profile, config, window, score)

    def recent_scores(self, j: int, m: int) -> np.ndarray:
        """The normal scores of column ``j``'s last ``m`` values (at most the window),
        newest first."""
        m = min(int(m), self.window.ring.shape[1])
        return self.score[self.window.ring[j, -m:]][::-1] if m > 0 else np.zeros(0)


def feature_arrays(profile: ReferenceProfile, numeric, categorical: dict | None
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A batch's numeric values as (events, numeric columns) floats and every
    categorical column's values (None where the batch lacks the column)."""
    ncol = len(profile.numeric_columns)
    x = np.asarray(numeric, dtype=np.float64)
    if x.ndim == 1:
        x = x.reshape(-1, ncol or 1)
    n = len(x)
    if x.shape[1] != ncol:
        if not (ncol == 0 and x.shape[1] == 1):
            raise DetectorError(f"expected {ncol} numeric columns, got {x.shape[1]}")
        x = np.zeros((n, 0))
    given = categorical or {}
    return x, {c: np.asarray(given[c], dtype=object) if c in given
               else np.full(n, None, dtype=object) for c in profile.categorical_columns}


def prediction_array(predictions, n: int) -> np.ndarray | None:
    """The model's ``n`` predictions as floats (None or not a number: NaN), or None."""
    if predictions is None:
        return None
    p = np.asarray(predictions).ravel()
    if len(p) != n:
        raise DetectorError("predictions must have one value per event")
    if p.dtype.kind in "fiub":
        return p.astype(np.float64, copy=False)
    return pd.to_numeric(pd.Series(p, dtype=object), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan)


class FeatureBatch:
    """A micro-batch of feature events: ``xt`` (numeric columns, n) floats with NaN for
    missing, their ``slots`` (the same shape), ``cats`` (categorical column -> n
    values), ``start`` (events seen before the batch), ``estimated_errors`` (n, the
    model's error estimated without labels, NaN where unknown; None: no estimate) and
    ``predictions`` (n, the model's, NaN where none; None: none)."""

    def __init__(self, context: Context, xt: np.ndarray, slots: np.ndarray,
                 cats: dict[str, np.ndarray], start: int,
                 estimated_errors: np.ndarray | None = None,
                 predictions: np.ndarray | None = None) -> None:
        self.context, self.xt, self.slots, self.cats, self.start = context, xt, slots, cats, start
        self.estimated_errors = estimated_errors
        self.predictions = predictions
        self.n = xt.shape[1]
        self._scores: dict[tuple[int, int], np.ndarray] = {}

    def chunks(self) -> list[slice]:
        """Groups of a few numeric columns: a signal that passes over them one group at
        a time keeps its arrays in cache."""
        return column_chunks(self.xt.shape[0], SEQ_CHUNK)

    def scores(self, cols: slice) -> np.ndarray:
        """Normal scores (columns ``cols``, n), computed once per batch (do not write)."""
        key = (cols.start, cols.stop)
        if key not in self._scores:
            self._scores[key] = np.take(self.context.score, self.slots[cols])
        return self._scores[key]


@dataclass
class Checks:
    """What a signal's tests did in a batch.

    ``at``: the batch indices of the checks (None: every event). ``tests``: the tests
    that may have passed their thresholds, ``strength`` (len(tests), checks) their
    strengths (tests left out stayed below 1). ``readings``: the latest statistics for
    the snapshot, merged into the monitor's saved ``last`` readings (keys unique to the
    signal). ``detail``: what the signal needs to explain a check (its ``lam``)."""

    at: np.ndarray | None
    tests: np.ndarray
    strength: np.ndarray
    readings: dict[str, Any] = field(default_factory=dict)
    detail: Any = None

    @classmethod
    def sparse(cls, paths: dict[int, np.ndarray], n: int, readings: dict[str, Any]) -> "Checks":
        """Checks at every event from a ``{test: strength path}`` of the candidates."""
        tests = np.array(sorted(paths), dtype=np.intp)
        strength = np.array([paths[j] for j in tests]) if len(tests) else np.zeros((0, n))
        return cls(None, tests, strength, readings)

    def flags(self, n_tests: int) -> np.ndarray:
        """Alarm flags (tests, checks): strength at least 1."""
        out = np.zeros((n_tests, self.strength.shape[1]), bool)
        out[self.tests] = self.strength >= 1
        return out


def merge_evidence(found: dict, key, strength: float, lam: float) -> None:
    """Keep the largest strength and the smallest ``lambda`` seen of ``key``."""
    st0, lam0 = found.get(key, (0.0, np.inf))
    found[key] = (max(strength, st0), min(lam, lam0))


class Signal:
    """Base of every feature signal (see the module docstring)."""

    name: ClassVar[str]
    sequential: ClassVar[bool]

    def __init__(self, context: Context) -> None:
        self.context = context
        self.config = context.config
        # the name of each test's column (a signal over other columns sets its own)
        self.columns: list[str] = list(context.profile.numeric_columns)

    def calibrate(self, calibration: Calibration) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, batch: FeatureBatch) -> Checks:  # pragma: no cover - abstract
        raise NotImplementedError

    def snapshot(self, last: dict[str, Any]) -> dict[str, dict[str, float]]:
        """Per column, its statistics and thresholds as plain floats; ``last`` is the
        monitor's latest readings (every signal's)."""
        return {}

    def per_column(self, **readings: Any) -> dict[str, dict[str, float]]:
        """The usual snapshot: per column, each reading (a number, or one per column).

        >>> signal = Signal.__new__(Signal); signal.columns = ["a", "b"]
        >>> signal.per_column(rate=np.array([0.5, 0.25]), threshold=2)
        {'a': {'rate': 0.5, 'threshold': 2.0}, 'b': {'rate': 0.25, 'threshold': 2.0}}
        """
        values = {key: per_column(value, len(self.columns)) for key, value in readings.items()}
        return {name: {key: float(v[j]) for key, v in values.items()} for j, name in enumerate(self.columns)}

    def model_snapshot(self) -> dict[str, float]:
        """The model-level statistics of a signal that is not per column (names unique
        to the signal), as plain floats."""
        return {}

    def get_state(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def set_state(self, state: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class SequentialSignal(Signal):
    """A test at every event that fires the moment its statistic crosses its threshold
    (a CUSUM). Its statistics restart after each feature decision (:meth:`restart`).
    When a decision fires, :meth:`report` gives each alarmed test's strength from the
    state at the firing event: the estimated effect over the design effect, at least 1
    (the statistic itself is just past its threshold when it fires, so its ratio to
    the threshold says nothing about the size of the change)."""

    sequential = True
    threshold: np.ndarray  # per test, in the units of the statistic over it

    def lam(self, test: int, strength: float) -> float:
        """``lambda`` of ``test`` at ``strength``."""
        h = self.threshold[test]
        return float(cusum_lambda(strength * h, h))

    def evidence(self, checks: Checks, flags: np.ndarray, first: int, last: int
                 ) -> dict[int, float]:
        """The tests alarmed (``flags``, after the persistence rule) in events
        ``first:last``, with the smallest ``lambda`` their statistics reached there."""
        return {t: self.lam(t, float(st[first:last].max()))
                for t, st in zip(checks.tests, checks.strength) if flags[t, first:last].any()}

    def report(self, test: int, lam_seen: float) -> dict[str, Any]:
        """The root cause of an alarmed ``test`` when a decision fires; ``lam_seen``
        is the smallest ``lambda`` its statistic reached while gathered."""
        raise NotImplementedError  # pragma: no cover - abstract

    def restart(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def severity_floor(self) -> str | None:
        """A least severity for the decision firing now (None: none)."""
        return None


class WindowedSignal(Signal):
    """A test evaluated every ``stride`` events on a window: its strength and
    ``lambda`` are fixed when it is checked."""

    sequential = False

    def lam(self, checks: Checks, test: int, check: int) -> float:  # pragma: no cover
        """``lambda`` of ``test``'s strength at ``check`` (an index into ``checks.at``)."""
        raise NotImplementedError

    def evidence(self, checks: Checks, flags: np.ndarray, first: int, last: int
                 ) -> dict[str, tuple[float, float]]:
        """The columns alarmed (``flags``, after the persistence rule) at the checks in
        events ``first:last``, with their largest strength and smallest ``lambda``."""
        found: dict[str, tuple[float, float]] = {}
        for r in np.flatnonzero((checks.at >= first) & (checks.at < last)):
            for t in np.flatnonzero(flags[:, r]):
                merge_evidence(found, self.columns[t], float(checks.strength[t, r]),
                               self.lam(checks, t, r))
        return found
