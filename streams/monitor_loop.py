"""The monitor's input loop: feature events and labelled records from Kafka in
micro-batches, into one `ModelRuntime` per model; triggers and dead letters out with
each batch; the models' states saved once per `commit_interval_seconds`.

It is a confluent-kafka consumer in its own group (`MonitorSettings.monitor_group_id`)
on a thread of the worker, beside the faust app that joins predictions with actuals.
Not a faust agent, for two reasons measured on faust-streaming 0.15.3 (see
`bench/worker_bench.py` and the README):
- faust's per-record path (conductor, queues, one asyncio turn per record) costs
  100-200 us, which caps a worker near 7,000 single-event records/s;
- after a rebalance faust resumes the input partitions *before* it seeks them to the
  committed offsets (`Recovery._resume_streams`), so a restarted worker can be handed a
  stretch of a partition twice and skip another (reproduced after `kill -9`: events
  counted twice and thousands never counted).

Durability: snapshots aligned with committed offsets. Per batch, dead letters and
triggers are produced and flushed (idempotent producer, acks=all). Every
`commit_interval_seconds` (and when caught up, at a revocation or a stop) each model advanced since the
last save has its state (detectors + the last offset per topic they include) produced to
the compacted state topic, in the partition of the model's inputs, and flushed, and only
then are the offsets processed so far committed. The committed offset never passes a
saved state: after a crash the states of the assigned partitions are read back and the
events they already hold are skipped (`ModelRuntime.unseen`); a trigger published again
carries the same trigger_id. Saving per interval rather than per batch keeps the
serialisation of every model's detectors and its gauges out of the per-batch path. The `range` assignor gives a worker the same partition numbers of
the features and labelled topics, so a model's two inputs and its state stay together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import NamedTuple

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from aiokafka.partitioner import murmur2

from detectors import ModelMonitor, ReferenceProfile, StateError
from schemas.messages import DeadLetter, FeatureEvent, LabelledRecord, SchemaError, encode
from streams.decoding import (
    OTHER_COLUMNS,
    UNKNOWN_COLUMN_NAMES,
    ColumnDecoder,
    Record,
    UnknownColumns,
    column_decoder,
    dead_letters,
    decode_by_model,
    letter_key,
)
from schemas.logs import get_logger, librdkafka_callbacks
from streams.metrics import MonitorMetrics
from streams.model_state import Firing, ModelRuntime, decode_state, promotion_watch
from streams.promotions import PromotionWatcher
from streams.references import ReferenceUnavailable, profile_from_settings, profile_from_store
from schemas.settings import Settings
from detectors.severity import at_least
from streams.triggers import retrain_request

log = get_logger(__name__)


class ModelResult(NamedTuple):
    """One model's part of a batch: the runtime it advanced (None: no state, every
    event dead-lettered), its decisions and its dead letters."""

    runtime: ModelRuntime | None
    firings: list[Firing]
    dead: list[DeadLetter]


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge an output: the batch must not be committed."""


class MonitorLoop:
    """`run()` on a thread until `stop()`; `on_fatal` hears of an error that stops it."""

    def __init__(self, settings: Settings, metrics: MonitorMetrics, promotions: PromotionWatcher,
                 *, on_fatal: Callable[[BaseException], None]) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.conf = settings.monitor
        self.metrics = metrics
        self.promotions = promotions
        self.on_fatal = on_fatal
        self.topics = (self.kafka.features_topic, self.kafka.labelled_topic)
        self.runtimes: dict[str, ModelRuntime] = {}
        self.unknown_columns = UnknownColumns()
        self.saved: dict[str, bytes] = {}  # states of the assigned partitions, read at assignment
        self._profiles: dict[tuple[str, str | None], ReferenceProfile] = {}
        self._promotion_failures: dict[str, float] = {}  # trigger_id -> monotonic time
        self._stopping = threading.Event()
        self._delivery_errors: list[str] = []
        self._next_offsets: dict[tuple[str, int], int] = {}  # processed through, per input partition
        self._saved_through: dict[tuple[str, int], int] = {}  # committed with the last saved states
        self._unsaved: dict[str, tuple[ModelRuntime, int]] = {}  # model -> runtime, its partition
        self._save_due = 0.0
        # A model whose batch failed: the batch's last offset per input partition, until the
        # batch's end has the partitions read again (`_read_failed_again`); then, per topic,
        # the offset through which its events read again are applied in isolation.
        self._failed: dict[str, dict[tuple[str, int], int]] = {}
        self._isolating: dict[str, dict[str, int]] = {}
        self._save_now = False  # an isolation set events aside: save at the batch's end
        self._started_at = time.monotonic()
        self._recovered = False
        self._lag_due = 0.0
        self._partition_counts: dict[str, int] = {}
        self._misrouted: set[tuple[str, str]] = set()  # (model, topic) already warned about

    def stop(self) -> None:
        self._stopping.set()

    # -- lifecycle -----------------------------------------------------------------
    def run(self) -> None:
        self.producer: Producer | None = None
        self.consumer: Consumer | None = None
        try:
            self.producer = Producer(self.kafka.producer_config(
                **{"linger.ms": 5, "message.max.bytes": self.conf.state_max_bytes},
                **librdkafka_callbacks("monitor", self.kafka.bootstrap_servers)))
            self.consumer = Consumer({
                **self.kafka.client_config(),
                **librdkafka_callbacks("monitor", self.kafka.bootstrap_servers),
                "group.id": self.conf.monitor_group_id,
                **self.settings.static_membership("monitor"),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",
                "session.timeout.ms": int(self.conf.broker_session_timeout_seconds * 1000),
                "heartbeat.interval.ms": int(self.conf.broker_heartbeat_interval_seconds * 1000),
                "max.partition.fetch.bytes": self.conf.consumer_max_fetch_size,
                "on_commit": self._committed,
            })
            self._wait_for_promotions()
            self.consumer.subscribe(list(self.topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
            while not self._stopping.is_set():
                messages = self.consumer.consume(self.conf.batch_size, timeout=self.conf.batch_within_seconds)
                if messages:
                    self._batch(messages)
                    self._save_when_due()
                else:  # caught up: what is pending is saved now
                    self._save(asynchronous=True)
                self._report_lag()
            self._save(asynchronous=False)
        except BaseException as error:
            log.error("monitor loop failed: stopping the worker", error=f"{type(error).__name__}: {error}",
                      exc_info=error)
            # Nothing more is saved or committed (the revocation in `_close` would): the
            # offsets processed since the last save are past what the saved states hold.
            self._unsaved.clear()
            self._next_offsets.clear()
            self.on_fatal(error)
        finally:
            self._close()

    def _close(self) -> None:
        """Leaves the group (its revocation saves and commits, unless the loop failed) and
        sends what the producer still holds, also after a failure."""
        if self.consumer is not None:
            try:
                self.consumer.close()
            except Exception as error:
                log.warning("closing the monitor's consumer failed", error=f"{type(error).__name__}: {error}")
        if self.producer is not None:
            left = self.producer.flush(self.conf.output_timeout_seconds)
            if left:
                log.warning("outputs not acknowledged at shutdown", messages=left)

    @staticmethod
    def _committed(error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        # A failed commit loses nothing (the saved states skip what is read again) but
        # the operator must hear of it.
        if error is not None:
            log.warning("offset commit failed", error=str(error))
        for tp in partitions:
            if tp.error is not None:
                log.warning("offset commit failed", topic=tp.topic, partition=tp.partition, error=str(tp.error))

    def _wait_for_promotions(self) -> None:
        # A new state must start from the promoted reference, not the configured one.
        while not self.promotions.caught_up.is_set() and not self._stopping.wait(0.05):
            pass

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        started = time.monotonic()
        self.runtimes.clear()
        self.saved = self._read_states({tp.partition for tp in partitions})
        started_models = self._start_models({tp.partition for tp in partitions})
        log.info("partitions assigned", partitions=sorted({tp.partition for tp in partitions}),
                 states=len(self.saved), models=started_models, seconds=round(time.monotonic() - started, 3))

    def _start_models(self, partitions: set[int]) -> int:
        """Builds the runtimes of the configured and saved models whose inputs are in
        `partitions` now, not at their first event: a batch is decoded by column only when
        every model in it has a runtime (`_column_decoders`), and a model's start (reading
        its reference, calibrating its detectors) falls in the start-up, not in a batch.
        A model that cannot start here is started again at its first event, whose
        handling (dead letters, logs) is the one of `_model_batch`."""
        topic = self.kafka.features_topic
        for model_id in sorted({*self.settings.models, *self.saved}):
            if self._murmur2_partition(model_id, topic) not in partitions:
                continue
            try:
                self._runtime(model_id)
            except Exception as error:
                self.runtimes.pop(model_id, None)
                log.warning("model not started at assignment: started again at its first event",
                            model_id=model_id, error=f"{type(error).__name__}: {error}")
        return len(self.runtimes)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The states are saved and flushed before the commit; if the commit fails the next
        # owner re-reads those events and its saved states skip them.
        try:
            self._save(asynchronous=False)
        except KafkaException as error:
            log.warning("commit at revocation failed", error=str(error))
        self.runtimes.clear()
        self._unsaved.clear()
        self._failed.clear()
        self._isolating.clear()
        self.saved = {}
        self._next_offsets.clear()
        self._saved_through.clear()

    def _read_states(self, partitions: set[int]) -> dict[str, bytes]:
        """The latest state per model in `partitions` of the (compacted) state topic."""
        topic, timeout = self.conf.state_topic, self.conf.state_read_timeout_seconds
        reader = Consumer({**self.kafka.client_config(), **librdkafka_callbacks("monitor-states", self.kafka.bootstrap_servers),
                           "group.id": self.conf.monitor_group_id + "-states",
                           "enable.auto.commit": False, "enable.partition.eof": True})
        try:
            ends = {}
            for partition in partitions:
                low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
                if high > low:
                    ends[partition] = high
            reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])  # compacted: low > 0
            states: dict[str, bytes] = {}
            deadline = time.monotonic() + timeout
            while ends:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"state topic {topic} not read to its end in {timeout} s")
                for message in reader.consume(10_000, timeout=1.0):
                    if message.error() is not None:
                        if message.error().code() != KafkaError._PARTITION_EOF:
                            raise RuntimeError(f"reading {topic}: {message.error()}")
                    else:
                        key = message.key().decode()
                        if message.value() is None:
                            states.pop(key, None)
                        else:
                            states[key] = message.value()
                    if message.offset() is not None and message.offset() >= ends.get(message.partition(), 0) - 1:
                        ends.pop(message.partition(), None)
            return states
        finally:
            reader.close()

    # -- one batch -----------------------------------------------------------------
    def _batch(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        kafka = self.kafka
        by_topic, next_offsets = self._records(messages)
        features, bad_features = decode_by_model(FeatureEvent, by_topic[kafka.features_topic], self._column_decoders())
        labelled, bad_labelled = decode_by_model(LabelledRecord, by_topic[kafka.labelled_topic])
        dead: list[DeadLetter] = bad_features.dead + bad_labelled.dead
        # Events, not records: a batch record counts its events.
        for topic, groups, bad in ((kafka.features_topic, features, bad_features),
                                   (kafka.labelled_topic, labelled, bad_labelled)):
            count = sum(map(len, groups.values())) + bad.events
            if count:
                self.metrics.events_consumed.labels(topic).inc(count)
        per_model: dict[str, dict[str, list]] = {
            model_id: {"features": features.get(model_id, []), "labelled": labelled.get(model_id, [])}
            for model_id in {**features, **labelled}}
        # Feature events all decoded by their key's ColumnDecoder: their records' keys and
        # partitions tell where each model's events were read (a few records, not every event).
        column_decoded = bad_features.by_column_decoders
        routes = _partitions_by_key(by_topic[kafka.features_topic]) if column_decoded else None
        firings: list[Firing] = []
        for model_id, items in per_model.items():
            dead.extend(self._check_routing(model_id, items, routes))
            if not (items["features"] or items["labelled"]):
                continue
            partition = (items["features"] or items["labelled"])[0][0].partition
            result = self._model_batch(model_id, items, column_decoded=column_decoded)
            firings.extend(result.firings)
            dead.extend(result.dead)
            if result.runtime is not None:
                self._unsaved[model_id] = (result.runtime, partition)
            # Its decoded events go now, while still in cache: freed all together at the
            # batch's end, 20,000 events cost about a tenth of the loop's CPU.
            for pairs in items.values():
                pairs.clear()
        self._publish(dead, firings)
        self._next_offsets.update(next_offsets)
        if self._failed:
            self._read_failed_again()
        elif self._save_now:  # what was set aside must not be set aside again after a re-read
            self._save(asynchronous=True)
        self.metrics.batch_seconds.labels("monitor").observe(time.perf_counter() - started)
        if not self._recovered:
            self._recovered = True
            seconds = time.monotonic() - self._started_at
            self.metrics.recovery_seconds.set(seconds)
            log.info("processing", seconds_since_start=round(seconds, 3))

    def _records(self, messages: list[Message]) -> tuple[dict[str, list[Record]], dict[tuple[str, int], int]]:
        """The batch's records per topic, and the next offset per input partition (to be
        committed once the batch is saved); built by C loops, as this runs for every event."""
        errors = list(map(Message.error, messages))
        if errors.count(None) != len(errors):
            for error in filter(None, errors):
                if error.fatal():  # e.g. a static member fenced: this consumer cannot go on
                    raise KafkaException(error)
                log.warning("consumer error", error=str(error))
            messages = [message for message, error in zip(messages, errors) if error is None]
        topics = list(map(Message.topic, messages))
        partitions = list(map(Message.partition, messages))
        offsets = list(map(Message.offset, messages))
        values = list(map(Message.value, messages))
        if None in values:  # a null value (tombstone) is not JSON: it goes to dead letters like any other
            values = [value or b"" for value in values]
        records = list(map(Record, topics, partitions, offsets, values, repeat(None), map(Message.key, messages)))
        by_topic: dict[str, list[Record]] = {topic: [] for topic in self.topics}
        # Within a partition the consumer hands records over in offset order: the last wins.
        if records and topics.count(topics[0]) == len(topics):  # one topic: the common case
            by_topic[topics[0]] = records
            last = dict(zip(partitions, offsets))  # int keys: no tuple per record
            return by_topic, {(topics[0], partition): offset + 1 for partition, offset in last.items()}
        for record in records:
            by_topic.setdefault(record.topic, []).append(record)
        return by_topic, dict(zip(zip(topics, partitions), map((1).__add__, offsets)))

    def _column_decoders(self) -> dict[bytes, ColumnDecoder]:
        """A `ColumnDecoder` per model with a live runtime, by record key (its model_id):
        the columns of the reference it compares against."""
        decoders = {}
        for model_id, runtime in self.runtimes.items():
            profile = runtime.monitor.profile
            decoders[model_id.encode()] = column_decoder(model_id, profile.numeric_columns,
                                                         profile.categorical_columns)
        return decoders

    def _check_routing(self, model_id: str, items: dict[str, list],
                       feature_routes: dict[bytes | None, set[int]] | None = None) -> list[DeadLetter]:
        """The topics' contract: keyed by model_id, partitioned by murmur2. An event whose
        record key is another (`key_mismatch`), or that sits in another partition than
        murmur2(model_id) (`wrong_partition`), is taken out and dead-lettered: the model's
        state lives with its murmur2 partition, and an event read elsewhere may be owned
        by another worker, so monitoring it would split the model into two states.
        `feature_routes` (feature events all decoded by their key's `ColumnDecoder`, so
        keyed right): the partitions of the feature records per key; when the model's are
        its murmur2 partition alone, its feature events need no look each."""
        key = model_id.encode()
        rejected = []
        for kind, pairs in items.items():
            if not pairs:
                continue
            if (kind == "features" and feature_routes is not None
                    and feature_routes.get(key) == {self._murmur2_partition(model_id, pairs[0][0].topic)}):
                continue
            records = list(map(_first, pairs))  # C loops: this runs for every event
            if list(map(_key, records)).count(key) != len(records):
                kept = []
                for record, event in pairs:
                    if record.key == key:
                        kept.append((record, event))
                    else:
                        shown = None if record.key is None else record.key[:200].decode("utf-8", "replace")
                        rejected.append((record, SchemaError(
                            "key_mismatch", f"record key {shown!r} is not the event's model_id {model_id!r}")))
                items[kind] = pairs = kept
                if not pairs:
                    continue
                records = list(map(_first, pairs))
            expected = self._murmur2_partition(model_id, records[0].topic)
            if list(map(_partition, records)).count(expected) != len(records):
                items[kind] = [pair for pair in pairs if pair[0].partition == expected]
                rejected.extend(self._misrouted_events(model_id, expected, pairs))
        return dead_letters(rejected)

    def _misrouted_events(self, model_id: str, expected: int,
                          pairs: list) -> list[tuple[Record, SchemaError]]:
        wrong = [record for record, _ in pairs if record.partition != expected]
        topic = wrong[0].topic
        self.metrics.partition_mismatch.labels(model_id, topic).inc(len(wrong))
        if (model_id, topic) not in self._misrouted:
            self._misrouted.add((model_id, topic))
            log.warning("events of a model outside its murmur2 partition are dead-lettered: its "
                        "producer must use the murmur2 partitioner (confluent-kafka: "
                        "partitioner=murmur2_random)", model_id=model_id, topic=topic,
                        expected_partition=expected, partition=wrong[0].partition)
        error = SchemaError("wrong_partition", f"model {model_id!r} belongs in partition {expected} of "
                            f"{topic!r} (murmur2 of its key); its producer must use the murmur2 partitioner")
        return [(record, error) for record in wrong]

    def _murmur2_partition(self, model_id: str, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            count = self._partition_counts[topic] = len(
                self.consumer.list_topics(topic, timeout=self.conf.output_timeout_seconds).topics[topic].partitions)
        return (murmur2(model_id.encode()) & 0x7FFFFFFF) % count

    def _model_batch(self, model_id: str, items: dict[str, list], *, column_decoded: bool = False) -> ModelResult:
        """One model's part of a batch. An exception (from the detectors or anywhere in
        the model's processing) does not stop the loop: the model goes back to its last
        saved state, its events since then are read again (`_read_failed_again`) and
        applied in halves, down to the single events that fail; those go to the
        dead-letter topic (reason `processing_error`) with their offsets, counted and
        logged. Every other event is counted as usual."""
        if self._isolated_now(model_id, items):
            return self._advance_isolating(model_id, items, column_decoded)
        try:
            return self._advance_model(model_id, items, isolate=False, column_decoded=column_decoded)
        except Exception as error:
            self.metrics.processing_errors.labels(model_id).inc()
            log.error("model batch failed: isolating the failing events", model_id=model_id,
                      inputs=_span(items), error=f"{type(error).__name__}: {error}", exc_info=error)
        self.runtimes.pop(model_id, None)  # half-applied: back to the last saved state
        self._unsaved.pop(model_id, None)
        failed = self._failed.setdefault(model_id, {})
        for pairs in items.values():
            if pairs:
                failed[(pairs[0][0].topic, pairs[0][0].partition)] = pairs[-1][0].offset
        return ModelResult(None, [], [])

    def _isolated_now(self, model_id: str, items: dict[str, list]) -> bool:
        """Whether these events of a model come before the end of a batch of it that failed;
        forgets the marks these events reach past."""
        through = self._isolating.get(model_id)
        if through is None:
            return False
        isolated = False
        for pairs in items.values():
            if pairs and pairs[0][0].topic in through:
                topic = pairs[0][0].topic
                isolated = isolated or pairs[0][0].offset <= through[topic]
                if pairs[-1][0].offset >= through[topic]:
                    del through[topic]
        if not through:
            del self._isolating[model_id]
        return isolated

    def _advance_isolating(self, model_id: str, items: dict[str, list], column_decoded: bool) -> ModelResult:
        self._save_now = True
        try:
            return self._advance_model(model_id, items, isolate=True, column_decoded=column_decoded)
        except Exception as error:  # the state cannot even be built (reference unreadable)
            self.runtimes.pop(model_id, None)
            log.error("model unavailable: its events go to dead letters", model_id=model_id,
                      inputs=_span(items), error=f"{type(error).__name__}: {error}", exc_info=error)
            return ModelResult(None, [], _all_dead(items, _processing_error(error)))

    def _read_failed_again(self) -> None:
        """The partitions of the models whose batch failed are read again from the offsets
        of the last saved states: those models start again from their saved state and
        apply their events through the failed batch in isolation. The other models' states
        are saved first, so they skip what they already hold (as after a restart)."""
        partitions = {tp for through in self._failed.values() for tp in through}
        for model_id, through in self._failed.items():
            isolating = self._isolating.setdefault(model_id, {})
            for (topic, _), offset in through.items():
                isolating[topic] = max(offset, isolating.get(topic, offset))
        self._failed.clear()
        starts = self._saved_offsets(partitions)
        for tp in partitions:
            self._next_offsets.pop(tp, None)
        self._next_offsets.update({tp: offset for tp, offset in starts.items() if offset >= 0})
        # The failed models left `_unsaved` (`_model_batch`): their saved states stay where
        # the re-reading starts.
        self._save(asynchronous=False)
        for (topic, partition), offset in starts.items():
            self.consumer.seek(TopicPartition(topic, partition, offset))
        log.info("reading again from the last saved states", partitions=sorted(starts.items()))

    def _saved_offsets(self, partitions: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Where the saved states of `partitions` end: the offsets committed with them, or
        (none in this assignment) the group's committed offset, or the beginning."""
        starts = {tp: self._saved_through[tp] for tp in partitions if tp in self._saved_through}
        unknown = [TopicPartition(t, p) for t, p in partitions if (t, p) not in starts]
        if unknown:
            for tp in self.consumer.committed(unknown, timeout=self.conf.output_timeout_seconds):
                starts[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        return starts

    def _advance_model(self, model_id: str, items: dict[str, list], *, isolate: bool,
                       column_decoded: bool = False) -> ModelResult:
        runtime = self._runtime(model_id)
        if runtime is None:
            error = SchemaError("unknown_model", f"model {model_id!r} is not configured")
            return ModelResult(None, [], _all_dead(items, error))
        self._maybe_rebaseline(model_id, runtime)
        if not column_decoded:  # a ColumnDecoder's events hold the reference's columns only
            self._drop_unknown_columns(model_id, runtime, items["features"])
        firings: list[Firing] = []
        dead: list[DeadLetter] = []
        for kind, apply in (("features", runtime.apply_features), ("labelled", runtime.apply_labelled)):
            unseen = runtime.unseen(items[kind])
            skipped = len(items[kind]) - len(unseen)
            if skipped:
                self.metrics.events_duplicate.labels(items[kind][0][0].topic).inc(skipped)
            if not unseen:
                continue
            fired, rejected = self._apply_isolating(runtime, apply, unseen) if isolate else apply(unseen)
            firings.extend(fired)
            if rejected:
                dead.extend(dead_letters(rejected))
                runtime.handled_through(unseen[-1][0])
        return ModelResult(runtime, firings, dead)

    def _drop_unknown_columns(self, model_id: str, runtime: ModelRuntime, items: list) -> None:
        """Counts (and logs once per column) the feature columns the model's reference
        does not know, and drops their values; a batch applied again (isolating a failure)
        finds them gone."""
        profile = runtime.monitor.profile
        known = frozenset((*profile.numeric_columns, *profile.categorical_columns))
        counts, new = self.unknown_columns.strip(model_id, known, list(map(itemgetter(1), items)))
        for column in new:
            if column == OTHER_COLUMNS:
                log.warning("more unknown feature columns than tracked: the rest are counted together",
                            model_id=model_id, column=column, tracked=UNKNOWN_COLUMN_NAMES)
            else:
                log.warning("feature column unknown to the model's reference: counted, its values dropped",
                            model_id=model_id, column=column)
        for column, events in counts.items():
            self.metrics.unknown_columns.labels(model_id, column).inc(events)

    def _apply_isolating(self, runtime: ModelRuntime, apply, items):
        saved = runtime.to_bytes()
        try:
            return apply(items)
        except Exception as error:
            runtime.reset_to(saved)
            if len(items) > 1:
                half = len(items) // 2
                fired, rejected = self._apply_isolating(runtime, apply, items[:half])
                more_fired, more_rejected = self._apply_isolating(runtime, apply, items[half:])
                return fired + more_fired, rejected + more_rejected
            record = items[0][0]
            log.error("event failed in the detectors: dead-lettered", model_id=runtime.state.model_id,
                      topic=record.topic, partition=record.partition, offset=record.offset,
                      error=f"{type(error).__name__}: {error}")
            return [], [(record, _processing_error(error))]

    # -- models ----------------------------------------------------------------------
    def _profile(self, model_id: str, reference: str | None) -> ReferenceProfile:
        """The configured reference (`reference` None) or a stored profile, read once."""
        key = (model_id, reference)
        profile = self._profiles.get(key)
        if profile is None:
            if reference is None:
                model = self.settings.models.get(model_id)
                if model is None:
                    raise ReferenceUnavailable(f"model {model_id!r} has no configured reference")
                profile = profile_from_settings(model, self.settings.detectors)
            else:
                profile = profile_from_store(self.settings.model_store_path, reference,
                                             tracking_uri=self.settings.mlflow.tracking_uri)
            self._profiles[key] = profile
        return profile

    def _runtime(self, model_id: str) -> ModelRuntime | None:
        runtime = self.runtimes.get(model_id)
        if runtime is None:
            saved = self.saved.get(model_id)
            runtime = self._restored(model_id, saved) if saved is not None else self._fresh(model_id)
            if runtime is not None:
                self.runtimes[model_id] = runtime
        return runtime

    def _restored(self, model_id: str, saved: bytes) -> ModelRuntime:
        config, model = self.settings.detectors, self.settings.models.get(model_id)
        state = decode_state(saved)
        profile = self._profile(model_id, state.reference)
        try:
            monitor = ModelMonitor.from_state(profile, state.monitor, config=config)
            runtime = ModelRuntime(state, monitor, **self._topic_names())
            log.info("state restored", model_id=model_id, events_seen=monitor.events_seen,
                     reference=state.reference or "configured")
        except StateError as error:
            # The reference file or the detector settings changed since it was saved.
            runtime = ModelRuntime(state, ModelMonitor(profile, config, model.task if model else profile.task),
                                   **self._topic_names())
            runtime.restart_monitor(runtime.monitor)
            self.metrics.state_discarded.labels(model_id).inc()
            log.warning("saved detector state does not fit the reference or the detector "
                        "settings: its windows restart", model_id=model_id, error=str(error))
        return runtime

    def _fresh(self, model_id: str) -> ModelRuntime | None:
        config, model = self.settings.detectors, self.settings.models.get(model_id)
        promoted = self.promotions.latest(model_id)
        if model is None and promoted is None:
            return None
        if promoted is not None:
            try:
                profile = self._profile(model_id, promoted.reference_profile)
                return ModelRuntime.fresh(
                    model_id, promoted.new_version or "promoted",
                    ModelMonitor(profile, config, model.task if model else profile.task),
                    reference=promoted.reference_profile, promotion_id=promoted.trigger_id,
                    **self._topic_names())
            except ReferenceUnavailable as error:
                if model is None:
                    raise
                self._promotion_failed(model_id, promoted, error)
        profile = self._profile(model_id, None)
        return ModelRuntime.fresh(model_id, "configured", ModelMonitor(profile, config, model.task),
                                  **self._topic_names())

    def _topic_names(self) -> dict[str, str]:
        return {"features_topic": self.kafka.features_topic, "labelled_topic": self.kafka.labelled_topic}

    def _maybe_rebaseline(self, model_id: str, runtime: ModelRuntime) -> None:
        """Applies the model's latest promotion once (the state records its trigger_id)."""
        promoted = self.promotions.latest(model_id)
        if promoted is None or promoted.trigger_id == runtime.state.promotion_id:
            return
        failed_at = self._promotion_failures.get(promoted.trigger_id)
        if failed_at is not None and time.monotonic() - failed_at < self.conf.promotion_retry_seconds:
            return
        try:
            profile = self._profile(model_id, promoted.reference_profile)
        except ReferenceUnavailable as error:
            self._promotion_failed(model_id, promoted, error)
            return
        self._promotion_failures.pop(promoted.trigger_id, None)
        watch = promotion_watch(promoted, runtime.monitor.task, self.settings.retrain.watch_rows,
                                self.settings.detectors)
        runtime.rebaseline(profile, promoted.new_version or "promoted", promoted.trigger_id,
                           promoted.reference_profile, watch)
        self.metrics.rebaselines.labels(model_id).inc()
        log.info("re-baselined", model_id=model_id, new_version=promoted.new_version,
                 fingerprint=profile.fingerprint, trigger_id=promoted.trigger_id,
                 reference_profile=promoted.reference_profile)

    def _promotion_failed(self, model_id: str, promoted, error: Exception) -> None:
        self._promotion_failures[promoted.trigger_id] = time.monotonic()
        self.metrics.rebaseline_failures.labels(model_id).inc()
        log.error("promotion not applied: monitoring goes on against the current reference; "
                  "retried later", model_id=model_id, trigger_id=promoted.trigger_id,
                  retry_seconds=self.conf.promotion_retry_seconds, error=str(error))

    # -- outputs ---------------------------------------------------------------------
    def _publish(self, dead: list[DeadLetter], firings: list[Firing]) -> None:
        """Dead letters and triggers, all acknowledged before the batch's states are
        saved: a crash in between publishes the same triggers (same trigger_id) again."""
        kafka, produced = self.kafka, False
        for letter in dead:
            self.metrics.events_invalid.labels(letter.reason).inc()
            self._produce(kafka.dead_letter_topic, encode(letter.bounded(kafka.dead_letter_max_original_bytes)),
                          key=letter_key(letter))
            produced = True
        for firing in firings:
            severity = firing.decision.severity
            if not at_least(severity, self.conf.min_severity):
                self.metrics.triggers_suppressed.labels(firing.model_id, severity).inc()
                continue
            request = retrain_request(firing)
            self._produce(kafka.retrain_requests_topic, encode(request), key=firing.model_id.encode())
            produced = True
            for trigger_type in request.decision.trigger_types:
                self.metrics.triggers.labels(firing.model_id, severity, trigger_type).inc()
            log.info("trigger", model_id=firing.model_id, trigger_id=firing.trigger_id,
                     severity=severity, types=request.decision.trigger_types,
                     columns=request.decision.columns)
        if produced:
            self._flush()

    def _save_when_due(self) -> None:
        if time.monotonic() >= self._save_due:
            self._save(asynchronous=True)

    def _save(self, *, asynchronous: bool) -> None:
        """The states of the models advanced since the last save, flushed, then the offsets
        processed so far committed; their gauges are set here too, not per batch. The
        interval starts at a save that has something to do: the first batch is saved at once."""
        if not self._unsaved and self._next_offsets == self._saved_through:
            return
        self._save_due = time.monotonic() + self.conf.commit_interval_seconds
        self._save_now = False
        written = False
        for model_id, (runtime, partition) in self._unsaved.items():
            self.metrics.record_snapshot(model_id, runtime.monitor.snapshot())
            if not runtime.dirty:
                continue
            data = runtime.to_bytes()
            self._produce(self.conf.state_topic, data, key=model_id.encode(), partition=partition)
            self.saved[model_id] = data
            runtime.dirty = False
            written = True
            self.metrics.state_bytes.labels(model_id).set(len(data))
        self._unsaved.clear()
        if written:
            self._flush()
        if self._next_offsets and self._next_offsets != self._saved_through:
            self._saved_through = dict(self._next_offsets)
            offsets = [TopicPartition(t, p, o) for (t, p), o in self._next_offsets.items()]
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)

    def _produce(self, topic: str, value: bytes, *, key: bytes | None = None, partition: int | None = None) -> None:
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=self._delivered, **extra)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.1)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._delivery_errors.append(f"{message.topic()}[{message.partition()}]: {error}")

    def _flush(self) -> None:
        left = self.producer.flush(self.conf.output_timeout_seconds)
        if left or self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            raise DeliveryFailed(f"{left} outputs unacknowledged, failures: {errors[:5]}")

    def _report_lag(self) -> None:
        """`driftline_consumer_lag_messages` per assigned input partition: the high
        watermark minus the next offset to process."""
        now = time.monotonic()
        if now < self._lag_due:
            return
        self._lag_due = now + self.conf.lag_interval_seconds
        try:
            lags = {}
            for tp in self.consumer.assignment():
                low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                done = self._next_offsets.get((tp.topic, tp.partition))
                if high >= 0:
                    lags[(tp.topic, str(tp.partition))] = max(0, high - (done if done is not None else low))
            self.metrics.set_consumer_lag(lags, source="monitor")
        except Exception as error:  # a metric must not stop the monitor
            log.warning("consumer lag not measured", error=f"{type(error).__name__}: {error}")


_first = itemgetter(0)
_key = attrgetter("key")
_partition = attrgetter("partition")
_key_partition = attrgetter("key", "partition")


def _partitions_by_key(records: list[Record]) -> dict[bytes | None, set[int]]:
    routes: dict[bytes | None, set[int]] = {}
    for key, partition in set(map(_key_partition, records)):
        routes.setdefault(key, set()).add(partition)
    return routes


def _processing_error(error: Exception) -> SchemaError:
    return SchemaError("processing_error", f"{type(error).__name__}: {error}"[:1000])


def _all_dead(items: dict[str, list], error: SchemaError) -> list[DeadLetter]:
    return dead_letters([(record, error) for kind in ("features", "labelled") for record, _ in items[kind]])


def _span(items: dict[str, list]) -> str:
    parts = []
    for kind in ("features", "labelled"):
        if items[kind]:
            first, last = items[kind][0][0], items[kind][-1][0]
            parts.append(f"{first.topic}[{first.partition}]:{first.offset}-{last.offset}")
    return ", ".join(parts)

