"""The one streaming core: a per-model monitor over feature and labelled micro-batches."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from . import _monitor_state
from . import dependence as dep
from .calibration import (DEFAULT_CACHE, Calibration, CalibrationCache, calibrate,
                          cusum_lambda, ks_critical, ks_lambda)
from .categorical import CategoricalWindow
from .config import DetectorConfig
from .cusum import BLOCK, CUSUM, block_extremes, monotone_extremes
from .errors import DetectorError
from .estimated_performance import EstimatedPerformance
from .fusion import Decision, fuse
from .grid import column_chunks
from .ks_window import KSWindow
from .labelled import LabelledSignals
from .outliers import OutlierRate
from .performance_estimate import scores_to_q
from .persistence import n_of_m
from .profile import ReferenceProfile

from scipy.stats import chi2

_LABEL_SIGNALS = ("mae", "r2", "rmse", "accuracy", "trend")
_SEQ_KINDS = ("mean_shift", "variance", "outlier_rate")
FINE_BLOCK = 8  # events per block of the large-shift CUSUMs' bound (see cusum.affine_scan)
SEQ_CHUNK = 5  # columns per pass of the sequential tests (arrays stay in L2 cache)


def _rows(cats: dict[str, np.ndarray], start: int, stop: int | None) -> dict[str, np.ndarray]:
    """Events ``start:stop`` of every categorical column."""
    return {c: v[start:stop] for c, v in cats.items()}


def _merge_signal(signals: dict, key, strength: float, lam: float) -> None:
    """Keep the largest strength and the smallest ``lambda`` seen of signal ``key``."""
    st0, lam0 = signals.get(key, (0.0, np.inf))
    signals[key] = (max(strength, st0), min(lam, lam0))


def _flagged(idx: np.ndarray, flags: np.ndarray, first: int, last: int):
    """(checkpoint, column) of the ``flags`` (column, checkpoint) raised at the
    checkpoints ``idx`` in events ``first:last``."""
    for r in np.flatnonzero((idx >= first) & (idx < last)):
        for j in np.flatnonzero(flags[:, r]):
            yield r, j


class ModelMonitor:
    """Streaming drift monitor of one model.

    Feed feature micro-batches to :meth:`update_features` and labelled ones to
    :meth:`update_labelled`; each returns the decisions that fired inside the batch
    (at most one per ``config.cooldown`` events, none before ``config.min_samples``).
    With ``persistence_n``/``persistence_m`` a signal counts only when alarmed in n of
    its last m checks (see :mod:`detectors.persistence`). A feature decision fires
    ``config.gather_events`` after its first signal and names every signal past its
    threshold meanwhile.

    A signal's strength (for severity) is how far past its threshold it is: for the
    KS and chi-square windows the statistic over its critical value; for the sequential
    tests, which fire the moment their statistic crosses the threshold, the estimated
    effect since the test's change-point estimate over the design effect (see
    :meth:`effect_sizes`), at least 1.

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
        self.profile, self.config, self.task = profile, config, task
        self._cache = cache
        self._build(calibration)

    # -- construction -------------------------------------------------------------
    def _build(self, calibration: Calibration | None) -> None:
        p, cfg = self.profile, self.config
        self.ks = KSWindow(p.samples, window=cfg.ks_window, stride=cfg.ks_stride)
        cal = calibration or self._cache.get(p, cfg, self.ks.transforms)
        lk = self.ks.lookup
        # normal score of every global slot; NaN and not-yet-filled codes score 0:
        # missing values carry no evidence
        self._score = np.zeros(lk.n_slots)
        for j, t in enumerate(self.ks.transforms):
            self._score[2 * lk.starts[j]:2 * lk.starts[j] + len(t.score)] = t.score
        self.cats = {name: CategoricalWindow(p.categories[name], cfg.categorical_window,
                                             cfg.categorical_stride)
                     for name in p.categorical_columns}
        self._apply(cal)
        self.labelled = LabelledSignals(
            self.task, cfg.performance_window, cfg.concept_window,
            cfg.concept_baseline_size, p.baseline,
            p.errors if p.task == self.task else None, cal.concept_scale, cal.concept_h,
            cal.perf_z, {"error": cfg.error_threshold, "r2": cfg.r2_threshold,
                         "rmse": cfg.rmse_threshold, "accuracy": cfg.accuracy_threshold,
                         "min_samples": cfg.min_samples},
            cfg.trend_windows, cal.trend_z,
            tau=float(cal.err_tau) if p.task == self.task else float("nan"),
            arl=cal.arl_test if cal.dependence_source != "none" else None,
            margin=cfg.reference_margin if cal.dependence_source != "none" else 0.0,
            warmup=cfg.dependence_warmup)
        # the performance estimated without labels (CBPE or DLE), when the profile
        # has an estimator for this task
        est = p.estimator if p.estimator is not None and p.task == self.task else None
        self.estimate = EstimatedPerformance(est, p.numeric_columns, cfg, cal.arl_test) \
            if est is not None else None
        self.events_seen = 0
        self.labelled_seen = 0
        # warm-up (a shuffled or short reference): the first ``dependence_warmup``
        # events are kept (as slots and codes), no feature decision fires before its
        # end, where the dependence is estimated from them and the monitor calibrated
        self._warmup_until = cfg.dependence_warmup \
            if cal.dependence_source == "pending" else 0
        c = len(p.samples)
        self._warm_slots = np.zeros((c, 0), dtype=self.ks.ring.dtype)
        self._warm_cats = np.zeros((len(self.cats), 0), dtype=np.int64)
        self._next_feature_fire = max(cfg.min_samples - 1, self._warmup_until)
        self._next_label_fire = cfg.min_samples - 1
        # a feature decision being gathered: the event it fires at (-1: none), the
        # sequential signals (kind, column) and the KS/chi-square strengths seen so far
        self._gather_until = -1
        # (kind, column) -> the smallest lambda (see fusion.fuse) its statistic reached
        self._gather_seq: dict[tuple[int, int], float] = {}
        self._gather_other: dict[tuple[str, str], tuple[float, float]] = {}
        self._last: dict[str, Any] = {}
        m1 = cfg.persistence_m - 1  # n-of-m histories: last m - 1 flags per signal
        self._hist = {"seq": np.zeros((3 * c, m1), bool), "ks": np.zeros((c, m1), bool),
                      "cat": np.zeros((len(self.cats), m1), bool),
                      "lab": np.zeros((4, m1), bool), "trend": np.zeros((1, m1), bool)}

    def _apply(self, cal: Calibration) -> None:
        """Set the calibration's thresholds on the feature detectors (their
        statistics restart)."""
        p, cfg = self.profile, self.config
        self.calibration = cal
        c = len(p.samples)

        def col(v):
            return np.broadcast_to(np.asarray(v, dtype=np.float64), (c,)).copy()

        d = cal.mean_scale
        t_mean, t_var = col(cal.mean_tau), col(cal.var_tau)
        self.mean_up = CUSUM(d / t_mean, col(cal.mean_drift_up) / t_mean, col(cal.mean_h))
        self.mean_down = CUSUM(-d / t_mean, col(cal.mean_drift_down) / t_mean,
                               col(cal.mean_h))
        # the large-shift pair (scale 0 and an infinite threshold: none)
        dl = cal.mean_scale_large
        self.mean_up_large = CUSUM(np.full(c, dl) / t_mean,
                                   col(cal.mean_drift_up_large) / t_mean,
                                   col(cal.mean_h_large))
        self.mean_down_large = CUSUM(np.full(c, -dl) / t_mean,
                                     col(cal.mean_drift_down_large) / t_mean,
                                     col(cal.mean_h_large))
        self.variance = CUSUM(cal.var_scale / t_var, col(cal.var_drift) / t_var,
                              col(cal.var_h))
        self.outliers = OutlierRate(p.means, p.stds, cal.out_p0, cal.out_p1, col(cal.out_h),
                                    cfg.z_score_threshold, cfg.outlier_pct_threshold / 100,
                                    tau=col(cal.out_tau))
        self._ks_tau = col(cal.ks_tau)
        t_cat = np.broadcast_to(np.asarray(cal.cat_tau, np.float64), (len(self.cats),))
        self._cat_crit = {name: w.critical(cal.cat_alpha) * float(t_cat[j])
                          for j, (name, w) in enumerate(self.cats.items())}
        self._cat_tau = {name: float(t_cat[j]) for j, name in enumerate(self.cats)}
        self._crit_cache: dict[tuple[int, int], float] = {}
        self._crit_full = np.array([self._crit(j, cfg.ks_window) for j in range(c)])

    @property
    def dependence(self) -> dict[str, Any]:
        """The serial dependence the monitor is calibrated to (issue 13).

        ``source``: "reference" (estimated from the time-ordered reference),
        "warmup" (learnt from the stream's first ``config.dependence_warmup`` events),
        "pending" (warm-up under way: factors are 1 until it ends) or "none" (a state
        saved before dependence was estimated: independence assumed). ``columns`` maps
        every numeric column to its long-run variance factors (1 = independent; the
        effective sample size of ``n`` events is ``n / factor``): ``factor`` of the
        normal scores (mean CUSUMs), ``variance_factor`` (of their squares),
        ``ks_factor``, ``outlier_factor``, and ``lag1`` (lag-1 autocorrelation); every
        categorical column to ``{"factor": ...}`` (chi-square window). ``errors`` is
        the error series' factor (NaN until known).
        """
        cal = self.calibration
        c = len(self.profile.samples)

        def col(v):
            return np.broadcast_to(np.asarray(v, dtype=np.float64), (c,))

        mean, var, ks, out, lag = (col(v) for v in (cal.mean_tau, cal.var_tau, cal.ks_tau,
                                                     cal.out_tau, cal.lag1))
        cols: dict[str, dict[str, float]] = {
            name: {"factor": float(mean[j]), "variance_factor": float(var[j]),
                   "ks_factor": float(ks[j]), "outlier_factor": float(out[j]),
                   "lag1": float(lag[j])}
            for j, name in enumerate(self.profile.numeric_columns)}
        for name, t in self._cat_tau.items():
            cols[name] = {"factor": t}
        lab = self.labelled
        return {"source": cal.dependence_source, "columns": cols,
                "errors": float(lab.tau_e)}

    def _crit(self, j: int, n: int) -> float:
        """Critical KS statistic of column ``j`` for a window of ``n`` values."""
        key = (j, n)
        if key not in self._crit_cache:
            self._crit_cache[key] = ks_critical(
                self.calibration.ks_alpha, int(self.ks.reference_sizes[j]), n,
                float(self._ks_tau[j]))
        return self._crit_cache[key]

    def _parts(self):
        return [self.ks, *self._mean_cusums(), self.variance, self.outliers,
                *self.cats.values()]

    def _mean_cusums(self) -> tuple[CUSUM, ...]:
        """The mean CUSUMs: up and down for the design shift, then for large shifts."""
        return (self.mean_up, self.mean_down, self.mean_up_large, self.mean_down_large)

    def _leading_mean(self, j: int) -> CUSUM:
        """The mean CUSUM of column ``j`` farthest past (or least short of) its
        threshold, in its log-likelihood units."""
        dets = self._mean_cusums()
        return dets[int(np.argmax([d.s[j] - d.threshold[j] for d in dets]))]

    def _save_feature_state(self):
        return [part.get_state() for part in self._parts()], \
            {k: self._hist[k].copy() for k in ("seq", "ks", "cat")}, \
            self.estimate.get_state() if self.estimate else None

    def _load_feature_state(self, saved) -> None:
        parts, hist, est = saved
        for part, st in zip(self._parts(), parts):
            part.set_state(st)
        self._hist.update({k: v.copy() for k, v in hist.items()})
        if self.estimate:
            self.estimate.set_state(est)

    def estimated_errors(self, numeric: np.ndarray, predictions=None, scores=None
                         ) -> np.ndarray | None:
        """Each event's estimated error (see :mod:`detectors.performance_estimate`),
        or None when the model has no estimator. ``scores``: per event, the positive
        class's probability (a binary model) or a mapping class -> probability."""
        if self.estimate is None:
            return None
        est = self.estimate.estimator
        n = len(numeric)
        if predictions is not None and len(predictions) != n or \
                scores is not None and len(scores) != n:
            raise DetectorError("predictions and scores must have one value per event")
        q = None
        if est.kind == "cbpe" and scores is not None and predictions is not None:
            q = scores_to_q(scores, np.asarray(predictions), est.positive)
        return est.losses(numeric, predictions, q)

    # -- features -----------------------------------------------------------------
    def update_features(self, numeric: np.ndarray,
                        categorical: dict[str, np.ndarray] | None = None,
                        predictions=None, scores=None, *,
                        estimated_errors: np.ndarray | None = None) -> list[Decision]:
        """Process a micro-batch of feature events; return decisions fired in it.

        ``numeric`` is (n, len(profile.numeric_columns)) float with NaN for missing;
        ``categorical`` maps each categorical column to an array of n values.
        ``predictions`` and ``scores`` (n each, optional) are the model's outputs for
        the same events: the estimated performance uses them (see
        :meth:`estimated_errors`, which gives ``estimated_errors`` directly).
        """
        x, cats = self._feature_batch(numeric, categorical)
        n = len(x)
        losses = estimated_errors if estimated_errors is not None \
            else self.estimated_errors(x, predictions, scores)
        xt = np.ascontiguousarray(x.T)  # (columns, events): time runs along rows
        if self._warmup_until > self.events_seen:
            k = self._warmup_until - self.events_seen
            if n > k:  # the calibration changes at the warm-up's end: split there
                cut = (None, None) if losses is None else (losses[:k], losses[k:])
                first = self.update_features(x[:k], _rows(cats, 0, k),
                                             estimated_errors=cut[0])
                return first + self.update_features(x[k:], _rows(cats, k, None),
                                                    estimated_errors=cut[1])
            self._keep_warmup(xt, cats)
        decisions, start = [], 0
        while start < n:
            saved = self._save_feature_state()
            fire = self._feature_step(xt[:, start:], _rows(cats, start, None),
                                      None if losses is None else losses[start:])
            if fire is None:
                break
            i, seq_keys, other = fire
            self._gather(seq_keys, other)
            left = n - start
            if i > left - 1:  # still gathering at the end of the batch
                self._gather_until = self.events_seen - left + i
                break
            if i < left - 1:  # roll back, redo exactly up to the firing event
                self._load_feature_state(saved)
                self.events_seen -= left
                self._feature_step(xt[:, start:start + i + 1], _rows(cats, start, start + i + 1),
                                   None if losses is None else losses[start:start + i + 1])
            decisions.append(self._fire_features())
            start += i + 1
        if self._warmup_until and self.events_seen >= self._warmup_until \
                and self.calibration.dependence_source == "pending":
            self._finish_warmup()
        return decisions

    def _feature_batch(self, numeric, categorical) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The batch as (events, numeric columns) floats and every categorical column's
        values (None where the batch lacks the column)."""
        ncol = len(self.profile.numeric_columns)
        x = np.asarray(numeric, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(-1, ncol or 1)
        n = len(x)
        if x.shape[1] != ncol:
            if not (ncol == 0 and x.shape[1] == 1):
                raise DetectorError(f"expected {ncol} numeric columns, got {x.shape[1]}")
            x = np.zeros((n, 0))
        given = categorical or {}
        cats = {c: np.asarray(given[c], dtype=object) if c in given
                else np.full(n, None, dtype=object) for c in self.cats}
        return x, cats

    def _keep_warmup(self, xt: np.ndarray, cats: dict[str, np.ndarray]) -> None:
        """Keep the warm-up's events (slots and codes): the dependence is estimated from
        them at its end."""
        self._warm_slots = np.concatenate([self._warm_slots, self.ks.slots(xt)], axis=1)
        codes = np.array([w.codes(cats[c]) for c, w in self.cats.items()],
                         dtype=np.int64).reshape(len(self.cats), xt.shape[1])
        self._warm_cats = np.concatenate([self._warm_cats, codes], axis=1)

    def _gather(self, seq_keys: dict, other: dict) -> None:
        """Add the signals of a step to the decision being gathered."""
        for key, lam in seq_keys.items():
            self._gather_seq[key] = min(lam, self._gather_seq.get(key, np.inf))
        for key, (st, lam) in other.items():
            _merge_signal(self._gather_other, key, st, lam)

    def _fire_features(self) -> Decision:
        """The decision gathered, with the state at its firing event; the sequential
        tests restart."""
        # effect sizes since each CUSUM's change-point estimate, read off the state now
        signals = self._seq_signals(self._gather_seq) + [
            {"signal": sig, "column": col, "strength": st, "lambda": lam}
            for (sig, col), (st, lam) in self._gather_other.items()]
        estimate_fired = (EstimatedPerformance.name, None) in self._gather_other
        impact = None
        if self.estimate:  # the estimate since the test's run, else in its whole window
            impact = self.estimate.expected_impact(None if estimate_fired else np.inf)
        self._gather_until, self._gather_seq, self._gather_other = -1, {}, {}
        offset = self.events_seen - 1
        if estimate_fired and impact is not None:  # its strength since the change
            for sig in signals:
                if sig["signal"] == EstimatedPerformance.name:
                    sig["strength"] = max(1.0, float(impact["strength"]))
        decision = fuse(signals, offset, self.config, self.snapshot(),
                        floor="MEDIUM" if self._outliers_over_floor() else None,
                        expected_impact=impact)
        self._next_feature_fire = offset + self.config.cooldown + 1
        for part in (*self._mean_cusums(), self.variance, self.outliers):
            part._reset()
        if estimate_fired:  # its evidence is its own: drift alone does not restart it
            self.estimate.restart()
        self._hist["seq"][:] = False
        return decision

    def _finish_warmup(self) -> None:
        """Estimate the dependence from the warm-up's events, fill in what the
        reference did not give, calibrate again and restart the sequential tests."""
        lk = self.ks.lookup
        slots = self._warm_slots
        z = self._score[slots].T
        z[(slots >= lk.nan_code[:, None]).T] = np.nan  # missing values: left out
        f = dep.score_factors(z)
        old = self.profile.dependence or {}
        known = dict(old)
        for key in ("mean", "var", "ks", "out", "lag1"):
            v = np.asarray(old.get(key, np.full(len(f[key]), np.nan)), dtype=np.float64)
            known[key] = np.where(np.isfinite(v), v, f[key]) if len(v) == len(f[key]) \
                else f[key]
        cats = dict(old.get("categorical", {}))
        for j, name in enumerate(self.cats):
            if not np.isfinite(cats.get(name, np.nan)):
                cats[name] = dep.indicator_factor(self._warm_cats[j])
        known["categorical"] = cats
        known.setdefault("errors", float("nan"))
        cal = calibrate(self.profile, self.config, self.ks.transforms, dependence=known,
                        source="warmup")
        # the labelled side keeps its own (see LabelledSignals)
        cal = dataclasses.replace(cal, err_tau=self.calibration.err_tau)
        self._apply(cal)
        self._hist["seq"][:] = False
        self._warm_slots = self._warm_slots[:, :0]
        self._warm_cats = self._warm_cats[:, :0]

    def _feature_step(self, xt: np.ndarray, cats: dict[str, np.ndarray],
                      losses: np.ndarray | None = None):
        """Advance all feature detectors on ``xt`` (columns, n). Return None when no
        decision is under way, else ``(index, sequential keys, other signals)``: the
        event at which the decision fires (``config.gather_events`` after the first
        eligible alarm; possibly past the batch) and the signals past their thresholds
        from that alarm (or the batch start, when gathering) to it. The sequential keys
        ``(kind, column)`` get their strengths from the state at the firing event
        (:meth:`_seq_signals`); the others map ``(signal, column)`` to strength."""
        c, n = xt.shape
        slots = self.ks.slots(xt)
        seq: dict = {}  # (kind, column) -> strength per event, only where it may reach 1
        out_count = np.zeros(c)
        for cols in column_chunks(c, SEQ_CHUNK):  # arrays of a few columns stay in cache
            out_count[cols] = self._sequential(xt[cols], slots[cols], cols, seq)
        k_idx, dks, wn, missing = self.ks.update_slots(slots)
        ks_st = self._ks_strength(dks, wn)  # (checkpoints, columns)
        cat_idx, cat_st, cat_info = self._categorical(cats, n)
        est_st, est_lam = self._estimated(losses, n)
        start = self.events_seen
        self.events_seen += n
        self._record(n, out_count, k_idx, dks, wn, missing, cat_info)
        seq_flags, ks_flags, cat_flags = self._persistent_flags(seq, ks_st, cat_st, c, n)
        span = self._decision_span(start, n, seq, seq_flags, k_idx, ks_flags,
                                   cat_idx, cat_flags, est_st >= 1)
        if span is None:
            return None
        first, i = span
        last = min(i, n - 1) + 1  # signals past their thresholds in [first, i]
        other: dict[tuple[str, str], tuple[float, float]] = {}
        for r, j in _flagged(k_idx, ks_flags, first, last):
            _merge_signal(other, ("ks", self.profile.numeric_columns[j]),
                          float(ks_st[r, j]), self._ks_lambda(j, dks[r, j], wn[r, j]))
        fired = np.flatnonzero(est_st[first:last] >= 1)
        if len(fired):
            _merge_signal(other, (EstimatedPerformance.name, None),
                          float(est_st[first:last].max()),
                          float(est_lam[first:last][fired].min()))
        names = list(self.cats)
        for r, j in _flagged(cat_idx, cat_flags, first, last):
            _merge_signal(other, ("categorical", names[j]), float(cat_st[r, j]),
                          self._cat_lambda(names[j], float(cat_st[r, j])))
        return i, self._seq_keys(seq, seq_flags, first, last), other

    def _estimated(self, losses: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Advance the estimated-performance test (strength and ``lambda`` per event;
        none without an estimator or its inputs). Not before ``min_samples``."""
        if self.estimate is None:
            return np.zeros(n), np.full(n, np.inf)
        st, lam = self.estimate.update(np.full(n, np.nan) if losses is None else losses)
        early = max(self.config.min_samples - self.events_seen, 0)
        st[:early] = 0.0
        return st, lam

    def _persistent_flags(self, seq: dict, ks_st: np.ndarray, cat_st: np.ndarray,
                          c: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Alarm flags after the n-of-m rule: of the sequential tests (kind, column,
        event), the KS and the chi-square windows (column, checkpoint)."""
        seq_flags = np.zeros((3, c, n), bool)
        for (k, j), st in seq.items():
            seq_flags[k, j] = st >= 1
        ks_flags = (ks_st >= 1).T
        cat_flags = (cat_st >= 1).T
        if self.config.persistence_m > 1:
            need = self.config.persistence_n
            ok, self._hist["seq"] = n_of_m(seq_flags.reshape(3 * c, n), self._hist["seq"],
                                           need)
            seq_flags = ok.reshape(3, c, n)
            ks_flags, self._hist["ks"] = n_of_m(ks_flags, self._hist["ks"], need)
            cat_flags, self._hist["cat"] = n_of_m(cat_flags, self._hist["cat"], need)
        return seq_flags, ks_flags, cat_flags

    def _decision_span(self, start: int, n: int, seq: dict, seq_flags: np.ndarray,
                       k_idx: np.ndarray, ks_flags: np.ndarray, cat_idx: np.ndarray,
                       cat_flags: np.ndarray, est_flags: np.ndarray
                       ) -> tuple[int, int] | None:
        """``(first, fire)``: the batch's events from which signals join the decision and
        the one it fires at; None when no decision is under way."""
        if self._gather_until >= 0:  # a decision gathered since an earlier batch
            return 0, self._gather_until - start
        alarm = seq_flags.any(axis=(0, 1)) if seq else np.zeros(n, bool)
        alarm |= est_flags
        if len(k_idx):
            alarm[k_idx] |= ks_flags.any(axis=0)
        if len(cat_idx):
            alarm[cat_idx] |= cat_flags.any(axis=0)
        alarm[:max(self._next_feature_fire - start, 0)] = False  # cooldown, min_samples
        if not alarm.any():
            return None
        first = int(np.argmax(alarm))
        return first, first + self.config.gather_events

    def _seq_keys(self, seq: dict, seq_flags: np.ndarray, first: int,
                  last: int) -> dict[tuple[int, int], float]:
        """The sequential tests alarmed in events ``first:last``, with the smallest
        ``lambda`` their statistics reached there."""
        thresholds = (self.mean_up.threshold, self.variance.threshold,
                      self.outliers.threshold)
        return {(k, j): float(cusum_lambda(float(seq[k, j][first:last].max())
                                           * thresholds[k][j], thresholds[k][j]))
                for (k, j) in sorted(seq) if seq_flags[k, j, first:last].any()}

    def _ks_lambda(self, j: int, d: float, size: int) -> float:
        """``lambda`` of column ``j``'s KS statistic ``d`` on a window of ``size``."""
        return ks_lambda(float(d), int(self.ks.reference_sizes[j]), int(size),
                         float(self._ks_tau[j]), self.calibration.ks_alpha)

    def _cat_lambda(self, name: str, strength: float) -> float:
        """``lambda`` of a chi-square window's statistic, given as its ``strength``."""
        stat = strength * self._cat_crit[name]
        return float(chi2.sf(stat / self._cat_tau[name], self.cats[name]._df)) \
            / self.calibration.cat_alpha

    def effect_sizes(self) -> dict[str, np.ndarray]:
        """Per numeric column, the sequential tests' effect estimates since their
        change-point estimates (the last time each CUSUM stood at zero), each over its
        design effect: the mean shift of the normal scores (the side whose CUSUM is
        higher) over ``config.mean_shift``, the variance ratio over
        ``config.variance_ratio`` and the outlier share over the 5 % floor.

        With Page's run length ``N`` and statistic ``S`` of a CUSUM with increments
        ``scale * x - drift``, the segment sum is ``S + N * drift``, so the estimates
        cost nothing per event: they are read off the state when a decision fires.
        """
        cfg, cal = self.config, self.calibration
        # both sides' segment means are positive in their own direction
        shift = np.where(self.mean_up.s >= self.mean_down.s,
                         self.mean_up.segment_mean() / np.abs(self.mean_up.scale),
                         self.mean_down.segment_mean() / np.abs(self.mean_down.scale))
        ratio = self.variance.segment_mean() / self.variance.scale
        o = self.outliers
        rate = np.where(o.seg_len > 0, o.seg_count / np.maximum(o.seg_len, 1), 0.0)
        return {"mean_shift": shift / cfg.mean_shift,
                "variance": ratio / cfg.variance_ratio,
                "outlier_rate": rate / (cfg.outlier_pct_threshold / 100)}

    def _outliers_over_floor(self) -> bool:
        """Whether some column's outlier share since its outlier test's change-point
        estimate is above the design's 5 % while that test is at least
        ``config.outlier_medium_fraction`` of its way to its threshold: the design makes
        such outliers actionable (a decision at least MEDIUM), even when another test on
        the same events (the variance, often) passes its threshold first."""
        o, cfg = self.outliers, self.config
        share = o.seg_count / np.maximum(o.seg_len, 1)
        return bool(np.any((o.seg_len > 0) & (share > cfg.outlier_pct_threshold / 100)
                           & (o.s >= cfg.outlier_medium_fraction * o.threshold)))

    def _seq_signals(self, keys: dict) -> list[dict[str, Any]]:
        """Signals of the sequential tests past their thresholds, from the state at the
        firing event: strength = effect estimate over the design effect, at least 1
        (the statistic itself is just past its threshold when it fires, so its ratio
        to the threshold says nothing about the size of the change)."""
        if not keys:
            return []
        eff = self.effect_sizes()
        names = self.profile.numeric_columns
        out = []
        for (k, j), lam_seen in sorted(keys.items()):
            e = self._hinkley(k, j) if k < 2 else None
            e = float(eff[_SEQ_KINDS[k]][j]) if e is None else e
            det = (self._leading_mean(j), self.variance, self.outliers)[k]
            lam = min(float(cusum_lambda(det.s[j], det.threshold[j])), lam_seen)
            out.append({"signal": _SEQ_KINDS[k], "column": names[j],
                        "strength": max(1.0, e), "lambda": lam})
        return out

    def _hinkley(self, kind: int, j: int) -> float | None:
        """Mean-shift or variance effect of column ``j`` at the change point that
        maximises the likelihood ratio (Hinkley's estimate) among the events since the
        CUSUM last stood at zero, over the design effect; None without data.

        Page's run since the last zero starts where the CUSUM last reset, often well
        before the change (the CUSUM wanders above zero under no change), and the
        segment mean is diluted by those events; the maximum-likelihood change point
        inside the run is not. The scores of the last ``ks_window`` events are in the
        KS window, so this costs nothing per event, only ``O(ks_window)`` per decision.
        """
        if kind == 0:
            lead = self._leading_mean(j)
            up = bool(lead.scale[j] > 0)
            run = lead.n[j]
        else:
            run = self.variance.n[j]
        m = min(int(run), self.ks.ring.shape[1])
        if m < 1:
            return None
        z = self._score[self.ks.ring[j, -m:]][::-1]  # newest first
        length = np.arange(1.0, m + 1)
        if kind == 0:
            mean = np.cumsum(z if up else -z) / length
            best = int(np.argmax(np.where(mean > 0, length * mean * mean, 0.0)))
            return float(mean[best]) / self.config.mean_shift
        r = np.cumsum(z * z) / length
        with np.errstate(divide="ignore"):
            llr = np.where(r > 1, length * (r - 1 - np.log(r)), 0.0)
        return float(r[int(np.argmax(llr))]) / self.config.variance_ratio

    def _sequential(self, xt: np.ndarray, slots: np.ndarray, cols: slice, seq: dict):
        """Advance the mean, variance and outlier CUSUMs of columns ``cols``; put the
        strength paths of the columns that may alarm into ``seq``; return the outlier
        counts.

        The four mean CUSUMs share one cumulative sum of the scores and its block
        extremes (:func:`~detectors.cusum.affine_scan`): only columns that may pass a
        threshold in the batch get an exact path."""
        z = np.take(self._score, slots)
        cz = np.cumsum(z, axis=1)
        # blocks of 16 events for the design-shift pair, of 4 for the large-shift one
        ext = block_extremes(cz, BLOCK, FINE_BLOCK)
        for k, det in enumerate(self._mean_cusums()):
            rows, paths = det.advance_affine(cz, ext[k // 2], cols, (BLOCK, FINE_BLOCK)[k // 2])
            for j, pth in zip(rows, paths):
                st = pth / det.threshold[j]
                seq[0, j] = np.maximum(seq[0, j], st) if (0, j) in seq else st
        np.square(z, out=z)
        np.cumsum(z, axis=1, out=cz)
        # the squares' sums never decrease: their block extremes cost nothing, and
        # short blocks keep the bound tight (the variance CUSUM's drift is large)
        rows, paths = self.variance.advance_affine(cz, monotone_extremes(cz, FINE_BLOCK), cols,
                                                   FINE_BLOCK)
        for j, pth in zip(rows, paths):
            seq[1, j] = pth / self.variance.threshold[j]
        floor = self.config.outlier_pct_threshold / 100
        o = self.outliers.indicators_t(xt, cols)
        rows, paths, rates, out_count = self.outliers.advance(o, cols)
        for j, pth, rate in zip(rows, paths, rates):
            seq[2, j] = np.where(rate >= floor, pth / self.outliers.threshold[j], 0.0)
        return out_count

    def _categorical(self, cats: dict[str, np.ndarray], n: int):
        """Advance the chi-square windows; all share the checkpoints of the KS window."""
        before = self.events_seen
        idx = np.zeros(0, dtype=np.intp)
        strength = np.zeros((0, len(self.cats)))
        info = {}
        for j, (name, win) in enumerate(self.cats.items()):
            ci, stat, tv = win.update_codes(win.codes(cats[name]))
            if j == 0:
                idx, strength = ci, np.zeros((len(ci), len(self.cats)))
            enough = before + ci + 1 >= self.config.min_samples
            strength[:, j] = np.where(enough, stat / self._cat_crit[name], 0.0)
            info[name] = (stat[-1], tv[-1]) if len(ci) else None
        return idx, strength, info

    def _ks_strength(self, d: np.ndarray, wn: np.ndarray) -> np.ndarray:
        """KS statistic over its critical value for the checkpoint's window size.

        A window with fewer values has a larger critical value, so a statistic below
        0.9 of the full window's cannot pass it: only the others (rare) get their own
        critical value (each costs an inversion of the KS distribution); the rest keep
        ``d`` over the full window's, which is below 1 as well."""
        w = self.config.ks_window
        out = d / self._crit_full
        partial = (wn < w) & (out >= 0.9)
        out[(wn < w) & (wn < self.config.min_samples)] = 0.0
        if partial.any():  # the first window, or NaN in the window
            for r, j in zip(*np.nonzero(partial)):
                nn = int(wn[r, j])
                out[r, j] = d[r, j] / self._crit(int(j), nn) \
                    if nn >= self.config.min_samples else 0.0
        return out

    def _record(self, n, out_count, k_idx, d, wn, missing, cat_info) -> None:
        last = self._last
        if n:
            last["mean_shift"] = np.maximum(self.mean_up.s, self.mean_down.s)
            last["variance"] = self.variance.s.copy()
            with np.errstate(invalid="ignore", divide="ignore"):
                last["outlier_segment_rate"] = np.where(
                    self.outliers.seg_len > 0,
                    self.outliers.seg_count / np.maximum(self.outliers.seg_len, 1), 0.0)
            last["batch_outlier_rate"] = out_count / n
        if len(k_idx):
            last["ks"] = d[-1]
            last["ks_n"] = wn[-1]
            last["missing"] = missing[-1]
        for k, v in cat_info.items():
            if v is not None:
                last[f"cat:{k}"] = v

    # -- labelled -----------------------------------------------------------------
    def update_labelled(self, predictions: np.ndarray, actuals: np.ndarray) -> list[Decision]:
        """Process labelled events; ``offset`` counts labelled events."""
        pred = np.asarray(predictions, dtype=np.float64).ravel()
        act = np.asarray(actuals, dtype=np.float64).ravel()
        if pred.shape != act.shape:
            raise DetectorError("predictions and actuals must have the same length")
        decisions, start, n = [], 0, len(pred)
        while start < n:
            saved = self.labelled.get_state(), self._hist["lab"].copy(), \
                self._hist["trend"].copy()
            res = self.labelled.update_pairs(pred[start:], act[start:])
            i, sig = self._label_alarm(res)
            self._last["labelled"] = self._label_values(res)
            if i is None:
                self.labelled_seen += n - start
                break
            if i < n - start - 1:  # roll back, redo exactly up to the firing event
                self.labelled.set_state(saved[0])
                self._hist["lab"], self._hist["trend"] = saved[1], saved[2]
                res = self.labelled.update_pairs(pred[start:start + i + 1],
                                                 act[start:start + i + 1])
                self._label_alarm(res)
                self._last["labelled"] = self._label_values(res)
            self.labelled_seen += i + 1
            offset = self.labelled_seen - 1
            decisions.append(fuse(sig, offset, self.config, self.snapshot()))
            self._next_label_fire = offset + self.config.cooldown + 1
            self.labelled.reset_cusum()
            self.labelled.reset_trend()
            self._hist["lab"][:] = False
            self._hist["trend"][:] = False
            start += i + 1
        return decisions

    def _label_alarm(self, res):
        """First eligible labelled alarm in ``res`` (after the n-of-m rule), or None."""
        st = res["strength"]
        n = len(st)
        flags = (st[:, :4] >= 1).T
        checks = res["trend_checks"]
        tflags = (st[checks, 4] >= 1)[None, :]
        if self.config.persistence_m > 1:
            need = self.config.persistence_n
            flags, self._hist["lab"] = n_of_m(flags, self._hist["lab"], need)
            tflags, self._hist["trend"] = n_of_m(tflags, self._hist["trend"], need)
        alarm = flags.any(axis=0)
        alarm[checks] |= tflags[0]
        alarm &= np.arange(self.labelled_seen, self.labelled_seen + n) \
            >= self._next_label_fire
        if not alarm.any():
            return None, []
        i = int(np.argmax(alarm))
        on = list(flags[:, i]) + [bool(tflags[0, np.flatnonzero(checks == i)].any())]
        lam = res["lambda"]
        return i, [{"signal": s, "column": None, "strength": float(st[i, k]),
                    "lambda": float(lam[i, k])}
                   for k, s in enumerate(_LABEL_SIGNALS) if on[k]]

    @staticmethod
    def _label_values(res) -> dict[str, float]:
        return {k: float(v[-1]) for k, v in res.items()
                if k not in ("strength", "trend_checks", "lambda") and len(v)}

    # -- reporting ------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Current statistics and thresholds as plain floats (for Prometheus).

        Per numeric column, ``dependence_factor`` is the long-run variance factor of
        its normal scores (1 = independent events; see :attr:`dependence`) and
        ``lag1_autocorrelation`` their lag-1 autocorrelation; per categorical column,
        ``dependence_factor`` of its level indicators. ``error_dependence_factor`` is
        the error series' (NaN until known), ``dependence_pending`` 1.0 while the
        warm-up learns the dependence.
        """
        cal, last = self.calibration, self._last
        cols = {}
        zeros = np.zeros(len(self.profile.samples))
        dep_ = self.dependence
        for j, name in enumerate(self.profile.numeric_columns):
            n = int(last.get("ks_n", zeros)[j])
            crit = self._crit(j, n) if n > 0 else float("nan")
            d = dep_["columns"][name]
            cols[name] = {
                "ks_statistic": float(last["ks"][j]) if "ks" in last else 0.0,
                "ks_threshold": float(crit),
                "mean_shift_statistic": float(last.get("mean_shift", zeros)[j]),
                "mean_shift_threshold": float(self.mean_up.threshold[j]),
                "variance_statistic": float(last.get("variance", zeros)[j]),
                "variance_threshold": float(self.variance.threshold[j]),
                "outlier_rate": float(last.get("batch_outlier_rate", zeros)[j]),
                "outlier_reference_rate": float(cal.out_p0[j]),
                "missing": float(last.get("missing", zeros)[j]),
                "dependence_factor": d["factor"],
                "lag1_autocorrelation": d["lag1"],
            }
        for name in self.cats:
            stat, tv = last.get(f"cat:{name}", (0.0, 0.0))
            cols[name] = {"chi2_statistic": float(stat), "chi2_threshold": self._cat_crit[name],
                          "total_variation": float(tv),
                          "dependence_factor": self._cat_tau[name]}
        lab = last.get("labelled", {})
        b = self.labelled.baseline
        nan = float("nan")
        return {"events_seen": float(self.events_seen),
                "labelled_seen": float(self.labelled_seen), "columns": cols,
                "mae": lab.get("mae", nan), "r2": lab.get("r2", nan),
                "rmse": lab.get("rmse", nan), "accuracy": lab.get("accuracy", nan),
                "trend_slope": lab.get("trend_slope", nan),
                "trend_z": lab.get("trend_z", nan),
                "trend_threshold": float(cal.trend_z),
                "baseline_r2": float(b.get("r2", nan)),
                "baseline_rmse": float(b.get("rmse", nan)),
                "baseline_accuracy": float(b.get("accuracy", nan)),
                "error_dependence_factor": dep_["errors"],
                "dependence_pending": float(dep_["source"] == "pending"),
                **(self.estimate.snapshot() if self.estimate else {})}

    # -- state ------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Everything, the reference profile included (see :meth:`state_to_bytes`)."""
        return _monitor_state.full_to_bytes(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> "ModelMonitor":
        """Inverse of :meth:`to_bytes`."""
        return _monitor_state.full_from_bytes(cls, data)

    def state_to_bytes(self) -> bytes:
        """The changing state only: windows, CUSUMs, counters, persistence, the last
        statistics and the calibration, with the profile's fingerprint but not the
        profile (tens of kB instead of about 1 MB for 10 columns).

        Restore with :meth:`from_state` and the same profile.
        """
        return _monitor_state.state_to_bytes(self)

    @classmethod
    def from_state(cls, profile: ReferenceProfile, state: bytes,
                   config: DetectorConfig | None = None,
                   task: str | None = None) -> "ModelMonitor":
        """A monitor over ``profile`` that continues exactly where the one that wrote
        ``state`` (with :meth:`state_to_bytes`) stopped.

        ``config`` and ``task`` default to the ones recorded in the state; given, they
        must equal them. Raises :class:`~detectors.errors.StateError` when the profile's
        fingerprint, the config or the task differ, or the bytes are not such a state.
        """
        return _monitor_state.from_state(cls, profile, state, config, task)

    def rebaseline(self, profile: ReferenceProfile) -> None:
        """Swap in a new reference profile and baseline; all windows restart."""
        self.profile = profile
        self._build(None)
