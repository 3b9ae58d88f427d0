"""The design document's batch API, thin wrappers over the same statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from .config import DetectorConfig
from .errors import DetectorError
from .fusion import DriftType, fuse
from .profile import regression_metrics

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


class DataDriftDetector:
    """Per-column KS tests (corrected across columns) and the z-score outlier share."""

    def __init__(self, threshold: float = 0.05, z_score_threshold: float = 3.0,
                 outlier_pct_threshold: float = 5.0, multiple_testing: str = "holm") -> None:
        self.threshold = threshold
        self.z_score_threshold = z_score_threshold
        self.outlier_pct_threshold = outlier_pct_threshold
        self.multiple_testing = multiple_testing

    def detect_distribution_shift(self, reference: pd.DataFrame, current: pd.DataFrame):
        """Return ``(drift_detected, metrics)``; ``metrics['columns'][name]`` holds
        ``ks_statistic``, ``p_value`` (scipy asymptotic), ``p_value_adjusted``."""
        cols = [c for c in reference.columns if c in current.columns
                and pd.api.types.is_numeric_dtype(reference[c])
                and pd.api.types.is_numeric_dtype(current[c])]
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
    """Windowed MAE, previous vs current window, with a 15 % rise and significance."""

    def __init__(self, window_size: int = 100, error_threshold: float = 0.15,
                 alpha: float = 0.05) -> None:
        self.window_size = window_size
        self.error_threshold = error_threshold
        self.alpha = alpha

    def detect_prediction_error_drift(self, predictions, actuals):
        p = np.asarray(predictions, dtype=np.float64).ravel()
        a = np.asarray(actuals, dtype=np.float64).ravel()
        if p.shape != a.shape:
            raise DetectorError("predictions and actuals differ in length")
        w = self.window_size
        if len(p) < 2 * w:
            return False, {"reason": f"need at least {2 * w} predictions", "n": len(p)}
        e = np.abs(a - p)
        k = len(e) // w
        maes = e[len(e) - k * w:].reshape(k, w).mean(axis=1)
        prev, cur = e[-2 * w:-w], e[-w:]
        mae_prev, mae_cur = float(prev.mean()), float(cur.mean())
        inc = (mae_cur - mae_prev) / mae_prev if mae_prev > 0 else float(mae_cur > 0)
        t = stats.ttest_ind(cur, prev, equal_var=False, alternative="greater")
        p_val = float(t.pvalue) if np.isfinite(t.pvalue) else 1.0
        slope, slope_p = 0.0, 1.0
        if k >= 3:
            lr = stats.linregress(np.arange(k), maes)
            slope, slope_p = float(lr.slope), float(lr.pvalue)
        trend = slope > 0 and slope_p < self.alpha
        drift = inc > self.error_threshold and (p_val < self.alpha or trend)
        return bool(drift), {"mae_previous": mae_prev, "mae_current": mae_cur,
                             "error_increase": float(inc), "p_value": p_val,
                             "trend_slope": slope, "trend_p_value": slope_p,
                             "window_maes": maes.tolist()}


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
    """The design's decision engine on a batch of recent data."""

    def __init__(self, data_drift_threshold: float = 0.05, performance_threshold: float = 0.05,
                 min_samples_for_retraining: int = 100,
                 config: DetectorConfig = DetectorConfig(),
                 baseline: Mapping[str, float] | None = None) -> None:
        self.data_drift_threshold = data_drift_threshold
        self.performance_threshold = performance_threshold
        self.min_samples_for_retraining = min_samples_for_retraining
        self.config = config
        self.data = DataDriftDetector(data_drift_threshold, config.z_score_threshold,
                                      config.outlier_pct_threshold, config.multiple_testing)
        self.concept = ConceptDriftDetector(config.concept_window, config.error_threshold,
                                            data_drift_threshold)
        self.performance = ModelPerformanceMonitor(
            performance_threshold, config.rmse_threshold, performance_threshold, baseline)

    def should_retrain(self, reference_data, recent_data, predictions=None, actuals=None,
                       metrics: Mapping[str, float] | None = None) -> RetrainingTrigger:
        """The design's decision on a batch of recent data.

        Parameters
        ----------
        reference_data, recent_data
            Frames of features; numeric columns in both get the KS test and the outlier
            share.
        predictions, actuals
            Recent predictions and their true values (optional, together): the MAE
            comparison of successive windows (concept drift) and the current metrics.
        metrics
            Model metrics (``r2``, ``rmse``, ``accuracy``; any subset). Their meaning
            depends on what else is known, as in the design's CLI (``--r2 0.85 --rmse
            0.35`` next to ``--recent-predictions/--recent-actuals``):

            * a baseline is configured (``baseline=`` here, or
              ``reference_data.attrs["baseline"]``): ``metrics`` are the *current*
              metrics and are compared with that baseline;
            * otherwise, with ``predictions`` and ``actuals``: ``metrics`` are the
              model's *baseline* metrics; the current ones are computed from
              predictions vs actuals (R2 and RMSE for a regression, accuracy for a
              classification) and compared with them;
            * otherwise there is nothing to compare them with, and
              ``trigger.metrics["performance"]`` says so.

            Degradation is the design's: R2 drop > ``performance_threshold`` (5 %),
            RMSE rise > ``config.rmse_threshold`` (10 %), accuracy drop > 5 %, all
            relative to the baseline. ``trigger.metrics["performance"]["mode"]`` records
            which reading was used.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> ref = pd.DataFrame({"x": rng.normal(size=500)})
        >>> act = rng.normal(size=300); pred = act + rng.normal(scale=0.6, size=300)
        >>> t = AutomaticRetrainingOrchestrator().should_retrain(
        ...     ref, ref.iloc[:300], pred, act, {"r2": 0.85, "rmse": 0.35})
        >>> t.metrics["performance"]["mode"], t.metrics["performance"]["degraded"]
        ('baseline_given', ['r2', 'rmse'])
        """
        if len(recent_data) < self.min_samples_for_retraining:
            return RetrainingTrigger(False, f"Insufficient samples: {len(recent_data)} < "
                                     f"{self.min_samples_for_retraining}", "NONE", 0.0)
        signals, all_metrics = [], {}
        drift, dm = self.data.detect_distribution_shift(reference_data, recent_data)
        all_metrics["data_drift"] = dm
        for c in dm["drifted_columns"]:
            m = dm["columns"][c]
            strength = np.log(max(m["p_value_adjusted"], 1e-300)) / np.log(self.data_drift_threshold)
            signals.append({"signal": "ks", "column": c, "strength": float(strength)})
        for c in dm["outlier_columns"]:
            signals.append({"signal": "outlier_rate", "column": c,
                            "strength": dm["outlier_pct"][c] / self.config.outlier_pct_threshold})
        labelled = predictions is not None and actuals is not None
        if labelled:
            cd, cm = self.concept.detect_prediction_error_drift(predictions, actuals)
            all_metrics["concept_drift"] = cm
            if cd:
                signals.append({"signal": "mae", "column": None,
                                "strength": cm["error_increase"] / self.config.error_threshold})
        pm = self._performance(reference_data, predictions, actuals, metrics)
        if pm is not None:
            all_metrics["performance"] = pm
            for name in pm.get("degraded", []):
                signals.append({"signal": name, "column": None,
                                "strength": pm[name]["strength"]})
        d = fuse(signals, len(recent_data) - 1, self.config)
        return RetrainingTrigger(d.triggered, d.reason, d.severity, d.confidence,
                                 [DriftType(t) for t in d.trigger_types], all_metrics,
                                 d.root_cause)

    def _performance(self, reference_data, predictions, actuals, metrics):
        """Performance comparison in the mode :meth:`should_retrain` documents."""
        configured = dict(self.performance.baseline) or _baseline_from(reference_data)
        labelled = predictions is not None and actuals is not None
        given = {k: float(v) for k, v in (metrics or {}).items() if v is not None}
        if configured:
            current = given or (current_metrics(predictions, actuals) if labelled else {})
            baseline, mode = configured, "baseline_configured"
        elif labelled and given:
            current, baseline, mode = current_metrics(predictions, actuals), given, \
                "baseline_given"
        elif given:
            return {"mode": "none", "degraded": [],
                    "reason": "metrics given without a baseline or predictions/actuals "
                              "to compare them with"}
        else:
            return None
        if not current:
            return {"mode": mode, "degraded": [], "reason": "no current metrics"}
        monitor = ModelPerformanceMonitor(self.performance.r2_threshold,
                                          self.performance.rmse_threshold,
                                          self.performance.accuracy_threshold, baseline)
        _, out = monitor.detect_degradation(current)
        out["mode"] = mode
        out["current_metrics"] = current
        out["baseline_metrics"] = dict(baseline)
        return out


def current_metrics(predictions, actuals) -> dict[str, float]:
    """R2 and RMSE (regression) or accuracy (classification: actuals with at most 20
    distinct integer values) of ``predictions`` against ``actuals``, NaN pairs dropped.

    >>> current_metrics([1, 0, 1, 1], [1, 0, 0, 1])
    {'accuracy': 0.75}
    """
    p = np.asarray(predictions, dtype=np.float64).ravel()
    a = np.asarray(actuals, dtype=np.float64).ravel()
    if p.shape != a.shape:
        raise DetectorError("predictions and actuals differ in length")
    ok = np.isfinite(p) & np.isfinite(a)
    p, a = p[ok], a[ok]
    if not len(a):
        return {}
    if len(np.unique(a)) <= 20 and np.all(a == np.round(a)):
        return {"accuracy": float(np.mean(p == a))}
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
