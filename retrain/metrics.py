"""The retrainer's Prometheus metrics, defined once. Base units; the `model` label takes
only configured model ids (unknown ones are dead-lettered first), so labels stay bounded.
They live on the retrainer's own registry, which `serve` exposes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()

RETRAINS = Counter(
    "driftline_retrains_total", "Triggers handled, by model and outcome", ["model", "outcome"], registry=REGISTRY
)
RETRAIN_SECONDS = Histogram(
    "driftline_retrain_duration_seconds",
    "Wall time from the start of data preparation to the outcome, attempted retrains only",
    ["model"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
    registry=REGISTRY,
)
ROWS_PREPARED = Counter(
    "driftline_retrain_rows_prepared_total",
    "Rows of prepared data, by model and kind (training, holdout, invalid_dropped, duplicates_dropped)",
    ["model", "kind"],
    registry=REGISTRY,
)
ROLLBACKS = Counter(
    "driftline_rollbacks_total",
    "Promoted versions rolled back after doing worse on live traffic than the champion they replaced "
    "(promotion_regression triggers, retrain.auto_rollback)",
    ["model"],
    registry=REGISTRY,
)
CURRENT_VERSION = Gauge(
    "driftline_model_current_version", "The current version number in the model store", ["model"], registry=REGISTRY
)
LAST_IMPROVEMENT = Gauge(
    "driftline_retrain_last_improvement_ratio",
    "Improvement of the last validated model over the current one (0.1 = 10 % better), by metric",
    ["model", "metric"],
    registry=REGISTRY,
)
TRIGGERS_WAITING = Gauge(
    "driftline_retrain_triggers_waiting",
    "Triggers held back by the concurrent-retrain limit, behind their model's running retrain, "
    "or waiting for the labelled rows after the change (retrain.post_trigger_rows)",
    registry=REGISTRY,
)
DB_WRITE_FAILURES = Counter(
    "driftline_retrain_db_failures_total",
    "Failed PostgreSQL statements, reads and writes (each is retried)",
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "driftline_retrain_dead_letters_total",
    "Triggers sent to the dead-letter topic, by reason",
    ["reason"],
    registry=REGISTRY,
)

TRIGGERS_DROPPED = Counter(
    "driftline_retrain_triggers_dropped_total",
    "Triggers skipped without training as no longer useful, by model and reason: stale (raised "
    "against a version older than the serving one) or superseded (a newer trigger for the model "
    "arrived while it waited behind the model's running retrain)",
    ["model", "reason"],
    registry=REGISTRY,
)
STAGE_FAILURES = Counter(
    "driftline_retrain_stage_failures_total",
    "Errors raised by a stage of a trigger's processing, other than PostgreSQL or Kafka outages "
    "(each is retried up to retrain.max_attempts, then the trigger is dead-lettered), by stage",
    ["stage"],
    registry=REGISTRY,
)


def serve(port: int) -> None:
    start_http_server(port, registry=REGISTRY)
