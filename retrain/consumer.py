"""The retrain consumer that `driftline retrainer` runs (its command line is
`retrain.retrainer_cli`): consumes `retrain-requests` and turns each trigger into an
outcome, written to PostgreSQL and published on `retrain-events`, before its offset is
committed.

Triggers are read ahead of the one that trains (up to `max_buffered_triggers` per
partition, then the partition is paused) while the loop keeps polling, so neither a long
training nor a database outage exceeds `max.poll.interval.ms`; offsets are committed in
order, each once every trigger up to it has its outcome. One model retrains at a time
(its triggers share a partition): a trigger that arrives while its model is busy waits
as the model's follow-up, and a newer one supersedes it (the older is skipped, with the
reason), so at most one follow-up waits and it carries the newest evidence. A trigger
raised against a version older than the one now serving is stale: skipped. Each
trigger moves through stages:

    admit     already recorded (a redelivery)? then only publish its outcome again;
              stale? skipped; else the policy, the data, and the training is started
              -- PostgreSQL reads, retried with backoff
    training  the training process is polled until it ends
    write     INSERT ... ON CONFLICT (trigger_id) DO NOTHING  -- retried with backoff
    publish   the outcome (or a dead letter), idempotent, acks=all  -- retried
    and then the trigger's offset + 1 is committed and its partition resumed.

PostgreSQL and Kafka outages are retried without end (nothing may be committed before its
row is written). Any other error in a stage is retried `max_attempts` times, with the same
backoff; then the trigger is given up: it goes to the dead-letter topic with the error
(reason `processing_failed`), gets a `failed` row in `model_retraining_events` and a
`failed` outcome, and is committed, so one bad trigger never stops the retrainer nor
crash-loops it on every restart. The starts of a trigger's handling are also counted in
PostgreSQL (`retrain_trigger_starts`), so a trigger whose handling kills the retrainer
process itself is given up the same way after `max_attempts` starts.
"""

from __future__ import annotations

import datetime as dt
import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from retrain import datasets, metrics
from retrain.backoff import Backoff, RetryClock
from retrain.errors import RetrainError
from retrain.job import RetrainJob
from retrain.labelled_source import read_window
from retrain.model_store import open_model_store
from retrain.outcome import OutcomeRecord, Trigger, event_from_row
from retrain.policy import PolicyDecision, Verdict, superseded
from retrain.preparation import PREDICTION, PreparedData, records_to_frame
from retrain.repository import RetrainEventRepository
from retrain.rollback import LiveEvents, is_regression, roll_back
from retrain.training_process import remove_stale_scratch
from schemas.messages import (
    DeadLetter,
    OffsetRange,
    RetrainRequest,
    SchemaError,
    TopicWindow,
    Window,
    decode,
    encode,
)
from schemas.logs import get_logger, librdkafka_callbacks
from schemas.settings import ModelSettings, Settings

log = get_logger(__name__)

ERROR_DETAIL_CHARS = 500  # of an error's message kept in a reason


class Stage(enum.Enum):
    ADMIT = "admit"
    TRAINING = "training"
    WRITE = "write"
    PUBLISH = "publish"
    DONE = "done"  # published; committed once the triggers before it are done too


@dataclass
class InFlight:
    """One consumed, not yet committed trigger."""

    topic: str
    partition: int
    offset: int
    retry: RetryClock
    seq: int = 0  # order of arrival: a model's triggers are admitted in this order
    admitted: bool = False  # past the one-retrain-per-model gate
    stage: Stage = Stage.ADMIT
    trigger: Trigger | None = None
    request: RetrainRequest | None = None
    job: RetrainJob | None = None
    record: OutcomeRecord | None = None
    original: bytes = b""  # the trigger's record, for a dead letter
    key: bytes | None = None
    outbox: list[tuple[str, bytes]] = field(default_factory=list)  # published in order
    produced: bool = False
    delivered: bool | None = None  # None: delivery report pending
    waiting: bool = False  # over the concurrency limit
    after_write: list[tuple[str, bytes]] = field(default_factory=list)  # published before the outcome
    given_up: bool = False
    start_counted: bool = False  # in retrain_trigger_starts, by this process
    labelled_from: dict[int, int] | None = None  # a features-only trigger: labelled offsets it starts at
    # the labelled records past the trigger's window read so far (last offset per
    # partition), and how many of them are of predictions made after the trigger
    labels_read_to: dict[int, int] = field(default_factory=dict)
    labels_after_trigger: int = 0
    attempts: int = 0  # failed attempts at a stage, other than PostgreSQL or Kafka outages
    received: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)

    def published(self, error: KafkaError | None, message: Message) -> None:
        self.delivered = error is None
        if error is not None:
            log.warning("publish_failed", topic=message.topic(), error=str(error))

    @property
    def model_id(self) -> str:
        return self.trigger.model_id if self.trigger else ""


class Retrainer:
    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.settings = settings
        self.retrain = settings.retrain
        self.stop = stop
        self.policy = datasets.policy_from(self.retrain)
        for folder in remove_stale_scratch(self.retrain.work_dir):  # of retrainers killed while training
            log.info("stale_training_folder_removed", folder=str(folder))
        self.store = open_model_store(settings)
        self.repository = RetrainEventRepository(
            settings.postgres.dsn.get_secret_value(),
            settings.postgres.db_schema,
            self.retrain.db_connect_timeout_seconds,
        )
        kafka = settings.kafka.client_config()
        self.consumer = Consumer(
            {
                **kafka,
                **librdkafka_callbacks("retrainer", settings.kafka.bootstrap_servers),
                "group.id": self.retrain.group_id,
                **settings.static_membership("retrainer"),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": self.retrain.session_timeout_ms,
            }
        )
        self.producer = Producer(settings.kafka.producer_config(**librdkafka_callbacks("retrainer", settings.kafka.bootstrap_servers)))
        # Per partition, the consumed triggers not yet committed, in offset order.
        self.in_flight: dict[tuple[str, int], list[InFlight]] = {}
        self._ordered: list[InFlight] | None = None  # every item by arrival; None: rebuild
        self._by_model: dict[str, list[InFlight]] = {}
        self._arrivals = 0
        for model_id in settings.models:
            if (current := self.store.current_version(model_id)) is not None:
                metrics.CURRENT_VERSION.labels(model_id).set(int(current))

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        self.consumer.subscribe([self.settings.kafka.retrain_requests_topic], on_revoke=self._on_revoke)
        log.info("retrainer_started", topic=self.settings.kafka.retrain_requests_topic, group=self.retrain.group_id)
        try:
            while not self.stop.is_set():
                message = self.consumer.poll(self.retrain.poll_timeout_seconds)
                if message is not None:
                    self._receive(message)
                for item in list(self._items()):
                    if item.stage is Stage.DONE:
                        continue
                    try:
                        self._advance(item)
                    except Exception as error:  # noqa: BLE001 - any stage error: retried, then given up
                        self._attempt_failed(item, error)
                self.producer.poll(0)
                metrics.TRIGGERS_WAITING.set(sum(item.waiting for item in self._items()))
        finally:
            for item in self._items():
                if item.job is not None:
                    item.job.kill()
            self.producer.flush(self.retrain.poll_timeout_seconds)
            self.consumer.close()
            self.repository.close()
            log.info("retrainer_stopped")

    def _items(self) -> list[InFlight]:
        """Every uncommitted trigger, in order of arrival."""
        if self._ordered is None:
            self._ordered = sorted((i for queue in self.in_flight.values() for i in queue), key=lambda i: i.seq)
            self._by_model = {}
            for item in self._ordered:
                self._by_model.setdefault(item.model_id, []).append(item)
        return self._ordered

    def _of_model(self, model_id: str) -> list[InFlight]:
        self._items()
        return self._by_model.get(model_id, [])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A partition taken away: its triggers' new owner processes them again."""
        for partition in partitions:
            self._ordered = None
            for item in self.in_flight.pop((partition.topic, partition.partition), []):
                if item.job is not None:
                    item.job.kill()
                    log.info("training_abandoned_on_rebalance", model=item.model_id, partition=partition.partition)

    def _receive(self, message: Message) -> None:
        if message.error():
            if message.error().code() != KafkaError._PARTITION_EOF:
                log.warning("consumer_error", error=str(message.error()))
            return
        key = (message.topic(), message.partition())
        queue = self.in_flight.setdefault(key, [])
        partition = TopicPartition(message.topic(), message.partition())
        if len(queue) >= self.retrain.max_buffered_triggers:
            # Enough read ahead (or fetched before the pause took effect): read it again
            # once the triggers before it are committed.
            self.consumer.pause([partition])
            self.consumer.seek(TopicPartition(message.topic(), message.partition(), message.offset()))
            return
        retry = RetryClock(Backoff(self.retrain.retry_initial_seconds, self.retrain.retry_max_seconds))
        self._arrivals += 1
        item = InFlight(message.topic(), message.partition(), message.offset(), retry, seq=self._arrivals)
        item.original, item.key = message.value() or b"", message.key()
        queue.append(item)
        self._ordered = None
        if len(queue) >= self.retrain.max_buffered_triggers:
            self.consumer.pause([partition])
        try:
            item.request = self._decode(message.value())
            item.trigger = Trigger.from_request(item.request)
        except Exception as error:  # noqa: BLE001 - not a SchemaError: given up at once
            if not isinstance(error, SchemaError):
                self._attempt_failed(item, error)
                return
            metrics.DEAD_LETTERS.labels(error.reason).inc()
            log.warning(
                "trigger_dead_lettered",
                reason=error.reason,
                detail=error.detail,
                partition=item.partition,
                offset=item.offset,
            )
            self._to_publish(item, (self.settings.kafka.dead_letter_topic, self._dead_letter(item, error)))
            return
        # When it came matters: read while its model retrains, it waits as the follow-up.
        log.info("trigger_received", trigger_id=item.trigger.trigger_id, model=item.model_id, offset=item.offset)
        if item.model_id not in self.settings.models:
            self._unknown_model(item)
            return
        self._coalesce(item)

    def _unknown_model(self, item: InFlight) -> None:
        """A valid trigger for a model that is not configured: dead-lettered (nothing can
        train it here), and recorded as skipped with the reason, so that it is not lost."""
        error = SchemaError("unknown_model", f"model {item.model_id!r} is not configured")
        metrics.DEAD_LETTERS.labels(error.reason).inc()
        log.warning("trigger_dead_lettered", reason=error.reason, detail=error.detail, offset=item.offset)
        item.after_write = [(self.settings.kafka.dead_letter_topic, self._dead_letter(item, error))]
        self._outcome(item, OutcomeRecord.skipped(item.trigger, f"unknown model: {error.detail}"))

    def _coalesce(self, newest: InFlight) -> None:
        """The model's follow-up waiting behind its running retrain is superseded by
        `newest`, which becomes the follow-up: at most one waits, with the newest evidence.
        (A trigger below the minimum severity supersedes nothing: it will be skipped.)"""
        if not self.policy.eligible(newest.trigger.severity):
            return
        for item in list(self._of_model(newest.model_id)):
            if item is newest or item.stage is not Stage.ADMIT or item.admitted or is_regression(item.trigger):
                continue  # a rollback is never superseded by a retrain
            blocked = self._blocked(item)
            if blocked is None:
                continue  # first in line: it keeps its place
            if item.trigger.trigger_id in (newest.trigger.trigger_id, blocked.trigger.trigger_id):
                # A copy of a trigger that is still to be recorded: that one writes its row.
                log.info("duplicate_trigger_dropped", trigger_id=item.trigger.trigger_id, offset=item.offset)
                self._to_publish(item)
                continue
            metrics.TRIGGERS_DROPPED.labels(item.model_id, "superseded").inc()
            decision = superseded(newest.trigger.trigger_id, blocked.trigger.trigger_id)
            self._outcome(item, OutcomeRecord.skipped(item.trigger, decision.reason))

    def _blocked(self, item: InFlight) -> InFlight | None:
        """The model's oldest earlier trigger still without a written outcome, if any:
        `item` waits for it (one retrain per model; its row feeds the policy)."""
        for other in self._of_model(item.model_id):
            if other.seq >= item.seq:
                return None
            if other.stage in (Stage.ADMIT, Stage.TRAINING, Stage.WRITE):
                return other
        return None

    def _dead_letter(self, item: InFlight, error: SchemaError) -> bytes:
        key = item.key.decode(errors="replace") if item.key else None
        letter = DeadLetter.for_failure(
            error, topic=item.topic, partition=item.partition, offset=item.offset, original=item.original, key=key
        )
        return encode(letter.bounded(self.settings.kafka.dead_letter_max_original_bytes))

    def _decode(self, value: bytes | None) -> RetrainRequest:
        request = decode(RetrainRequest, value or b"")
        labelled = request.window.labelled
        if labelled is not None and labelled.topic != self.settings.kafka.labelled_topic:
            raise SchemaError("invalid", f"window topic {labelled.topic!r} is not the labelled topic")
        return request

    def _advance(self, item: InFlight) -> None:
        if item.stage is Stage.TRAINING:
            self._poll_training(item)
        elif item.stage is Stage.PUBLISH and item.produced:
            self._publish(item)
        elif not item.retry.due():
            return
        elif item.stage is Stage.ADMIT:
            self._retrying(item, self._admit)
        elif item.stage is Stage.WRITE:
            self._retrying(item, self._write)
        elif item.stage is Stage.PUBLISH:
            self._publish(item)

    def _retrying(self, item: InFlight, step: Callable[[InFlight], None]) -> None:
        try:
            step(item)
        except psycopg.Error as error:
            metrics.DB_WRITE_FAILURES.inc()
            delay = item.retry.failed()
            log.warning(
                "postgres_unavailable",
                stage=item.stage.value,
                trigger_id=item.trigger.trigger_id,
                retry_in_seconds=delay,
                error=str(error).strip(),
            )

    # -- errors other than an outage -------------------------------------------------------
    def _attempt_failed(self, item: InFlight, error: Exception) -> None:
        """A stage raised: try again after a backoff, from a safe point; after
        `max_attempts` failures, give the trigger up."""
        item.attempts += 1
        metrics.STAGE_FAILURES.labels(item.stage.value).inc()
        detail = f"{type(error).__name__}: {error}"[:ERROR_DETAIL_CHARS]
        trigger_id = item.trigger.trigger_id if item.trigger else None
        if item.attempts >= self.retrain.max_attempts or item.trigger is None:
            log.error(
                "trigger_given_up",
                stage=item.stage.value,
                trigger_id=trigger_id,
                attempts=item.attempts,
                partition=item.partition,
                offset=item.offset,
                error=detail,
                exc_info=error,
            )
            self._give_up(item, f"gave up after {item.attempts} failed attempt(s) at {item.stage.value}: {detail}")
            return
        delay = item.retry.failed()
        log.warning(
            "stage_failed",
            stage=item.stage.value,
            trigger_id=trigger_id,
            attempt=item.attempts,
            max_attempts=self.retrain.max_attempts,
            retry_in_seconds=delay,
            error=detail,
            exc_info=error,
        )
        if item.stage in (Stage.ADMIT, Stage.TRAINING):
            # Start over: a version the trigger already stored is found and reused.
            if item.job is not None:
                item.job.kill()
                item.job = None
            item.stage, item.waiting = Stage.ADMIT, False
        elif item.stage is Stage.PUBLISH:
            item.produced, item.delivered = False, None

    def _give_up(self, item: InFlight, reason: str) -> None:
        """Dead letter (with the reason), a `failed` row and outcome, then the commit."""
        if item.job is not None:
            item.job.kill()
            item.job = None
        letter = (
            self.settings.kafka.dead_letter_topic,
            self._dead_letter(item, SchemaError("processing_failed", reason)),
        )
        if item.given_up or item.trigger is None:
            # No trigger to record, or even its plain `failed` row raised: the dead letter only.
            if item.given_up:
                log.error("given_up_row_not_written", trigger_id=item.trigger.trigger_id)
            metrics.DEAD_LETTERS.labels("processing_failed").inc()
            self._to_publish(item, letter)
            return
        item.given_up = True
        metrics.DEAD_LETTERS.labels("processing_failed").inc()
        try:
            previous = self.store.current_version(item.trigger.model_id)
        except Exception:  # noqa: BLE001 - the row matters more than this detail
            previous = None
        record = OutcomeRecord.failed(item.trigger, reason, previous)
        item.record, item.stage, item.waiting = record, Stage.WRITE, False
        item.after_write = [letter]
        try:
            self._retrying(item, self._write)
        except Exception as error:  # noqa: BLE001 - even the plain failed row cannot be written
            log.error("given_up_row_not_written", trigger_id=item.trigger.trigger_id, error=str(error)[:200])
            self._to_publish(item, letter)

    # -- stages ----------------------------------------------------------------------------
    def _running(self) -> int:
        return sum(other.stage is Stage.TRAINING for other in self._items())

    def _admit(self, item: InFlight) -> None:
        trigger = item.trigger
        if is_regression(trigger):
            # A rollback waits for nothing (neither the model's running retrain, which would
            # replace the bad version only later, nor a training slot); no retrain policy applies.
            if not self._republished(item):
                self._outcome(item, roll_back(self.store, trigger, enabled=self.retrain.auto_rollback,
                                              live=self._live_events(item)))
            return
        if not item.admitted:
            if self._blocked(item) is not None:
                item.waiting = True  # the model's follow-up
                return
            item.admitted, item.waiting = True, False
        if item.waiting and self._running() >= self.retrain.max_concurrent_retrains:
            return  # still no free slot; nothing else changed for this trigger
        if self._republished(item):
            return
        serving = self.store.current_version(trigger.model_id)
        if serving is not None and self.store.find_by_trigger(trigger.model_id, trigger.trigger_id) is not None:
            serving = None  # a version this trigger stored before a crash may be serving: not stale
        decision = self.policy.admit(
            severity=trigger.severity,
            triggered_at=trigger.triggered_at,
            last_attempt_at=self.repository.last_attempt_at(trigger.model_id),
            running=self._running(),
            trigger_version=trigger.model_version,
            serving_version=serving,
            trigger_types=trigger.trigger_types,
        )
        item.waiting = decision.verdict is Verdict.WAIT
        if decision.cause == "stale":
            metrics.TRIGGERS_DROPPED.labels(trigger.model_id, "stale").inc()
        if decision.verdict is Verdict.SKIP:
            self._outcome(item, OutcomeRecord.skipped(trigger, decision.reason))
        elif decision.verdict is Verdict.RUN:
            self._start(item)

    def _republished(self, item: InFlight) -> bool:
        """Whether the trigger was recorded before (a redelivery): its outcome is then
        published again from its row."""
        existing = self.repository.find(item.trigger.trigger_id)
        if existing is None:
            return False
        log.info("trigger_already_recorded", trigger_id=item.trigger.trigger_id)
        self._to_publish(item, (self.settings.kafka.retrain_events_topic, encode(event_from_row(existing))))
        return True

    def _high_watermark(self, topic: str, partition: int) -> int:
        _, high = self.consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=self.retrain.labelled_read_timeout_seconds
        )
        return high

    def _settled_window(self, item: InFlight) -> Window | None:
        """The trigger's window extended to the labelled records produced since, once
        `post_trigger_rows` of them exist or the wait is over; None while waiting.

        A trigger of the features alone (no labelled range: data drift seen before any
        actual) gets the labelled records produced after it, in its partitions (the
        topics are co-partitioned), so that it trains on evidence instead of being
        skipped for want of labelled rows."""
        window = _from_change_point(item.request)
        wanted = self.retrain.post_trigger_rows
        labelled_topic = self.settings.kafka.labelled_topic
        if wanted == 0:
            return window
        if window.labelled is not None:
            spans = {r.partition: (r.start, r.end) for r in window.labelled.ranges}
        elif window.features is not None and window.features.ranges:
            if item.labelled_from is None:  # where the labelled topic stood when the trigger was first handled
                item.labelled_from = {
                    r.partition: self._high_watermark(labelled_topic, r.partition) for r in window.features.ranges
                }
            spans = {partition: (start, start - 1) for partition, start in item.labelled_from.items()}
        else:
            return window
        ends = {
            partition: max(end, self._high_watermark(labelled_topic, partition) - 1)
            for partition, (_, end) in spans.items()
        }
        arrived = self._labels_after_trigger(item, spans, ends, window.event_time_end)
        waited = time.monotonic() - item.received
        if arrived < wanted and waited < self.retrain.post_trigger_wait_seconds:
            item.waiting = True  # for the evidence after the change
            item.retry.due_at = time.monotonic() + self.retrain.poll_timeout_seconds
            return None
        item.waiting = False
        ranges = [
            OffsetRange(partition=partition, start=start, end=ends[partition])
            for partition, (start, _) in sorted(spans.items())
            if ends[partition] >= start
        ]
        log.info(
            "post_trigger_rows_ready", trigger_id=item.trigger.trigger_id, rows=arrived, waited_seconds=round(waited, 1),
            labelled=[msgspec.to_builtins(r) for r in ranges],  # what it reads
        )
        if not ranges:
            return window
        return msgspec.structs.replace(window, labelled=TopicWindow(topic=labelled_topic, ranges=ranges))

    def _live_events(self, item: InFlight) -> LiveEvents | None:
        """The promoted version's own labelled events in a regression trigger's window
        (the ones its watch judged), for the rollback to score the replaced version on."""
        window, trigger = item.request.window.labelled, item.trigger
        if window is None or not self.retrain.auto_rollback:
            return None
        model = self.settings.models[trigger.model_id]
        read = read_window(self.settings.kafka, window, trigger.model_id, f"{self.retrain.group_id}-readback",
                           self.retrain.labelled_read_timeout_seconds)
        served = [r for r in read.records if r.model_version == trigger.model_version]
        columns = datasets.feature_columns(model, datasets.historical_frame(model))
        frame = records_to_frame(served, columns, model.actual_column)
        return LiveEvents(frame[columns], frame[PREDICTION].to_numpy(), frame[model.actual_column].to_numpy(),
                          model.task)

    def _labels_after_trigger(
        self, item: InFlight, spans: dict[int, tuple[int, int]], ends: dict[int, int], since: dt.datetime | None
    ) -> int:
        """The model's labelled records past the trigger's window whose prediction was made
        at or after `since` (the window's last event). Labels can come long after their
        prediction: the records produced after a trigger may all be of predictions made
        before it, which show nothing of the change. Without `since`, every record counts."""
        if since is None:
            return sum(ends[partition] - end for partition, (_, end) in spans.items())
        unread = [
            OffsetRange(partition=partition, start=item.labels_read_to.get(partition, end) + 1, end=ends[partition])
            for partition, (_, end) in spans.items()
            if ends[partition] > item.labels_read_to.get(partition, end)
        ]
        if unread:
            read = read_window(self.settings.kafka, TopicWindow(topic=self.settings.kafka.labelled_topic, ranges=unread),
                               item.trigger.model_id, f"{self.retrain.group_id}-readback",
                               self.retrain.labelled_read_timeout_seconds)
            item.labels_after_trigger += sum(record.timestamp >= since for record in read.records)
            item.labels_read_to.update({r.partition: r.end for r in unread})
        return item.labels_after_trigger

    def _start(self, item: InFlight) -> None:
        """Reads the trigger's data and starts its training, once its window is settled;
        a skip or a preparation error is the trigger's outcome."""
        trigger, model = item.trigger, self.settings.models[item.trigger.model_id]
        try:
            window = self._settled_window(item)
            if window is None or self._started_too_often(item):
                return
            item.started = time.monotonic()
            decision, prepared = self._prepare(item, model, window)
            if prepared is None:
                self._outcome(item, OutcomeRecord.skipped(trigger, decision.reason))
                return
            self._start_training(item, model, prepared)
        except (RetrainError, KafkaException, OSError, ValueError) as error:
            log.warning("retrain_preparation_failed", trigger_id=trigger.trigger_id, error=str(error))
            reason = f"data preparation failed: {type(error).__name__}: {error}"
            self._outcome(item, OutcomeRecord.failed(trigger, reason, self.store.current_version(trigger.model_id)))

    def _started_too_often(self, item: InFlight) -> bool:
        """Counts this process's first start of the trigger, in PostgreSQL so that the count
        survives restarts: handling that kills the retrainer is not retried forever. True
        when the trigger was given up."""
        if item.start_counted:
            return False
        trigger = item.trigger
        starts = self.repository.count_start(trigger.trigger_id, trigger.model_id)
        item.start_counted = True
        if starts <= self.retrain.max_attempts:
            return False
        log.error("trigger_given_up", trigger_id=trigger.trigger_id, starts=starts, stage="start")
        self._give_up(
            item,
            f"gave up: handling began {starts - 1} time(s) before without an outcome "
            "(the retrainer stopped while handling it)",
        )
        return True

    def _prepare(
        self, item: InFlight, model: ModelSettings, window: Window
    ) -> tuple[PolicyDecision, PreparedData | None]:
        """The model's history and the window's labelled records, cleaned and split at the
        change point."""
        trigger, change_point = item.trigger, item.request.change_point
        historical = datasets.historical_frame(model)
        columns = datasets.feature_columns(model, historical)
        recent, undecodable = datasets.recent_from_window(
            self.settings.kafka,
            window,
            trigger.model_id,
            columns,
            model.actual_column,
            f"{self.retrain.group_id}-readback",
            self.retrain.labelled_read_timeout_seconds,
        )
        return datasets.prepare_for_training(
            model,
            self.retrain,
            self.policy,
            historical,
            recent,
            columns,
            undecodable,
            profile_since=window.event_time_end,
            trigger_types=trigger.trigger_types,
            change_point=change_point.event_time if change_point else None,
        )

    def _start_training(self, item: InFlight, model: ModelSettings, prepared: PreparedData) -> None:
        for kind in ("training_rows", "holdout_rows", "invalid_dropped", "duplicates_dropped"):
            metrics.ROWS_PREPARED.labels(item.model_id, kind.removesuffix("_rows")).inc(prepared.counts[kind])
        item.job = RetrainJob(item.trigger, model, self.retrain, self.store, prepared, self.settings.detectors)
        item.job.start()
        item.stage = Stage.TRAINING

    def _poll_training(self, item: InFlight) -> None:
        try:
            record = item.job.poll()
        except (RetrainError, OSError) as error:  # the store could not take the version
            record = OutcomeRecord.failed(item.trigger, f"{type(error).__name__}: {error}", item.job.previous_version)
        if record is not None:
            metrics.RETRAIN_SECONDS.labels(item.model_id).observe(time.monotonic() - item.started)
            item.job = None
            self._outcome(item, record)

    def _outcome(self, item: InFlight, record: OutcomeRecord) -> None:
        item.record, item.stage, item.waiting = record, Stage.WRITE, False
        log.info(
            "retrain_outcome",
            model=item.model_id,
            trigger_id=record.trigger.trigger_id,
            outcome=record.outcome,
            reason=record.reason,
            new_version=record.new_version,
            **_window_summary(record.execution),
        )
        self._retrying(item, self._write)

    def _write(self, item: InFlight) -> None:
        record = item.record
        if not self.repository.insert(record.row()):
            # Recorded meanwhile by another member (a rebalance race): publish what it wrote.
            existing = self.repository.find(record.trigger.trigger_id)
            event = (self.settings.kafka.retrain_events_topic, encode(event_from_row(existing)))
            self._to_publish(item, *item.after_write, event)
            return
        if item.start_counted:
            try:
                self.repository.forget_starts(record.trigger.trigger_id)
            except psycopg.Error as error:  # only bookkeeping: the row is written
                log.warning(
                    "trigger_starts_not_cleared", trigger_id=record.trigger.trigger_id, error=str(error).strip()
                )
        if item.model_id in self.settings.models:  # only configured models label metrics
            metrics.RETRAINS.labels(item.model_id, record.outcome).inc()
            if record.outcome == "rolled_back":
                metrics.ROLLBACKS.labels(item.model_id).inc()
            for name, value in record.improvements.items():
                if value is not None:
                    metric = name.removeprefix("improvement_").removesuffix("_percent")
                    metrics.LAST_IMPROVEMENT.labels(item.model_id, metric).set(value / 100)
            if (current := self.store.current_version(item.model_id)) is not None:
                metrics.CURRENT_VERSION.labels(item.model_id).set(int(current))
        self._to_publish(item, *item.after_write, (self.settings.kafka.retrain_events_topic, encode(record.event())))

    def _to_publish(self, item: InFlight, *messages: tuple[str, bytes]) -> None:
        """Publishes `messages` (topic, value) one after the other, then commits."""
        item.stage, item.outbox = Stage.PUBLISH, list(messages)
        item.produced, item.delivered = False, None
        item.retry = RetryClock(Backoff(self.retrain.retry_initial_seconds, self.retrain.retry_max_seconds))
        self._publish(item)

    def _publish(self, item: InFlight) -> None:
        while item.outbox:
            topic, value = item.outbox[0]
            if not item.produced:
                try:
                    key = item.model_id.encode() if item.model_id else item.key
                    self.producer.produce(topic, key=key, value=value, on_delivery=item.published)
                    item.produced = True
                except (KafkaException, BufferError) as error:
                    log.warning("publish_failed", topic=topic, error=str(error))
                    item.retry.failed()
                    return
            self.producer.poll(0)
            if item.delivered is None:
                return  # the delivery report has not arrived yet
            if not item.delivered:
                item.produced, item.delivered = False, None
                item.retry.failed()
                return
            item.outbox.pop(0)
            item.produced, item.delivered = False, None
        item.stage = Stage.DONE
        self._commit(item.topic, item.partition)

    def _commit(self, topic: str, partition: int) -> None:
        """Commits past the partition's leading run of done triggers."""
        queue = self.in_flight.get((topic, partition), [])
        done = 0
        while done < len(queue) and queue[done].stage is Stage.DONE:
            done += 1
        if done == 0:
            return
        last = queue[done - 1]
        try:
            self.consumer.commit(offsets=[TopicPartition(topic, partition, last.offset + 1)], asynchronous=False)
        except KafkaException as error:
            # Lost the partition in a rebalance: the new owner sees the triggers recorded.
            log.warning("commit_failed", partition=partition, offset=last.offset, error=str(error))
        del queue[:done]
        self._ordered = None
        if len(queue) < self.retrain.max_buffered_triggers:
            self.consumer.resume([TopicPartition(topic, partition)])
        log.info("trigger_committed", partition=partition, offset=last.offset, triggers=done)


def _window_summary(execution: dict) -> dict:
    """The training window and holdout in a few log fields (none when nothing trained)."""
    training, holdout = execution.get("training_window"), execution.get("holdout_window")
    if not training or not holdout:
        return {}
    return {
        "training_rows": training["rows"],
        "old_concept_rows": training.get("old_concept_rows"),
        "change_point": training.get("change_point"),
        "change_point_source": training.get("change_point_source"),
        "holdout_rows": holdout["rows"],
    }


def _from_change_point(request: RetrainRequest) -> Window:
    """The trigger's window, its labelled ranges started at the change point's offsets
    when the detectors place the change before the window (post-change evidence)."""
    window, point = request.window, request.change_point
    if window.labelled is None or point is None or not point.labelled:
        return window
    starts = {p.partition: p.offset for p in point.labelled}
    ranges = [
        OffsetRange(partition=r.partition, start=min(r.start, starts.get(r.partition, r.start)), end=r.end)
        for r in window.labelled.ranges
    ]
    return msgspec.structs.replace(window, labelled=TopicWindow(topic=window.labelled.topic, ranges=ranges))

