"""The monitor's Prometheus metrics, defined once, in base units, with bounded labels.

Label values are bounded by configuration: `model` is a configured model id, `column` a
column of its reference profile, `reason` one of `schemas.messages` dead-letter reasons,
`severity` and `trigger_type` the detectors' closed sets; an unknown feature column's
name is one of at most 20 per model (`streams.decoding.UnknownColumns`). Each worker owns one
`MonitorMetrics` on its own registry (no process-global state; tests can build many).
"""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Micro-batch durations from 1 ms to ~16 s.
BATCH_SECONDS_BUCKETS = tuple(0.001 * 2**i for i in range(15))
_COLUMN_GAUGES = {
    "ks_statistic": "KS statistic of the column's current window against the reference",
    "ks_threshold": "critical KS statistic for the current window size",
    "mean_shift_statistic": "CUSUM statistic of the column's mean shift",
    "mean_shift_threshold": "CUSUM decision threshold of the mean shift",
    "outlier_rate": "share of the last batch's values with |z| over the threshold",
    "dependence_factor": "long-run variance factor of the column (1: independent events; the "
                         "tests count n events as n/factor independent ones)",
    "lag1_autocorrelation": "lag-1 autocorrelation of the column, from the reference or the warm-up",
    "missing_share": "share of the last batch's values of the column that are missing",
    "missing_reference_share": "share of the column's values missing in the reference",
    "unseen_share": "share of the last batch's values of a categorical column whose level "
                    "the reference lacks",
    "repeat_share": "share of the last batch's values of a numeric column equal to the one "
                    "before (the stuck signal's rate)",
    "repeat_reference_share": "share of the column's values equal to the one before in the reference",
}
_MODEL_GAUGES = {
    "mae": "windowed mean absolute error",
    "r2": "windowed coefficient of determination",
    "rmse": "windowed root mean squared error",
    "accuracy": "windowed accuracy (classification)",
    "baseline_r2": "baseline R2 of the model's reference",
    "baseline_rmse": "baseline RMSE of the model's reference",
    "baseline_accuracy": "baseline accuracy of the model's reference",
    "error_dependence_factor": "long-run variance factor of the error series (1: independent)",
    "dependence_pending": "1 while the monitor learns the streams' dependence (warm-up: no decision)",
    # the performance estimated without labels, beside the realized (labelled) accuracy and mae
    "estimated_accuracy": "accuracy estimated without labels (CBPE) over the last performance_window events",
    "estimated_mae": "MAE estimated without labels (DLE) over the last performance_window events",
    "reference_estimated_accuracy": "CBPE's accuracy estimate on the reference",
    "reference_estimated_mae": "DLE's MAE estimate on the reference (held out)",
    "estimated_performance_statistic": "CUSUM statistic of the estimated error",
    "estimated_performance_threshold": "CUSUM decision threshold of the estimated error",
    "prediction_drift_statistic": "largest CUSUM statistic over its threshold of the prediction's "
                                  "mean and spread against the reference's predictions (1: fires)",
    "multivariate_statistic": "CUSUM statistic of the numeric columns' PCA reconstruction error",
    "multivariate_threshold": "CUSUM decision threshold of the reconstruction error",
    "estimate_recalibrated": "1 when the reference found the scores miscalibrated and CBPE recalibrates them",
}


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "driftline_events_consumed", "events read from an input topic", ["topic"], registry=r)
        self.events_invalid = Counter(
            "driftline_events_invalid", "events sent to the dead-letter topic", ["reason"],
            registry=r)
        self.events_duplicate = Counter(
            "driftline_events_replayed", "events skipped because the state already holds them "
            "(redelivered after a crash or rebalance)", ["topic"], registry=r)
        self.joins = Counter(
            "driftline_joins", "prediction/actual joins by outcome: matched; expired (a prediction "
            "whose actual never came); unmatched (an actual whose prediction never came)",
            ["outcome"], registry=r)
        self.join_waiting = Gauge(
            "driftline_join_waiting", "predictions and actuals waiting for the other side of their join",
            registry=r)
        self.triggers = Counter(
            "driftline_triggers", "retrain requests published", ["model", "severity", "trigger_type"],
            registry=r)
        self.triggers_suppressed = Counter(
            "driftline_triggers_below_min_severity", "decisions below the minimum severity",
            ["model", "severity"], registry=r)
        self.rebaselines = Counter(
            "driftline_rebaselines", "reference swaps after a promotion", ["model"], registry=r)
        self.batch_seconds = Histogram(
            "driftline_batch_processing_seconds", "time to process one micro-batch", ["agent"],
            buckets=BATCH_SECONDS_BUCKETS, registry=r)
        self.recovery_seconds = Gauge(
            "driftline_recovery_seconds", "time from worker start to its first processed batch "
            "(saved states read back)", registry=r)
        self.state_bytes = Gauge(
            "driftline_state_bytes", "size of a model's last saved monitor state", ["model"],
            registry=r)
        self.processing_errors = Counter(
            "driftline_processing_errors", "model batches that raised in processing (their "
            "failing events are dead-lettered, the rest processed)", ["model"], registry=r)
        self.rebaseline_failures = Counter(
            "driftline_rebaseline_failures", "promotions whose reference profile could not be "
            "read (retried)", ["model"], registry=r)
        self.state_discarded = Counter(
            "driftline_state_discarded", "saved detector states that no longer fit the "
            "reference or the detector settings (windows restarted)", ["model"], registry=r)
        self.unknown_columns = Counter(
            "driftline_unknown_feature_columns", "feature events carrying a column that the model's "
            "reference does not know (its values are dropped), per column; past 20 names per model "
            "the rest are counted as column=\"_other\"", ["model", "column"], registry=r)
        self.partition_mismatch = Counter(
            "driftline_partition_mismatch", "events of a model read from a partition other than "
            "murmur2(model_id), dead-lettered (wrong_partition): its producer does not use the "
            "murmur2 partitioner", ["model", "topic"], registry=r)
        self.consumer_lag = Gauge(
            "driftline_consumer_lag_messages", "high watermark minus committed offset of an "
            "assigned input partition", ["topic", "partition"], registry=r)
        self._lag_labels: dict[str, set[tuple[str, str]]] = {}  # per source (consumer)
        self.column = {
            name: Gauge(f"driftline_column_{name}", doc, ["model", "column"], registry=r)
            for name, doc in _COLUMN_GAUGES.items()
        }
        self.model = {
            name: Gauge(f"driftline_model_{name}", doc, ["model"], registry=r)
            for name, doc in _MODEL_GAUGES.items()
        }
        self._snapshot_gauges: dict[tuple, list[tuple[Gauge, str]]] = {}

    def serve(self, port: int) -> None:
        """Starts the endpoint in a daemon thread (prometheus_client's own server)."""
        if port:
            start_http_server(port, registry=self.registry)

    def set_consumer_lag(self, lags: dict[tuple[str, str], float], *, source: str) -> None:
        """Lag per (topic, partition) of one of the worker's consumers (`source`);
        its partitions no longer assigned are removed."""
        for labels in self._lag_labels.get(source, set()) - lags.keys():
            self.consumer_lag.remove(*labels)
        for labels, lag in lags.items():
            self.consumer_lag.labels(*labels).set(lag)
        self._lag_labels[source] = set(lags)

    def record_snapshot(self, model_id: str, snapshot: dict[str, Any]) -> None:
        """Copies a `ModelMonitor.snapshot()` into the gauges (NaN: not yet known). The
        labelled gauges are looked up once per model and column: this runs per model
        and batch, and `labels()` costs more than `set()`."""
        for column, stats in snapshot.get("columns", {}).items():
            for gauge, name in self._children(model_id, column, stats):
                gauge.set(_number(stats[name]))
        for gauge, name in self._children(model_id, None, snapshot):
            gauge.set(_number(snapshot[name]))

    def _children(self, model_id: str, column: str | None, stats: dict[str, Any]) -> list[tuple[Gauge, str]]:
        key = (model_id, column, tuple(stats))
        children = self._snapshot_gauges.get(key)
        if children is None:
            if column is None:
                children = [(gauge.labels(model_id), name) for name, gauge in self.model.items() if name in stats]
            else:
                children = [(gauge.labels(model_id, column), name)
                            for name, gauge in self.column.items() if name in stats]
            self._snapshot_gauges[key] = children
        return children


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
