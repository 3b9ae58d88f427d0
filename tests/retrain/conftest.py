"""A harness per test: its own topics, consumer group, DB schema and model store, a
model `m` with version 1 already in the store, and the retrainer run in a thread."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from retrain import metrics
from retrain.consumer import Retrainer
from retrain.models_cli import bootstrap
from schemas.messages import ChangePoint, Decision, OffsetRange, RetrainRequest, TopicWindow, Window, encode
from schemas.settings import KafkaSettings, ModelSettings, PostgresSettings, RetrainSettings, Settings
from tests.retrain.synthetic import START, encoded, labelled_records, regression_frame
from tests.retrain.trainers import MARKER_ENV, RELEASE_ENV

MODEL = "m"
DEADLINE_SECONDS = 60


def wait_for(condition: Callable[[], Any], what: str, deadline_seconds: float = DEADLINE_SECONDS) -> Any:
    """Polls `condition` until it returns something truthy, or fails naming `what`."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {deadline_seconds} s waiting for {what}")


@pytest.fixture(scope="session")
def training_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.csv"
    regression_frame(2000, seed=1).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory, training_csv: Path) -> Path:
    """A model store holding version 1 of `m`, built once and copied by each test."""
    root = tmp_path_factory.mktemp("store-template")
    settings = Settings(models={MODEL: ModelSettings(reference_path=training_csv)}, model_store_path=root)
    bootstrap(settings, MODEL)
    return root


class Harness:
    REQUEST_PARTITIONS = 2

    def __init__(
        self, name: str, bootstrap_servers: str, dsn: str, schema: str, store: Path, training_csv: Path, work: Path
    ) -> None:
        self.name = name
        self.kafka = KafkaSettings(
            bootstrap_servers=bootstrap_servers,
            labelled_topic=f"{name}_labelled",
            retrain_requests_topic=f"{name}_requests",
            retrain_events_topic=f"{name}_events",
            dead_letter_topic=f"{name}_dead",
        )
        self.dsn, self.schema, self.store, self.training_csv, self.work = dsn, schema, store, training_csv, work
        topics = [
            self.kafka.labelled_topic,
            self.kafka.retrain_requests_topic,
            self.kafka.retrain_events_topic,
            self.kafka.dead_letter_topic,
        ]
        admin = AdminClient({"bootstrap.servers": bootstrap_servers})
        partitions = {self.kafka.retrain_requests_topic: self.REQUEST_PARTITIONS}
        futures = admin.create_topics([NewTopic(t, partitions.get(t, 1), 1) for t in topics])
        for future in futures.values():
            future.result(timeout=30)
        self.producer = Producer({"bootstrap.servers": bootstrap_servers, "enable.idempotence": True})
        self._threads: list[tuple[threading.Thread, threading.Event]] = []
        self.labelled_end = -1

    def settings(
        self,
        dsn: str | None = None,
        model: dict[str, Any] | None = None,
        other_models: tuple[str, ...] = (),
        **retrain: Any,
    ) -> Settings:
        """`model` configures `m` (and `other_models`, which start without a version)."""
        defaults = {
            "group_id": f"{self.name}_group",
            "retry_initial_seconds": 0.05,
            "retry_max_seconds": 0.5,
            "poll_timeout_seconds": 0.1,
            "db_connect_timeout_seconds": 2,
            "labelled_read_timeout_seconds": 20,
            "post_trigger_rows": 0,
            "work_dir": self.work,
        }
        return Settings(
            kafka=self.kafka,
            postgres=PostgresSettings(dsn=dsn or self.dsn, db_schema=self.schema),
            models={
                name: ModelSettings(reference_path=self.training_csv, **(model or {}))
                for name in (MODEL, *other_models)
            },
            model_store_path=self.store,
            retrain=RetrainSettings(**{**defaults, **retrain}),
        )

    # -- producing -----------------------------------------------------------------------
    def produce(self, topic: str, values: list[bytes], key: bytes = MODEL.encode(), partition: int = 0) -> None:
        for value in values:
            self.producer.produce(topic, key=key, value=value, partition=partition)
        assert self.producer.flush(30) == 0

    def labelled_window(self, rows: int, seed: int, model_id: str = MODEL, start: dt.datetime = START) -> TopicWindow:
        """Produces `rows` drifted labelled records, predictions one a second from `start`;
        returns their offset window."""
        return self.labelled_frame(regression_frame(rows, seed=seed, drifted=True), f"s{seed}-", model_id, start)

    def labelled_frame(self, frame: Any, prefix: str, model_id: str = MODEL, start: dt.datetime = START,
                       model_version: str = "1") -> TopicWindow:
        """Produces a frame's rows as labelled records (partition 0) of predictions
        `model_version` served; returns their window."""
        rows = len(frame)
        records = labelled_records(model_id, frame, prefix=prefix, start=start, model_version=model_version)
        self.produce(self.kafka.labelled_topic, encoded(records))
        start, self.labelled_end = self.labelled_end + 1, self.labelled_end + rows
        return TopicWindow(
            topic=self.kafka.labelled_topic, ranges=[OffsetRange(partition=0, start=start, end=self.labelled_end)]
        )

    def trigger(
        self,
        trigger_id: str,
        window: TopicWindow | None,
        created_at: dt.datetime | None = None,
        severity: str = "HIGH",
        partition: int = 0,
        model_version: str = "1",
        model_id: str = MODEL,
        trigger_types: tuple[str, ...] = ("data_drift", "concept_drift"),
        change_point: ChangePoint | None = None,
        features: TopicWindow | None = None,
        event_time_end: dt.datetime | None = None,
    ) -> RetrainRequest:
        request = RetrainRequest(
            trigger_id=trigger_id,
            model_id=model_id,
            model_version=model_version,
            created_at=created_at or dt.datetime.now(dt.timezone.utc),
            decision=Decision(
                trigger_types=list(trigger_types),
                severity=severity,
                confidence=0.8,
                reason="Multiple triggers detected: data_drift, concept_drift",
                root_cause=[],
            ),
            metrics={"ks_statistic": 0.4},
            window=Window(labelled=window, features=features, event_time_end=event_time_end),
            change_point=change_point,
        )
        self.produce(self.kafka.retrain_requests_topic, [encode(request)], key=model_id.encode(), partition=partition)
        return request

    # -- the retrainer -------------------------------------------------------------------
    def start(self, settings: Settings) -> threading.Event:
        metrics.TRIGGERS_WAITING.set(0)  # a gauge of the process: no earlier test's value
        stop = threading.Event()
        # Retrainers running at once in one group and process: each its own member name
        # (a restart reuses a name, as a restarted process would).
        running = sum(thread.is_alive() for thread, _ in self._threads)
        retrainer = Retrainer(settings.model_copy(update={"instance_id": f"{self.name}-{running}"}), stop)
        thread = threading.Thread(target=retrainer.run, daemon=True)
        thread.start()
        self._threads.append((thread, stop))
        return stop

    def stop_all(self) -> None:
        for thread, stop in self._threads:
            stop.set()
            thread.join(30)

    # -- observing -----------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        with psycopg.connect(self.dsn, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
            conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(psycopg.sql.Identifier(self.schema)))
            return conn.execute("SELECT * FROM model_retraining_events ORDER BY id").fetchall()

    def committed(self, partition: int = 0) -> int:
        """The retrainer group's committed offset of a requests partition (< 0: none)."""
        consumer = Consumer({"bootstrap.servers": self.kafka.bootstrap_servers, "group.id": f"{self.name}_group"})
        try:
            [committed] = consumer.committed([TopicPartition(self.kafka.retrain_requests_topic, partition)], timeout=10)
            return committed.offset
        finally:
            consumer.close()

    def high_watermark(self, topic: str, partition: int = 0) -> int:
        """The offset the next record of a partition gets (0: the partition is empty)."""
        consumer = Consumer({"bootstrap.servers": self.kafka.bootstrap_servers, "group.id": f"{self.name}_probe"})
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        finally:
            consumer.close()

    def read(self, topic: str, count: int) -> list[bytes]:
        consumer = Consumer(
            {
                "bootstrap.servers": self.kafka.bootstrap_servers,
                "group.id": f"{self.name}_reader_{topic}",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([topic])
        values: list[bytes] = []
        try:
            deadline = time.monotonic() + DEADLINE_SECONDS
            while len(values) < count and time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is not None and not message.error():
                    values.append(message.value())
        finally:
            consumer.close()
        return values


@pytest.fixture
def harness(
    kafka_bootstrap: str,
    postgres_dsn: str,
    db_schema: str,
    unique_name: str,
    tmp_path: Path,
    store_template: Path,
    training_csv: Path,
) -> Iterator[Harness]:
    store = tmp_path / "store"
    shutil.copytree(store_template, store)
    work = tmp_path / "work"
    work.mkdir()
    h = Harness(unique_name, kafka_bootstrap, postgres_dsn, db_schema, store, training_csv, work)
    yield h
    h.stop_all()


@pytest.fixture
def training_gate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    """For `tests.retrain.trainers:gated`: the file it creates when a training starts, and
    the file whose creation lets the training finish."""
    marker, release = tmp_path / "training-started", tmp_path / "release"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    monkeypatch.setenv(RELEASE_ENV, str(release))
    return marker, release
