"""The faust app of the streaming monitor: topics, tables and agents.

Two agents, each on co-partitioned topics keyed by `model_id` (so a model's events, its
state and its joins all live in the same partition number, and workers split models by
partition):

- `join` (predictions + actuals): keeps predictions in the `join-pending` table until
  their actual arrives (-> a `LabelledRecord` on the labelled topic, same partition) or
  the TTL expires them.
- `monitor` (features + labelled): micro-batches (`take_events(n, within)`) decoded in
  bulk into numpy and fed to the model's `ModelMonitor`; decisions at or above the
  minimum severity become `RetrainRequest`s.

Durability: one value per model in the `monitor-state` table (changelog topic) holds the
detectors and the last offset they include. Per micro-batch the agent publishes dead
letters and triggers (idempotent producer, acks=all, awaited), then writes the state,
and only then acks the batch (`take_events` acks when the next batch is requested);
faust commits acked offsets after flushing its producer, so the committed offset never
passes the saved state. A replay after `kill -9` therefore starts at or before the state
and skips what the state already holds (`ModelRuntime.unseen`).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from faust.streams import _current_event  # no public API to write a table "as" an event

from detectors import DetectorConfig, ModelMonitor
from schemas.messages import (
    ActualEvent,
    DeadLetter,
    FeatureEvent,
    LabelledRecord,
    PredictionEvent,
    SchemaError,
    decode,
    encode,
)
from streams.decoding import Record, decode_records
from streams.join import ExpiryIndex, Pending, decode_pending, encode_pending
from streams.kafka_clients import faust_credentials, output_producer
from streams.logs import get_logger
from streams.metrics import MonitorMetrics
from streams.model_state import Firing, ModelRuntime
from streams.promotions import PromotionWatcher
from streams.references import profile_from_settings, profile_from_store
from streams.settings import Settings
from streams.triggers import at_least, retrain_request

log = get_logger(__name__)


@contextmanager
def acting_as(event: faust.types.EventT):
    """Table writes go to the changelog partition of the current event; a batch agent
    has no current event, so name the one whose partition the key belongs to."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class MonitorApp:
    """Builds the faust app from the settings; `app.main()` / a `faust.Worker` runs it."""

    def __init__(self, settings: Settings, metrics: MonitorMetrics | None = None) -> None:
        self.settings = settings
        self.kafka = kafka = settings.kafka
        self.conf = conf = settings.monitor
        self.metrics = metrics or MonitorMetrics()
        self.detector_config = DetectorConfig.from_mapping(conf.detector)
        self.started_at = time.monotonic()
        self.app = app = faust.App(
            conf.app_id,
            broker=f"kafka://{kafka.bootstrap_servers.replace(',', ';kafka://')}",
            broker_credentials=faust_credentials(kafka),
            store="rocksdb://" if conf.store == "rocksdb" else "memory://",
            datadir=str(conf.data_dir),
            autodiscover=False,
            web_enabled=False,
            topic_partitions=conf.partitions,
            topic_replication_factor=conf.replication_factor,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=conf.commit_interval_seconds,
            broker_session_timeout=conf.broker_session_timeout_seconds,
            broker_heartbeat_interval=conf.broker_heartbeat_interval_seconds,
            producer_acks=-1,
            producer_max_request_size=conf.state_max_bytes,
            stream_wait_empty=True,
            table_standby_replicas=0,
        )
        topic = self._raw_topic
        self.monitor_inputs = topic(kafka.features_topic, kafka.labelled_topic)
        self.join_inputs = topic(kafka.predictions_topic, kafka.actuals_topic)
        table_options: dict[str, Any] = dict(
            key_type=bytes, value_type=bytes, partitions=conf.partitions,  # bytes: raw codec
        )
        self.states = app.Table(
            "monitor-state",
            **table_options,
            extra_topic_configs={"max.message.bytes": str(conf.state_max_bytes)},
        )
        self.pending = app.Table("join-pending", **table_options)
        self.producer: AIOKafkaProducer | None = None  # made in the worker's event loop
        self.outputs_ready = asyncio.Event()
        self.promotions = PromotionWatcher(kafka)
        self.runtimes: dict[str, ModelRuntime] = {}
        self.configured_profiles: dict[str, Any] = {}
        self.expiry = ExpiryIndex(conf.join_ttl_seconds)
        self.expiry_stale = True
        self.recovered = False

        app.agent(self.monitor_inputs, name="monitor")(self._monitor_agent)
        app.agent(self.join_inputs, name="join")(self._join_agent)
        app.timer(conf.join_sweep_interval_seconds)(self._sweep_expired)
        app.task(self._start_outputs)
        app.on_partitions_revoked.connect(self._on_rebalance)
        app.on_partitions_assigned.connect(self._on_rebalance)

    def _raw_topic(self, *names: str) -> faust.TopicT:
        return self.app.topic(
            *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    # -- lifecycle ---------------------------------------------------------------------
    async def _start_outputs(self) -> None:
        self.producer = output_producer(self.kafka, max_request_size=self.conf.state_max_bytes)
        await self.producer.start()
        self.outputs_ready.set()
        self.metrics.serve(self.conf.metrics_port)
        self.app.add_future(self._follow_promotions())
        log.info(
            "worker started",
            app_id=self.conf.app_id,
            bootstrap_servers=self.kafka.bootstrap_servers,
            security_protocol=self.kafka.security_protocol,
            models=sorted(self.settings.models),
        )

    async def _follow_promotions(self) -> None:
        try:
            await self.promotions.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Without promotions the monitor would keep comparing against an old
            # reference: stop the worker loudly rather than run on silently.
            log.exception("following retrain events failed")
            await self.app.crash(RuntimeError("promotion watcher failed"))

    async def _on_rebalance(self, *args: Any, **kwargs: Any) -> None:
        # The table holds every model's state as of its last batch (batches finish
        # before a rebalance: stream_wait_empty); drop the live copies so a partition
        # that comes back is read again from the recovered table.
        self.runtimes.clear()
        self.expiry_stale = True
        self.recovered = False

    # -- monitor agent -----------------------------------------------------------------
    async def _monitor_agent(self, stream: faust.StreamT) -> None:
        async for events in stream.take_events(self.conf.batch_size, within=self.conf.batch_within_seconds):
            started = time.perf_counter()
            await self._monitor_batch(events)
            self.metrics.batch_seconds.labels("monitor").observe(time.perf_counter() - started)
            self._mark_recovered()

    def _mark_recovered(self) -> None:
        if not self.recovered:
            self.recovered = True
            seconds = time.monotonic() - self.started_at
            self.metrics.recovery_seconds.set(seconds)
            log.info("processing", seconds_since_start=round(seconds, 3))

    async def _monitor_batch(self, events: Sequence[faust.types.EventT]) -> None:
        kafka = self.kafka
        await self.outputs_ready.wait()
        by_topic: dict[str, list[Record]] = defaultdict(list)
        last_event: dict[str, faust.types.EventT] = {}
        for event in events:
            message = event.message
            by_topic[message.topic].append(Record(message.topic, message.partition, message.offset, event.value))
        features = decode_records(FeatureEvent, by_topic.get(kafka.features_topic, ()))
        labelled = decode_records(LabelledRecord, by_topic.get(kafka.labelled_topic, ()))
        dead: list[DeadLetter] = features.dead + labelled.dead
        for topic, records in by_topic.items():
            self.metrics.events_consumed.labels(topic).inc(len(records))
        # One model's events in order; an event's faust object names its partition.
        per_model: dict[str, dict[str, list]] = defaultdict(lambda: {"features": [], "labelled": []})
        for kind, decoded in (("features", features), ("labelled", labelled)):
            for record, message in decoded.valid:
                per_model[message.model_id][kind].append((record, message))
        event_by_offset = {(e.message.topic, e.message.offset, e.message.partition): e for e in events}
        firings: list[Firing] = []
        for model_id, items in per_model.items():
            runtime = await self._runtime(model_id)
            if runtime is None:
                for record, _ in items["features"] + items["labelled"]:
                    dead.append(_dead(record, SchemaError("unknown_model", f"model {model_id!r} is not configured")))
                continue
            await self._maybe_rebaseline(model_id, runtime)
            for kind, apply in (("features", runtime.apply_features), ("labelled", runtime.apply_labelled)):
                unseen = runtime.unseen(items[kind])
                skipped = len(items[kind]) - len(unseen)
                if skipped:
                    self.metrics.events_duplicate.labels(kind).inc(skipped)
                if not unseen:
                    continue
                fired, rejected = apply(unseen)
                firings.extend(fired)
                dead.extend(_dead(record, error) for record, error in rejected)
                record = unseen[-1][0]
                last_event[model_id] = event_by_offset[(record.topic, record.offset, record.partition)]
            self.metrics.record_snapshot(model_id, runtime.monitor.snapshot())
        await self._publish(dead, firings)
        self._save_states(last_event)

    async def _runtime(self, model_id: str) -> ModelRuntime | None:
        runtime = self.runtimes.get(model_id)
        if runtime is not None:
            return runtime
        topics = dict(features_topic=self.kafka.features_topic, labelled_topic=self.kafka.labelled_topic)
        saved = self.states.get(model_id.encode())
        if saved is not None:
            runtime = ModelRuntime.from_bytes(saved, **topics)
            log.info("state restored", model_id=model_id, events_seen=runtime.monitor.events_seen)
        else:
            model = self.settings.models.get(model_id)
            promoted = self.promotions.latest(model_id)
            if model is None and promoted is None:
                return None
            if model is not None:
                profile = self.configured_profiles.get(model_id)
                if profile is None:
                    profile = await asyncio.to_thread(profile_from_settings, model, self.detector_config)
                    self.configured_profiles[model_id] = profile
                monitor = ModelMonitor(profile, self.detector_config, model.task)
                runtime = ModelRuntime.fresh(model_id, "configured", monitor, **topics)
            else:
                runtime = ModelRuntime.fresh(model_id, "unknown", await self._promoted_monitor(promoted), **topics)
        self.runtimes[model_id] = runtime
        return runtime

    async def _promoted_monitor(self, outcome) -> ModelMonitor:
        profile = await asyncio.to_thread(
            profile_from_store, self.settings.model_store_path, outcome.reference_profile
        )
        return ModelMonitor(profile, self.detector_config, profile.task)

    async def _maybe_rebaseline(self, model_id: str, runtime: ModelRuntime) -> None:
        promoted = self.promotions.latest(model_id)
        if promoted is None or promoted.trigger_id == runtime.state.promotion_id:
            return
        profile = await asyncio.to_thread(
            profile_from_store, self.settings.model_store_path, promoted.reference_profile
        )
        runtime.rebaseline(profile, promoted.new_version or "promoted", promoted.trigger_id)
        self.metrics.rebaselines.labels(model_id).inc()
        log.info("re-baselined", model_id=model_id, new_version=promoted.new_version,
                 fingerprint=profile.fingerprint, trigger_id=promoted.trigger_id)

    async def _publish(self, dead: list[DeadLetter], firings: list[Firing]) -> None:
        """Dead letters and triggers, all acknowledged before the batch's state is saved:
        a crash in between publishes the same triggers (same trigger_id) again."""
        kafka, sends = self.kafka, []
        for letter in dead:
            self.metrics.events_invalid.labels(letter.reason).inc()
            sends.append(await self.producer.send(kafka.dead_letter_topic, encode(letter)))
        for firing in firings:
            severity = firing.decision.severity
            if not at_least(severity, self.conf.min_severity):
                self.metrics.triggers_suppressed.labels(firing.model_id, severity).inc()
                continue
            request = retrain_request(firing)
            sends.append(await self.producer.send(
                kafka.retrain_requests_topic, encode(request), key=firing.model_id.encode()))
            for trigger_type in request.decision.trigger_types:
                self.metrics.triggers.labels(firing.model_id, severity, trigger_type).inc()
            log.info("trigger", model_id=firing.model_id, trigger_id=firing.trigger_id,
                     severity=severity, types=request.decision.trigger_types,
                     columns=request.decision.columns)
        if sends:
            await asyncio.gather(*sends)

    def _save_states(self, last_event: dict[str, faust.types.EventT]) -> None:
        for model_id, event in last_event.items():
            runtime = self.runtimes[model_id]
            if not runtime.dirty:
                continue
            data = runtime.to_bytes()
            with acting_as(event):
                self.states[model_id.encode()] = data
            runtime.dirty = False
            self.metrics.state_bytes.labels(model_id).set(len(data))

    # -- join agent --------------------------------------------------------------------
    async def _join_agent(self, stream: faust.StreamT) -> None:
        async for events in stream.take_events(self.conf.batch_size, within=self.conf.batch_within_seconds):
            started = time.perf_counter()
            await self._join_batch(events)
            self.metrics.batch_seconds.labels("join").observe(time.perf_counter() - started)

    async def _join_batch(self, events: Sequence[faust.types.EventT]) -> None:
        await self.outputs_ready.wait()
        kafka, now = self.kafka, time.time()
        self._rebuild_expiry()
        dead: list[DeadLetter] = []
        sends = []
        for event in events:
            message = event.message
            record = Record(message.topic, message.partition, message.offset, event.value)
            self.metrics.events_consumed.labels(message.topic).inc()
            is_prediction = message.topic == kafka.predictions_topic
            try:
                decoded = decode(PredictionEvent if is_prediction else ActualEvent, record.value)
                if not self._known(decoded.model_id):
                    raise SchemaError("unknown_model", f"model {decoded.model_id!r} is not configured")
            except SchemaError as error:
                dead.append(_dead(record, error))
                continue
            key = decoded.event_id.encode()
            self.expiry.observe(message.partition, decoded.timestamp)
            with acting_as(event):
                if is_prediction:
                    pending = Pending.of(decoded, message.partition, now)
                    self.pending[key] = encode_pending(pending)
                    self.expiry.add(decoded.event_id, pending)
                    continue
                stored = self.pending.get(key)
                if stored is None:
                    self.metrics.joins.labels("unmatched").inc()
                    continue
                del self.pending[key]
            pending = decode_pending(stored)
            self.metrics.joins.labels("matched").inc()
            sends.append(await self.producer.send(
                kafka.labelled_topic, encode(pending.labelled(decoded)),
                key=pending.model_id.encode(), partition=message.partition))
        for letter in dead:
            self.metrics.events_invalid.labels(letter.reason).inc()
            sends.append(await self.producer.send(kafka.dead_letter_topic, encode(letter)))
        if sends:
            await asyncio.gather(*sends)
        self._expire(now)

    def _known(self, model_id: str) -> bool:
        return model_id in self.settings.models or self.promotions.latest(model_id) is not None

    def _rebuild_expiry(self) -> None:
        if not self.expiry_stale:
            return
        self.expiry.clear()
        for key, value in self.pending.items():
            self.expiry.add(key.decode(), decode_pending(value))
        self.expiry_stale = False

    def _expire(self, now: float) -> None:
        expired = 0
        for event_id in self.expiry.due(now):
            key = event_id.encode()
            stored = self.pending.get(key)
            if stored is None:
                continue  # matched meanwhile
            # Outside an event: delete in the store and tombstone the entry's partition.
            del self.pending.data[key]
            self.pending.send_changelog(decode_pending(stored).partition, key, None, value_serializer="raw")
            expired += 1
        if expired:
            self.metrics.joins.labels("expired").inc(expired)

    async def _sweep_expired(self) -> None:
        if not self.expiry_stale:
            self._expire(time.time())
            self.metrics.pending_predictions.set(self.expiry.size())


def _dead(record: Record, error: SchemaError) -> DeadLetter:
    return DeadLetter.for_failure(
        error, topic=record.topic, partition=record.partition, offset=record.offset, original=record.value
    )

