"""The one settings object: defaults, then a TOML file, then environment variables.

Environment variables are prefixed `DRIFTLINE_`, nested fields joined by `__`
(`DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS`, `DRIFTLINE_POSTGRES__DSN`). The file is named by
`--config` or `DRIFTLINE_CONFIG`. Only entry points build a `Settings`; everything below
them receives the parts it needs as arguments.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from detectors.config import DetectorConfig
from detectors.trigger_types import DriftType
from detectors.severity import Severity
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV_VAR = "DRIFTLINE_CONFIG"
_config_file: ContextVar[str | None] = ContextVar("driftline_config_file", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    features_topic: str = "features"
    predictions_topic: str = "predictions"
    actuals_topic: str = "actuals"
    labelled_topic: str = "labelled"
    retrain_requests_topic: str = "retrain-requests"
    retrain_events_topic: str = "retrain-events"
    dead_letter_topic: str = "driftline-dead-letters"
    # A dead letter carries at most this much of its original (whose full size and SHA-256
    # it keeps), so that any record an input topic accepts still fits the dead-letter
    # topic (base64 in JSON: 4/3 of this, under the broker's default 1 MiB).
    dead_letter_max_original_bytes: int = Field(default=262_144, gt=0)

    def client_config(self) -> dict[str, str]:
        """librdkafka settings shared by every producer, consumer and admin client."""
        config = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile:
            config["ssl.ca.location"] = self.ssl_cafile
        return config

    def producer_config(self, **extra: object) -> dict[str, object]:
        """Every driftline producer: idempotent and acks=all (an acknowledged output is
        on every replica, a retry never writes it twice), and murmur2, the Java client's
        partitioner that the input topics require, so an output keyed by a model lands
        in the partition that model's inputs use (`schemas/README.md`)."""
        return {**self.client_config(), "enable.idempotence": True, "acks": "all",
                "partitioner": "murmur2_random", **extra}


class PostgresSettings(_Section):
    dsn: SecretStr = SecretStr("postgresql://driftline:driftline@127.0.0.1:5433/driftline")
    db_schema: str = Field(default="public", description="schema holding driftline's tables")


class ModelSettings(_Section):
    """One monitored model: where its reference (training) data is and its baseline."""

    reference_path: Path
    task: Literal["regression", "classification"] = "regression"
    feature_columns: list[str] | None = None  # default: numeric columns but the two below
    prediction_column: str = "prediction"
    actual_column: str = "actual"
    # A binary classifier's positive-class probability in the reference: its performance
    # is then estimated without labels from the events' scores (CBPE; README).
    score_column: str | None = None
    baseline: dict[str, float] = {}  # r2, rmse, accuracy; computed from the reference when absent
    # Historical data for retraining (features and the target in `actual_column`);
    # the reference data when not set.
    training_data_path: Path | None = None
    # How the retrainer trains this model; at most one of the two, the built-in
    # scikit-learn trainer when neither is set. `trainer` is "module:function", called as
    # function(frame, target_column) and returning a fitted model with `predict`.
    # `train_command` is an argument list run without a shell; its placeholders
    # {data} (training data file), {output} (where to write the joblib artifact),
    # {target} and {task} are replaced by the retrainer, never by message contents.
    trainer: str | None = Field(default=None, pattern=r"^[\w.]+:\w+$")
    train_command: list[str] | None = None

    @model_validator(mode="after")
    def _one_trainer(self) -> ModelSettings:
        if self.trainer and self.train_command:
            raise ValueError("set at most one of trainer and train_command")
        return self


class MonitorSettings(_Section):
    """The streaming monitor (`driftline worker`)."""

    # faust app id (the join's consumer group) and prefix of the worker's own topics and
    # groups (`monitor_group_id`, `state_topic`).
    app_id: str = "driftline-monitor"
    metrics_port: int = 9464  # 0: no metrics endpoint
    # Partitions of the topics the worker creates when absent (its own state topics and
    # the inference topics); the inference topics must all have the same count.
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # Micro-batches: up to batch_size records, or what arrived within batch_within_seconds
    # (the monitor loop's `consume`, the join agent's `take_events`).
    batch_size: int = Field(default=10_000, ge=1)
    batch_within_seconds: float = Field(default=0.2, gt=0)
    # Predictions wait this long (event time, and wall-clock time since they arrived)
    # for their actual; then they expire and are counted.
    join_ttl_seconds: float = Field(default=3600.0, gt=0)
    join_sweep_interval_seconds: float = Field(default=5.0, gt=0)
    min_severity: Severity = "LOW"
    # Detector thresholds are not here: they are `Settings.detectors`, the one place.
    # The join table's local store (rocksdb keeps it across restarts).
    store: Literal["rocksdb", "memory"] = "rocksdb"
    data_dir: Path = Path(".driftline/worker")
    # How often the join commits, and the monitor saves its models' states and then commits
    # (triggers and dead letters go out with every batch; a crash re-reads at most this long).
    commit_interval_seconds: float = Field(default=1.0, gt=0)
    # Largest state message (one model's monitor).
    state_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024 * 1024)
    # Segment size of the compacted state topic: compaction only cleans closed segments,
    # and a restart reads the uncleaned rest (Kafka's 1 GiB default would be read whole).
    state_segment_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    broker_session_timeout_seconds: float = Field(default=10.0, gt=0)
    broker_heartbeat_interval_seconds: float = Field(default=1.0, gt=0)
    # Consumer throughput: bytes fetched per partition and request (both consumers);
    # records per poll and events buffered per stream (the join agent's faust consumer).
    consumer_max_fetch_size: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_poll_records: int = Field(default=50_000, ge=1)
    stream_buffer_maxsize: int = Field(default=50_000, ge=1)
    # How often the consumer lag metric is measured.
    lag_interval_seconds: float = Field(default=5.0, gt=0)
    # A promotion whose reference profile cannot be read is tried again after this long
    # (the monitor keeps the current reference meanwhile).
    promotion_retry_seconds: float = Field(default=30.0, gt=0)
    # CPython's cyclic garbage collector runs after this many new container objects
    # (its default, 700, makes it scan a 10,000-event batch's live objects over and over:
    # 116,000 -> 207,000 events/s in bench/monitor_loop_bench.py with 50,000).
    gc_threshold: int = Field(default=50_000, ge=700)
    # How long a batch waits for the broker to acknowledge its triggers and states
    # before the worker stops (nothing of the batch is committed then).
    output_timeout_seconds: float = Field(default=60.0, gt=0)
    # Reading the saved states of newly assigned partitions back (the worker stops if slower).
    state_read_timeout_seconds: float = Field(default=120.0, gt=0)

    @property
    def monitor_group_id(self) -> str:
        """Consumer group of the monitor loop (features and labelled topics)."""
        return f"{self.app_id}-monitor"

    @property
    def state_topic(self) -> str:
        """Compacted topic of the monitor's saved state, one record per model."""
        return f"{self.app_id}-monitor-state"


class RetrainSettings(_Section):
    """The retrain consumer (`driftline retrainer`) and `driftline retrain`."""

    group_id: str = "driftline-retrainer"
    metrics_port: int = 9465
    # Policy. Cooldown: seconds after a model's last attempted retrain (by trigger time)
    # during which its triggers are skipped. Concurrency: trainings at once across all
    # models (the design's "limit concurrent retraining jobs"); a trigger over the limit
    # waits in Kafka, it is not dropped. Severity: the design's LOW means "monitor" only.
    cooldown_seconds: float = Field(default=3600.0, ge=0)
    max_concurrent_retrains: int = Field(default=1, ge=1)
    min_severity: Severity = "MEDIUM"
    # The trigger types that may start a retrain: a trigger with none of them is skipped,
    # with the reason. Empty: every type. ["concept_drift", "performance_degradation"]
    # retrains on the labels' evidence only.
    retrain_on: list[DriftType] = []
    min_recent_samples: int = Field(default=100, ge=1)  # the design's min_samples
    # A current model that cannot score the holdout (broken, trained on other columns)
    # fails the retrain, visibly; true promotes the new model over it, with a warning.
    promote_over_unscorable_model: bool = False
    # Data: the newest `holdout_fraction` of the recent labelled rows validate both models.
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    labelled_read_timeout_seconds: float = Field(default=30.0, gt=0)
    # Evidence after the change: before training, wait until the labelled topic holds this
    # many records past the trigger's window of predictions made at or after its last
    # event (at most post_trigger_wait_seconds), and train on the window extended to
    # them. A trigger fires within tens of events of a change, so its window alone is
    # nearly all pre-change data; and labels come late, so the records produced after a
    # trigger may all be of predictions made before it. A trigger of the features alone
    # (no labelled window) counts the labelled records after it, in its partitions.
    # 0: the window as is.
    post_trigger_rows: int = Field(default=500, ge=0)
    post_trigger_wait_seconds: float = Field(default=300.0, ge=0)
    # A change of concept makes the history wrong (the same inputs now have other
    # targets): such triggers (concept drift, or performance degradation without data
    # drift) train on the recent rows only. Set true to keep the design's
    # "historical + recent" for every trigger.
    history_on_concept_drift: bool = False
    # The training data of a change of concept starts at the change point (the detectors'
    # estimate in the trigger, else the rise of the served model's errors in its window);
    # at most this share of the training rows may come from before it (the newest ones).
    old_concept_share: float = Field(default=0.0, ge=0, lt=1)
    # Training: a separate process, killed after the timeout (the design: 5-30 minutes).
    training_timeout_seconds: float = Field(default=1800.0, gt=0)
    training_data_format: Literal["parquet", "csv"] = "parquet"
    work_dir: Path | None = None  # scratch space for training runs; the system's temp dir
    random_seed: int = 0  # of the built-in trainer
    # The training process's OpenMP/BLAS thread pools (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS,
    # MKL_NUM_THREADS, ...) and how much lower its scheduling priority is (os.nice), so that a
    # retrain does not starve the monitor on a small machine.
    trainer_threads: int = Field(default=1, ge=1)
    trainer_nice: int = Field(default=10, ge=0, le=19)
    # Validation: the new model may be worse than the current one by at most this
    # fraction (RMSE at most (1 + m) times, accuracy at least (1 - m) times the current's).
    promotion_margin: float = Field(default=0.0, ge=0, lt=1)
    keep_versions: int = Field(default=5, ge=1)  # per model in the store; current always kept
    # Watched promotion: the monitor compares a new champion's errors over its first
    # watch_rows labelled events with the validation figures of the champion it replaced
    # (on the same holdout); worse by more than the detectors' thresholds (error_threshold
    # for MAE, rmse_threshold, accuracy_threshold) fires a `promotion_regression` trigger,
    # on which the retrainer rolls back to that champion when auto_rollback is on.
    watch_rows: int = Field(default=1000, ge=1)
    auto_rollback: bool = True
    # PostgreSQL and Kafka writes are retried with exponential backoff, without end:
    # the trigger's offset is committed only once its outcome is written.
    retry_initial_seconds: float = Field(default=0.5, gt=0)
    retry_max_seconds: float = Field(default=30.0, gt=0)
    # Any other error in a trigger's processing (a bug, a trainer's artifact the retrainer
    # cannot handle, ...) is retried with the same backoff this many times in all; then the
    # trigger goes to the dead-letter topic with the error, gets its `failed` row and is
    # committed.
    max_attempts: int = Field(default=3, ge=1)
    # Triggers read ahead per partition while earlier ones are handled (for coalescing a
    # model's triggers); past this many the partition is paused.
    max_buffered_triggers: int = Field(default=1000, ge=1)
    db_connect_timeout_seconds: int = Field(default=5, ge=1)
    poll_timeout_seconds: float = Field(default=0.5, gt=0)
    # How soon the group notices a retrainer that died without leaving (librdkafka's
    # default; the broker accepts 6000 and up): its trigger then goes to another member.
    session_timeout_ms: int = Field(default=45000, ge=1)


class MlflowSettings(_Section):
    """The MLflow backend of the model store (`model_store = "mlflow"`, the extra
    `driftline[mlflow]`): a tracking server's URI, or a local `sqlite:///` file that
    needs no server. Each retrain is a run of `experiment`; each model a registered
    model of its model id, whose `champion` alias is the current version."""

    tracking_uri: str = "sqlite:///.driftline/mlflow.db"
    experiment: str = "driftline"
    # Where new runs' artifacts go: MLflow's default for a server; for a sqlite:/// file,
    # a folder `mlflow-artifacts` beside it, so that every process finds the same one.
    artifact_location: str | None = None


class LogRepeatSettings(_Section):
    """Repeated warnings and errors (`schemas/logs.py`). A broker outage makes the Kafka
    clients log the same few errors thousands of times a minute: per logger and message
    template (the message before its arguments, so varying addresses and ids count as one),
    the first `limit` lines of a window pass and the rest are counted into one line
    "N similar messages suppressed in the last 60 s" when the window ends. A Kafka client
    that cannot reach its broker also gets one "Kafka connection lost" line, and one
    "Kafka connection back" line once the broker accepts connections again and the client
    has logged no connection error for `recovered_after_seconds`."""

    limit: int = Field(default=3, ge=1)
    window_seconds: float = Field(default=60.0, gt=0)
    # Records below this level are never limited (a "trigger" line per trigger stays).
    min_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "WARNING"
    recovered_after_seconds: float = Field(default=5.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DRIFTLINE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    postgres: PostgresSettings = PostgresSettings()
    # Every detector threshold, window and the false-alarm target; the design document's
    # thresholds are the defaults (detectors/config.py).
    detectors: DetectorConfig = DetectorConfig()
    models: dict[str, ModelSettings] = {}
    # Where versions are kept: "files" (folders under model_store_path) or "mlflow" (the
    # registry at mlflow.tracking_uri).
    model_store: Literal["files", "mlflow"] = "files"
    model_store_path: Path = Path(".driftline/models")
    mlflow: MlflowSettings = MlflowSettings()
    monitor: MonitorSettings = MonitorSettings()
    retrain: RetrainSettings = RetrainSettings()
    log_level: str = "INFO"
    log_repeats: LogRepeatSettings = LogRepeatSettings()
    # This process's stable name in its consumer groups (Kafka's static membership,
    # `group.instance.id`): restarted under the same name, it gets its partitions back at
    # once instead of waiting for the killed member's session to expire. None: no static
    # membership. Two running processes of one group must not share it (the newer one
    # fences the older out), and a broker outage longer than the session timeout fences
    # the member too (fatal in librdkafka: the process stops, for its supervisor to
    # restart), so set it where a supervisor restarts each process under its own name.
    instance_id: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get() or os.environ.get(CONFIG_ENV_VAR)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def group_instance_id(self, role: str) -> str | None:
        """`group.instance.id` of this process's consumer of `role` ("monitor", "join",
        "retrainer"): each consumer group gets one name per process; None without an
        `instance_id` (no static membership)."""
        return f"{self.instance_id}-{role}" if self.instance_id else None

    def static_membership(self, role: str) -> dict[str, str]:
        """The librdkafka setting of `group_instance_id`, if any."""
        name = self.group_instance_id(role)
        return {"group.instance.id": name} if name else {}

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Builds the settings; `config_file` wins over `DRIFTLINE_CONFIG`."""
        if config_file is None:
            return cls(**overrides)
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        # For this construction only: the environment would carry it into every later
        # Settings() of the process (a test's, the demo's next run).
        token = _config_file.set(str(path))
        try:
            return cls(**overrides)
        finally:
            _config_file.reset(token)
