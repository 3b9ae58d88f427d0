"""The design document's batch API, thin wrappers over the same statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from .config import DetectorConfig
from .errors import DetectorError
from .batch_quality import broken_feed, data_quality
from .fusion import DriftType, fuse
from .prediction_error import prediction_errors
from .profile import DEPENDENCE_ROWS, ReferenceProfile, regression_metrics

BANNER_RULE = "═" * 44


def adjust_pvalues(p: np.ndarray, method: str) -> np.ndarray:
    """Holm (family-wise) or Benjamini-Hochberg (false discovery) adjusted p-values.

    >>> adjust_pvalues(np.array([0.01, 0.04, 0.03]), "holm").round(2).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p, dtype=np.float64)
    k = len(p)
    if method == "none" or k == 0:
        return p.copy()
    order = np.argsort(p)
    ps = p[order]
    if method == "holm":
        adj = np.maximum.accumulate((k - np.arange(k)) * ps)
    elif method == "bh":
        adj = np.minimum.accumulate((k / np.arange(1, k + 1) * ps)[::-1])[::-1]
    else:
        raise DetectorError(f"unknown multiple-testing method {method!r}")
    out = np.empty(k)
    out[order] = np.minimum(adj, 1.0)
    return out


@dataclass
class RetrainingTrigger:
    """The design's decision record."""

    triggered: bool
    reason: str
    severity: str
    confidence: float
    drift_types: list[DriftType] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    root_cause: list[dict[str, Any]] = field(default_factory=list)


DEFAULT_TARGET_COLUMN = "actual"
DEFAULT_PREDICTION_COLUMN = "prediction"
METRICS = ("r2", "rmse", "accuracy")
_SEVERITY_ORDER = ("NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL")
# The design: "If outliers > 5% of data: -> Trigger retraining". Such a trigger is at
# least this severe, the retrainer's default minimum (`retrain.min_severity`).
OUTLIER_MIN_SEVERITY = "MEDIUM"


def feature_columns(reference: pd.DataFrame, target_column: str | None = DEFAULT_TARGET_COLUMN,
                    prediction_column: str | None = DEFAULT_PREDICTION_COLUMN) -> list[str]:
    """The columns monitored as features: every column of the reference but the target
    and the prediction (the target is never tested as if it were a feature).

    >>> feature_columns(pd.DataFrame(columns=["x", "price", "prediction"]), "price")
    ['x']
    """
    skip = {target_column, prediction_column}
    return [c for c in reference.columns if c not in skip]


def check_batch_inputs(reference: pd.DataFrame, recent: pd.DataFrame, features: list[str], *,
                       reference_name: str = "reference_data", recent_name: str = "recent_data",
                       target_option: str = "target_column=") -> None:
    """One clear error (`DetectorError`) for inputs the batch check cannot use: a feature
    missing from the recent data, a numeric feature holding text there, no feature at
    all. The names say where to fix it (the CLI passes its option names).

    >>> ref = pd.DataFrame({"x": [1.0, 2.0], "price": [3.0, 4.0]})
    >>> check_batch_inputs(ref, ref[["x"]], ["x", "price"])
    Traceback (most recent call last):
    ...
    detectors.errors.DetectorError: column 'price' is in reference_data but not in recent_data (name a target column with target_column=)
    """
    if not features:
        raise DetectorError(f"{reference_name} has no feature columns (only the target and the "
                            f"prediction; name the target with {target_option})")
    for column in features:
        if column not in recent.columns:
            raise DetectorError(f"column {column!r} is in {reference_name} but not in {recent_name} "
                                f"(name a target column with {target_option})")
        ref, cur = reference[column], recent[column]
        if _is_numeric(ref) and not _is_numeric(cur):
            values = cur.dropna()
            bad = values[pd.to_numeric(values, errors="coerce").isna()]
            example = f" (e.g. {bad.iloc[0]!r} in row {bad.index[0]})" if len(bad) else ""
            raise DetectorError(f"column {column!r} is numeric in {reference_name} but holds text "
                                f"in {recent_name}{example}")


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


class DataDriftDetector:
    """Per-column KS tests (corrected across columns) and the z-score outlier share.

    The target (``target_column``) and the prediction (``prediction_column``) are never
    tested as features."""

    def __init__(self, threshold: float = 0.05, z_score_threshold: float = 3.0,
                 outlier_pct_threshold: float = 5.0, multiple_testing: str = "holm", *,
                 target_column: str | None = DEFAULT_TARGET_COLUMN,
                 prediction_column: str | None = DEFAULT_PREDICTION_COLUMN) -> None:
        self.threshold = threshold
        self.z_score_threshold = z_score_threshold
        self.outlier_pct_threshold = outlier_pct_threshold
        self.multiple_testing = multiple_testing
        self.target_column = target_column
        self.prediction_column = prediction_column

    def detect_distribution_shift(self, reference: pd.DataFrame, current: pd.DataFrame):
        """Return ``(drift_detected, metrics)``; ``metrics['columns'][name]`` holds
        ``ks_statistic``, ``p_value`` (scipy asymptotic), ``p_value_adjusted``."""
        features = set(feature_columns(reference, self.target_column, self.prediction_column))
        cols = [c for c in reference.columns if c in features and c in current.columns
                and _is_numeric(reference[c]) and _is_numeric(current[c])]
        res, pvals = {}, []
        for c in cols:
            r = reference[c].dropna().to_numpy(float)
            x = current[c].dropna().to_numpy(float)
            if len(r) == 0 or len(x) == 0:
                continue
            t = stats.ks_2samp(r, x, method="asymp")
            res[c] = {"ks_statistic": float(t.statistic), "p_value": float(t.pvalue),
                      "missing": int(current[c].isna().sum())}
            pvals.append(t.pvalue)
        adj = adjust_pvalues(np.array(pvals), self.multiple_testing)
        drifted = []
        for (c, m), a in zip(res.items(), adj):
            m["p_value_adjusted"] = float(a)
            m["drift_detected"] = bool(a < self.threshold)
            if m["drift_detected"]:
                drifted.append(c)
        # design: outlier share of |z| > 3 against the reference mean/std
        out = {}
        for c in res:
            mu, sd = reference[c].mean(), reference[c].std(ddof=0)
            x = current[c].dropna().to_numpy(float)
            out[c] = float(100 * np.mean(np.abs(x - mu) > self.z_score_threshold * sd)) \
                if sd > 0 else float(100 * np.mean(x != mu))
        outlier_cols = [c for c, v in out.items() if v > self.outlier_pct_threshold]
        metrics = {"columns": res, "drifted_columns": drifted,
                   "multiple_testing": self.multiple_testing, "outlier_pct": out,
                   "outlier_columns": outlier_cols}
        return bool(drifted), metrics


class ConceptDriftDetector:
    """Windowed MAE (the misclassification rate for class labels) of ``window_size``
    predictions, two ways to fire:

    * a jump: the last window's MAE is more than ``error_threshold`` (15 %) above the
      previous window's, and significantly so (Welch's t-test, one-sided, ``alpha``);
    * a trend: over the last ``trend_windows`` windows the MAE rises significantly
      (least-squares slope, one-sided p < ``alpha``) by more than ``error_threshold``
      in all (fitted end against fitted start). A steady rise that never jumps 15 % from
      one window to the next is found this way.
    """

    def __init__(self, window_size: int = 100, error_threshold: float = 0.15,
                 alpha: float = 0.05, trend_windows: int = 10) -> None:
        if window_size < 1 or trend_windows < 3:
            raise DetectorError("window_size must be >= 1 and trend_windows >= 3")
        self.window_size = window_size
        self.error_threshold = error_threshold
        self.alpha = alpha
        self.trend_windows = trend_windows

    def detect_prediction_error_drift(self, predictions, actuals):
        e = _errors(predictions, actuals)
        w = self.window_size
        if len(e) < 2 * w:
            return False, {"reason": f"need at least {2 * w} predictions", "n": len(e)}
        k = len(e) // w
        maes = e[len(e) - k * w:].reshape(k, w).mean(axis=1)
        prev, cur = e[-2 * w:-w], e[-w:]
        mae_prev, mae_cur = float(prev.mean()), float(cur.mean())
        inc = _relative_rise(mae_prev, mae_cur)
        with np.errstate(all="ignore"):
            t = stats.ttest_ind(cur, prev, equal_var=False, alternative="greater")
        p_val = float(t.pvalue) if np.isfinite(t.pvalue) else 1.0
        jump = inc > self.error_threshold and p_val < self.alpha
        tail = maes[-self.trend_windows:]
        slope, slope_p, rise = 0.0, 1.0, 0.0
        if len(tail) >= 3 and np.ptp(tail) > 0:
            lr = stats.linregress(np.arange(len(tail)), tail, alternative="greater")
            slope, slope_p = float(lr.slope), float(lr.pvalue)
            rise = _relative_rise(lr.intercept, lr.intercept + lr.slope * (len(tail) - 1))
        trend = slope > 0 and slope_p < self.alpha and rise > self.error_threshold
        return bool(jump or trend), {
            "mae_previous": mae_prev, "mae_current": mae_cur, "error_increase": float(inc),
            "p_value": p_val, "jump_detected": bool(jump), "trend_windows": len(tail),
            "trend_slope": slope, "trend_p_value": slope_p, "trend_rise": float(rise),
            "trend_detected": bool(trend), "window_maes": maes.tolist()}


def _relative_rise(before: float, after: float) -> float:
    if before > 0:
        return float((after - before) / before)
    return float(after > 0)


def _errors(predictions, actuals) -> np.ndarray:
    """The design's detector takes text labels as classes and numbers as regression.

    >>> _errors(["a", "b"], ["a", "c"]).tolist(), _errors([1, 2], [1.5, 2]).tolist()
    ([0.0, 1.0], [0.5, 0.0])
    """
    p, a, labels = _pairs(predictions, actuals)
    return prediction_errors("classification" if labels else "regression", p, a)


def _pairs(predictions, actuals) -> tuple[np.ndarray, np.ndarray, bool]:
    """Both arrays without the pairs where either is missing; True when they are class
    labels that are not numbers (compared as text)."""
    p, a = np.asarray(predictions).ravel(), np.asarray(actuals).ravel()
    if p.shape != a.shape:
        raise DetectorError(f"predictions and actuals differ in length ({len(p)} and {len(a)})")
    labels = not (p.dtype.kind in "biuf" and a.dtype.kind in "biuf")
    if labels:
        ok = ~(pd.isna(p) | pd.isna(a))
        return p[ok].astype(str), a[ok].astype(str), True
    p, a = p.astype(np.float64), a.astype(np.float64)
    ok = np.isfinite(p) & np.isfinite(a)
    return p[ok], a[ok], False


class ModelPerformanceMonitor:
    """Current R2 / RMSE / accuracy against a baseline (relative drops)."""

    def __init__(self, r2_threshold: float = 0.05, rmse_threshold: float = 0.10,
                 accuracy_threshold: float = 0.05,
                 baseline: Mapping[str, float] | None = None) -> None:
        self.r2_threshold = r2_threshold
        self.rmse_threshold = rmse_threshold
        self.accuracy_threshold = accuracy_threshold
        self.baseline = dict(baseline or {})

    def set_baseline(self, metrics: Mapping[str, float]) -> None:
        self.baseline = {k: float(v) for k, v in metrics.items() if v is not None}

    def detect_degradation(self, current: Mapping[str, float]):
        """``current`` are the model's current metrics, compared with ``baseline``."""
        b, out, hit = self.baseline, {}, []
        checks = (("r2", -1, self.r2_threshold), ("rmse", 1, self.rmse_threshold),
                  ("accuracy", -1, self.accuracy_threshold))
        for name, sign, thr in checks:
            if current.get(name) is None or b.get(name) in (None, 0):
                continue
            change = sign * (current[name] - b[name]) / abs(b[name])
            out[name] = {"baseline": b[name], "current": float(current[name]),
                         "change": float(change), "threshold": thr}
            if change > thr:
                hit.append(name)
                out[name]["strength"] = float(change / thr)
        out["degraded"] = hit
        return bool(hit), out


class AutomaticRetrainingOrchestrator:
    """The design's decision engine on a batch of recent data.

    Columns: ``target_column`` (default ``"actual"``) is the model's target and
    ``prediction_column`` (default ``"prediction"``) its output; neither is ever
    monitored as a feature. ``feature_columns`` restricts the features (default: every
    other column of the reference). Every feature must be in the recent data.

    Baseline of the performance comparison, the first one known: ``baseline=`` here
    (the CLI's ``--baseline-r2/--baseline-rmse/--baseline-accuracy``, a configured
    model's ``baseline``, the model store's record of the serving version),
    ``reference_data.attrs["baseline"]``, else the reference's own metrics when it holds
    the prediction and target columns.
    """

    def __init__(self, data_drift_threshold: float = 0.05, performance_threshold: float = 0.05,
                 min_samples_for_retraining: int = 100,
                 config: DetectorConfig = DetectorConfig(),
                 baseline: Mapping[str, float] | None = None, *,
                 target_column: str | None = DEFAULT_TARGET_COLUMN,
                 prediction_column: str | None = DEFAULT_PREDICTION_COLUMN,
                 feature_columns: list[str] | None = None,
                 score_column: str | None = None) -> None:
        self.data_drift_threshold = data_drift_threshold
        self.performance_threshold = performance_threshold
        self.min_samples_for_retraining = min_samples_for_retraining
        self.config = config
        self.target_column = target_column
        self.prediction_column = prediction_column
        self.feature_columns = list(feature_columns) if feature_columns else None
        # a binary classifier's positive-class probability (reference and recent data):
        # its accuracy is then estimated without labels and drift gets its expected impact
        self.score_column = score_column
        self.data = DataDriftDetector(data_drift_threshold, config.z_score_threshold,
                                      config.outlier_pct_threshold, config.multiple_testing,
                                      target_column=target_column,
                                      prediction_column=prediction_column)
        self.concept = ConceptDriftDetector(config.concept_window, config.error_threshold,
                                            data_drift_threshold, config.trend_windows)
        self.performance = ModelPerformanceMonitor(
            performance_threshold, config.rmse_threshold, performance_threshold, baseline)

    def features(self, reference_data: pd.DataFrame) -> list[str]:
        """The columns monitored as features (never the target or the prediction)."""
        special = (self.target_column, self.prediction_column, self.score_column)
        if self.feature_columns is not None:
            return [c for c in self.feature_columns if c not in special]
        return [c for c in feature_columns(reference_data, self.target_column, self.prediction_column)
                if c != self.score_column]

    def baseline_for(self, reference_data: pd.DataFrame) -> tuple[dict[str, float], str | None]:
        """The baseline metrics and where they come from (``None``: no baseline)."""
        if self.performance.baseline:
            return dict(self.performance.baseline), "configured"
        if attrs := _baseline_from(reference_data):
            return attrs, "reference_attrs"
        t, p = self.target_column, self.prediction_column
        if t and p and t in reference_data.columns and p in reference_data.columns:
            if own := current_metrics(reference_data[p].to_numpy(), reference_data[t].to_numpy()):
                return own, "reference_predictions"
        return {}, None

    def should_retrain(self, reference_data, recent_data, predictions=None, actuals=None,
                       metrics: Mapping[str, float] | None = None) -> RetrainingTrigger:
        """The design's decision on a batch of recent data.

        Parameters
        ----------
        reference_data, recent_data
            Frames; the reference's columns but the target and the prediction are the
            features (numeric ones get the KS test and the outlier share), and each must
            be in ``recent_data``.
        predictions, actuals
            Recent predictions and their true values (optional, together): the
            windowed error (concept drift: a jump or a trend) and, unless ``metrics``
            give them, the current metrics.
        metrics
            The model's *current* metrics (``r2``, ``rmse``, ``accuracy``; any subset),
            as in the design's ``{'r2': 0.85, 'rmse': 0.35}`` and ``--r2 0.85 --rmse
            0.35``. Given values win over those computed from ``predictions`` and
            ``actuals`` (R2 and RMSE for a regression, accuracy for class labels).
            Each is compared with the baseline of the same name (see the class): R2
            drop > ``performance_threshold`` (5 %), RMSE rise >
            ``config.rmse_threshold`` (10 %), accuracy drop > 5 %, relative to the
            baseline. A given metric without a baseline raises ``DetectorError``;
            computed metrics without one are reported, not compared.

        Outliers above ``config.outlier_pct_threshold`` (5 %) in a column trigger with at
        least MEDIUM severity, the retrainer's default minimum: the design retrains on
        them.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> ref = pd.DataFrame({"x": rng.normal(size=500)})
        >>> act = rng.normal(size=300); pred = act + rng.normal(scale=0.6, size=300)
        >>> t = AutomaticRetrainingOrchestrator(baseline={"r2": 0.85, "rmse": 0.35}
        ...     ).should_retrain(ref, ref.iloc[:300], pred, act, {"r2": 0.6})
        >>> t.metrics["performance"]["baseline_source"], t.metrics["performance"]["degraded"]
        ('configured', ['r2', 'rmse'])
        """
        if len(recent_data) < self.min_samples_for_retraining:
            return RetrainingTrigger(False, f"Insufficient samples: {len(recent_data)} < "
                                     f"{self.min_samples_for_retraining}", "NONE", 0.0)
        features = self.features(reference_data)
        check_batch_inputs(reference_data, recent_data, features)
        _, dm = self.data.detect_distribution_shift(reference_data[features],
                                                    recent_data[features])
        all_metrics, signals = {"data_drift": dm}, self._data_signals(dm)
        quality = data_quality(reference_data, recent_data, features, self.data_drift_threshold,
                               tests=2 * len(features))
        all_metrics["data_quality"] = quality
        signals += quality["signals"]
        pd_metrics = self._prediction_drift(reference_data, recent_data, len(features))
        if pd_metrics is not None:
            all_metrics["prediction_drift"] = pd_metrics
            if pd_metrics["drifted"]:
                signals.append({"signal": "prediction_drift", "column": pd_metrics["column"],
                                "strength": pd_metrics["strength"]})
        if (predictions is None) != (actuals is None):
            raise DetectorError("predictions and actuals go together")
        if predictions is not None:
            _, cm = self.concept.detect_prediction_error_drift(predictions, actuals)
            all_metrics["concept_drift"] = cm
            signals += self._concept_signals(cm)
        pm = self._performance(reference_data, predictions, actuals, metrics)
        if pm is not None:
            all_metrics["performance"] = pm
            signals += [{"signal": name, "column": None, "strength": pm[name]["strength"]}
                        for name in pm.get("degraded", [])]
        all_metrics["dependence"] = reference_dependence(
            reference_data, features, self.config, target_column=self.target_column,
            prediction_column=self.prediction_column)
        impact = self._expected_impact(reference_data, recent_data)
        if impact is not None:
            all_metrics["estimated_performance"] = impact
            if impact["harmful"]:
                signals.append({"signal": "estimated_performance", "column": None,
                                "strength": max(1.0, impact["strength"])})
        d = fuse(signals, len(recent_data) - 1, self.config, expected_impact=impact)
        severity = d.severity if impact is not None else _outlier_severity(d.severity, dm)
        severity = _quality_severity(severity, quality)
        return RetrainingTrigger(d.triggered, d.reason, severity,
                                 d.confidence, [DriftType(t) for t in d.trigger_types],
                                 all_metrics, d.root_cause)

    def _prediction_drift(self, reference_data, recent_data, n_features: int
                          ) -> dict[str, Any] | None:
        """The prediction column's two-sample KS test, recent rows against the
        reference's, at ``data_drift_threshold`` after a Bonferroni correction over it
        and the ``n_features`` feature tests (None when either frame lacks numeric
        predictions): the model's outputs watched like an input, no label needed."""
        c = self.prediction_column
        if not c or c not in reference_data or c not in recent_data \
                or not _is_numeric(reference_data[c]) or not _is_numeric(recent_data[c]):
            return None
        ref = reference_data[c].to_numpy(dtype=np.float64, na_value=np.nan)
        new = recent_data[c].to_numpy(dtype=np.float64, na_value=np.nan)
        ref, new = ref[np.isfinite(ref)], new[np.isfinite(new)]
        if not len(ref) or not len(new):
            return None
        test = stats.ks_2samp(ref, new)
        p = min(1.0, float(test.pvalue) * (n_features + 1))
        return {"column": c, "ks_statistic": float(test.statistic),
                "p_value": float(test.pvalue), "p_value_adjusted": p,
                "reference_std": float(ref.std()), "recent_std": float(new.std()),
                "drifted": p < self.data_drift_threshold,
                "strength": float(np.log(max(p, 1e-300)) / np.log(self.data_drift_threshold))}

    def _expected_impact(self, reference_data, recent_data) -> dict[str, Any] | None:
        """CBPE on the recent rows (``score_column``; None without one)."""
        if not self.score_column:
            return None
        for name, frame in (("reference", reference_data), ("recent", recent_data)):
            missing = [c for c in (self.score_column, self.prediction_column) if c not in frame]
            if missing:
                raise DetectorError(f"the {name} data has no column {missing[0]!r} "
                                    f"(scores need predictions)")
        if self.target_column not in reference_data:
            raise DetectorError(f"the reference data has no target column {self.target_column!r}")
        from .performance_estimate import batch_impact

        return batch_impact(reference_data, recent_data, self.prediction_column,
                            self.target_column, self.score_column, self.config)

    def _data_signals(self, dm: dict[str, Any]) -> list[dict[str, Any]]:
        """The drifted columns' KS signals, then the outlier columns' signals."""
        signals = []
        for c in dm["drifted_columns"]:
            m = dm["columns"][c]
            strength = np.log(max(m["p_value_adjusted"], 1e-300)) / np.log(self.data_drift_threshold)
            signals.append({"signal": "ks", "column": c, "strength": float(strength)})
        for c in dm["outlier_columns"]:
            signals.append({"signal": "outlier_rate", "column": c,
                            "strength": dm["outlier_pct"][c] / self.config.outlier_pct_threshold})
        return signals

    def _concept_signals(self, cm: dict[str, Any]) -> list[dict[str, Any]]:
        """The windowed error's signal: a jump, else a trend (else none)."""
        if cm.get("jump_detected"):
            return [{"signal": "mae", "column": None,
                     "strength": cm["error_increase"] / self.config.error_threshold}]
        if cm.get("trend_detected"):
            return [{"signal": "trend", "column": None,
                     "strength": cm["trend_rise"] / self.config.error_threshold}]
        return []

    def _performance(self, reference_data, predictions, actuals, metrics):
        """The current metrics against the baseline, as :meth:`should_retrain` says."""
        given = {k: float(v) for k, v in (metrics or {}).items() if v is not None}
        unknown = sorted(set(given) - set(METRICS))
        if unknown:
            raise DetectorError(f"unknown metric(s) {', '.join(unknown)}: use {', '.join(METRICS)}")
        labelled = predictions is not None and actuals is not None
        current = {**(current_metrics(predictions, actuals) if labelled else {}), **given}
        if not current:
            return None
        baseline, source = self.baseline_for(reference_data)
        if missing := missing_baselines(given, baseline):
            raise DetectorError(
                f"current metric(s) {', '.join(missing)} without a baseline: pass "
                f"baseline={{{missing[0]!r}: ...}}, or reference data with the "
                f"{self.prediction_column!r} and {self.target_column!r} columns")
        if not baseline:
            return {"mode": "none", "baseline_source": None, "degraded": [], "current_metrics": current,
                    "reason": "no baseline to compare the current metrics with"}
        monitor = ModelPerformanceMonitor(self.performance.r2_threshold,
                                          self.performance.rmse_threshold,
                                          self.performance.accuracy_threshold, baseline)
        _, out = monitor.detect_degradation(current)
        out["baseline_source"] = source
        out["mode"] = "baseline_from_reference" if source == "reference_predictions" else "baseline_configured"
        out["current_metrics"] = current
        out["baseline_metrics"] = dict(baseline)
        return out


def _outlier_severity(severity: str, data_metrics: dict[str, Any]) -> str:
    """``severity``, raised to :data:`OUTLIER_MIN_SEVERITY` when a column has too many
    outliers: the design retrains on them."""
    if data_metrics["outlier_columns"] and (_SEVERITY_ORDER.index(severity)
                                            < _SEVERITY_ORDER.index(OUTLIER_MIN_SEVERITY)):
        return OUTLIER_MIN_SEVERITY
    return severity


def _quality_severity(severity: str, quality: dict[str, Any]) -> str:
    """A broken feed (a stuck column, or one 20 points more missing) is at least HIGH,
    new levels at least MEDIUM, as in the streaming monitor."""
    signals = quality["signals"]
    floor = "HIGH" if broken_feed(signals, quality) else \
        "MEDIUM" if any(s["signal"] == "unseen_category" for s in signals) else None
    if floor and _SEVERITY_ORDER.index(severity) < _SEVERITY_ORDER.index(floor):
        return floor
    return severity


# A column this dependent (long-run variance factor) is worth a line in `driftline check`.
MARKED_DEPENDENCE = 2.0


def reference_dependence(reference: pd.DataFrame, features: list[str],
                         config: DetectorConfig = DetectorConfig(), *,
                         target_column: str | None = DEFAULT_TARGET_COLUMN,
                         prediction_column: str | None = DEFAULT_PREDICTION_COLUMN) -> dict[str, Any]:
    """The serial dependence of the reference's ``features`` (and of its error series,
    when it holds the target and the prediction), estimated as the streaming monitor
    estimates it (:class:`ReferenceProfile`, ``config.reference_order``): see
    :func:`column_dependence`. The batch tests of :meth:`should_retrain` themselves
    take the rows for independent.

    >>> rng = np.random.default_rng(0)
    >>> x = np.zeros(4000)
    >>> for i in range(1, 4000): x[i] = 0.8 * x[i - 1] + rng.normal()
    >>> d = reference_dependence(pd.DataFrame({"x": x, "y": rng.normal(size=4000)}), ["x", "y"])
    >>> d["source"], d["columns"]["x"]["factor"] > 4, round(d["columns"]["y"]["factor"])
    ('reference', True, 1)
    """
    labels = {c: c if c and c in reference.columns else None for c in (target_column, prediction_column)}
    try:
        profile = ReferenceProfile.from_frame(
            reference, feature_columns=features, prediction_column=labels[prediction_column],
            actual_column=labels[target_column] if labels[prediction_column] else None, config=config)
    except DetectorError as error:  # e.g. a numeric column without a finite value
        return {"source": "unavailable", "reason": str(error), "columns": {}, "errors": float("nan")}
    return column_dependence(profile, config)


def column_dependence(profile: ReferenceProfile, config: DetectorConfig = DetectorConfig(),
                      calibrated: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Per column, the long-run variance factor (1 = independent rows; at least 1, as the
    calibration takes it), the reference rows it was estimated on, the reference's
    effective sample size (rows / factor) and where the factor comes from:

    * "reference": estimated from the time-ordered reference (``reference_order = "time"``);
    * "shuffled": the reference's order is not time (``reference_order = "shuffled"``),
      so it says nothing about the stream's dependence: not estimated;
    * "short": fewer than ``dependence_min_rows`` reference values: not estimated;
    * with ``calibrated`` (a :attr:`ModelMonitor.dependence`), what the monitor is
      calibrated to: its factors, and "warmup" (learnt from the stream's first events),
      "pending" or "none" for the columns the reference did not give.

    A factor not estimated is NaN, and so is the effective sample size unless the source
    is "reference". Numeric columns also give ``ks_factor`` and ``lag1`` (lag-1
    autocorrelation). ``errors``: the error series' factor (NaN when unknown).
    """
    d = profile.dependence
    if d is None:
        top = "shuffled" if config.reference_order == "shuffled" else "short"
    else:
        top = "reference"
    nan = float("nan")

    def entry(name: str, factor: float, rows: int | None, extra: dict[str, float]) -> dict[str, Any]:
        from_reference = bool(np.isfinite(factor))  # the profile estimated it
        if calibrated is None:
            source = "reference" if from_reference else ("short" if d is not None else top)
        else:  # the monitor's factors; those the reference gave stay the reference's
            own = calibrated["columns"].get(name, {})
            factor, extra = own.get("factor", nan), {k: own.get(k, nan) for k in extra}
            source = "reference" if from_reference and calibrated["source"] != "none" \
                else calibrated["source"]
        factor = max(float(factor), 1.0) if np.isfinite(factor) else nan
        known = source == "reference" and np.isfinite(factor) and rows is not None
        return {"factor": factor, **extra, "rows": rows,
                "effective_sample_size": rows / factor if known else nan, "source": source}

    columns: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(profile.numeric_columns):
        if d is None:
            columns[name] = entry(name, nan, None, {"ks_factor": nan, "lag1": nan})
            continue
        ks = float(d["ks"][j])
        columns[name] = entry(name, float(d["mean"][j]), int(d["rows"][j]),
                              {"ks_factor": max(ks, 1.0) if np.isfinite(ks) else nan, "lag1": float(d["lag1"][j])})
    for name in profile.categorical_columns:
        if d is None:
            columns[name] = entry(name, nan, None, {})
            continue
        # the non-missing values, of at most the last DEPENDENCE_ROWS rows the factor rests on
        rows = min(sum(profile.categories[name].values()), DEPENDENCE_ROWS)
        columns[name] = entry(name, float(d["categorical"].get(name, nan)), rows, {})
    errors = calibrated["errors"] if calibrated is not None else (d or {}).get("errors", nan)
    return {"source": calibrated["source"] if calibrated is not None else top, "columns": columns,
            "errors": float(errors)}


def missing_baselines(current: Mapping[str, float], baseline: Mapping[str, float]) -> list[str]:
    """The current metrics that have no baseline of the same name to be compared with."""
    return [k for k in METRICS if current.get(k) is not None and baseline.get(k) is None]


def current_metrics(predictions, actuals) -> dict[str, float]:
    """R2 and RMSE (regression) or accuracy (classification: text labels, or actuals
    with at most 20 distinct integer values) of ``predictions`` against ``actuals``,
    missing pairs dropped.

    >>> current_metrics([1, 0, 1, 1], [1, 0, 0, 1]), current_metrics(["a", "b"], ["a", "a"])
    ({'accuracy': 0.75}, {'accuracy': 0.5})
    """
    p, a, labels = _pairs(predictions, actuals)
    if not len(a):
        return {}
    if labels or (len(np.unique(a)) <= 20 and np.all(a == np.round(a))):
        return {"accuracy": float(1.0 - prediction_errors("classification", p, a).mean())}
    return regression_metrics(p, a)


def _baseline_from(reference_data) -> dict[str, float]:
    """Baseline configured on the reference frame (``attrs["baseline"]``), if any."""
    attrs = getattr(reference_data, "attrs", None) or {}
    return {k: float(v) for k, v in dict(attrs.get("baseline", {})).items() if v is not None}


def format_decision_banner(trigger: RetrainingTrigger) -> str:
    """The design document's decision banner.

    >>> print(format_decision_banner(RetrainingTrigger(True, "Multiple triggers detected:"
    ...       " data_drift, concept_drift", "HIGH", 0.8245)))
    ════════════════════════════════════════════
    RETRAINING DECISION: YES
    ════════════════════════════════════════════
    Reason: Multiple triggers detected: data_drift, concept_drift
    Severity: HIGH
    Confidence: 82.45%
    ════════════════════════════════════════════
    """
    return "\n".join([BANNER_RULE,
                      f"RETRAINING DECISION: {'YES' if trigger.triggered else 'NO'}",
                      BANNER_RULE, f"Reason: {trigger.reason}",
                      f"Severity: {trigger.severity}",
                      f"Confidence: {trigger.confidence * 100:.2f}%", BANNER_RULE])
