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

from detectors import ModelMonitor, ReferenceProfile, StateError
from schemas.messages import (
    ActualEvent,
    DeadLetter,
    FeatureEvent,
    LabelledRecord,
    PredictionEvent,
    SchemaError,
    encode,
)
from streams.decoding import Decoded, Record, dead_letter, decode_record, decode_records
from streams.join import ExpiryIndex, Pending, decode_pending, encode_pending
from streams.kafka_clients import faust_credentials, output_producer
from streams.logs import get_logger
from streams.metrics import MonitorMetrics
from streams.model_state import Firing, ModelRuntime, decode_state
from streams.promotions import PromotionWatcher
from streams.references import ReferenceUnavailable, profile_from_settings, profile_from_store
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
        self.detector_config = settings.detectors
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
            consumer_max_fetch_size=conf.consumer_max_fetch_size,
            broker_max_poll_records=conf.max_poll_records,
            stream_buffer_maxsize=conf.stream_buffer_maxsize,
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
        self._profiles: dict[tuple[str, str | None], ReferenceProfile] = {}
        self._promotion_failures: dict[str, float] = {}  # trigger_id -> monotonic time
        self.expiry = ExpiryIndex(conf.join_ttl_seconds)
        self.expiry_stale = True
        self.recovered = False

        app.agent(self.monitor_inputs, name="monitor")(self._monitor_agent)
        app.agent(self.join_inputs, name="join")(self._join_agent)
        app.timer(conf.join_sweep_interval_seconds)(self._sweep_expired)
        app.timer(conf.lag_interval_seconds)(self._report_lag)
        self.input_topics = frozenset(
            (kafka.features_topic, kafka.labelled_topic, kafka.predictions_topic, kafka.actuals_topic))
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
            try:
                await self._monitor_batch(events)
            except Exception as error:
                await self._stop_on(error, "monitor", events)
                return
            self.metrics.batch_seconds.labels("monitor").observe(time.perf_counter() - started)
            self._mark_recovered()

    async def _stop_on(self, error: Exception, agent: str, events: Sequence[faust.types.EventT]) -> None:
        """Failures of one model are handled inside the batch; what reaches here is the
        output producer or the state table failing. faust would restart the agent with
        the batch un-acked (its offsets could never be committed again): stop the worker
        instead, loudly; a restart resumes from the committed offsets and saved state."""
        log.error("batch failed: stopping the worker", agent=agent, inputs=_span(events),
                  error=f"{type(error).__name__}: {error}", exc_info=error)
        await self.app.crash(error)

    def _mark_recovered(self) -> None:
        if not self.recovered:
            self.recovered = True
            seconds = time.monotonic() - self.started_at
            self.metrics.recovery_seconds.set(seconds)
            log.info("processing", seconds_since_start=round(seconds, 3))

    async def _monitor_batch(self, events: Sequence[faust.types.EventT]) -> None:
        kafka = self.kafka
        await self.outputs_ready.wait()
        await self.promotions.caught_up.wait()  # a new state starts from the promoted reference
        by_topic: dict[str, list[Record]] = defaultdict(list)
        for event in events:
            message = event.message
            by_topic[message.topic].append(Record(message.topic, message.partition, message.offset, event.value))
        features = decode_records(FeatureEvent, by_topic.get(kafka.features_topic, ()))
        labelled = decode_records(LabelledRecord, by_topic.get(kafka.labelled_topic, ()))
        dead: list[DeadLetter] = features.dead + labelled.dead
        # Events, not records: a batch record counts its events.
        if features.events:
            self.metrics.events_consumed.labels(kafka.features_topic).inc(features.events)
        if labelled.events:
            self.metrics.events_consumed.labels(kafka.labelled_topic).inc(labelled.events)
        for topic, records in by_topic.items():
            if topic not in (kafka.features_topic, kafka.labelled_topic):
                self.metrics.events_consumed.labels(topic).inc(len(records))
        # One model's events in order; an event's faust object names its partition.
        per_model: dict[str, dict[str, list]] = defaultdict(lambda: {"features": [], "labelled": []})
        for kind, decoded in (("features", features), ("labelled", labelled)):
            for record, message in decoded.valid:
                per_model[message.model_id][kind].append((record, message))
        event_by_offset = {(e.message.topic, e.message.partition, e.message.offset): e for e in events}
        last_event: dict[str, faust.types.EventT] = {}
        firings: list[Firing] = []
        for model_id, items in per_model.items():
            fired, rejected = await self._model_batch(model_id, items)
            firings.extend(fired)
            dead.extend(rejected)
            record = (items["labelled"] or items["features"])[-1][0]
            last_event[model_id] = event_by_offset[(record.topic, record.partition, record.offset)]
        await self._publish(dead, firings)
        self._save_states(last_event)

    async def _model_batch(
        self, model_id: str, items: dict[str, list]
    ) -> tuple[list[Firing], list[DeadLetter]]:
        """One model's part of a batch. An exception (from the detectors or anywhere in
        the model's processing) does not stop the agent: the model goes back to its last
        saved state and the batch is applied again in halves, down to the single events
        that fail; those go to the dead-letter topic (reason `processing_error`) with
        their offsets, counted and logged. Every other event is counted as usual."""
        try:
            return await self._advance_model(model_id, items, isolate=False)
        except Exception as error:
            self.metrics.processing_errors.labels(model_id).inc()
            log.error("model batch failed: isolating the failing events", model_id=model_id,
                      inputs=_span_items(items), error=f"{type(error).__name__}: {error}", exc_info=error)
        self.runtimes.pop(model_id, None)  # half-applied: back to the last saved state
        try:
            return await self._advance_model(model_id, items, isolate=True)
        except Exception as error:  # the state cannot even be built (reference unreadable)
            self.runtimes.pop(model_id, None)
            log.error("model unavailable: its events go to dead letters", model_id=model_id,
                      inputs=_span_items(items), error=f"{type(error).__name__}: {error}", exc_info=error)
            failure = _processing_error(error)
            return [], [_dead(record, failure) for kind in ("features", "labelled") for record, _ in items[kind]]

    async def _advance_model(
        self, model_id: str, items: dict[str, list], *, isolate: bool
    ) -> tuple[list[Firing], list[DeadLetter]]:
        runtime = await self._runtime(model_id)
        if runtime is None:
            error = SchemaError("unknown_model", f"model {model_id!r} is not configured")
            return [], [_dead(record, error) for kind in ("features", "labelled") for record, _ in items[kind]]
        await self._maybe_rebaseline(model_id, runtime)
        firings: list[Firing] = []
        dead: list[DeadLetter] = []
        for kind, apply in (("features", runtime.apply_features), ("labelled", runtime.apply_labelled)):
            unseen = runtime.unseen(items[kind])
            skipped = len(items[kind]) - len(unseen)
            if skipped:
                self.metrics.events_duplicate.labels(kind).inc(skipped)
            if not unseen:
                continue
            fired, rejected = self._apply_isolating(runtime, apply, unseen) if isolate else apply(unseen)
            firings.extend(fired)
            dead.extend(_dead(record, error) for record, error in rejected)
        self.metrics.record_snapshot(model_id, runtime.monitor.snapshot())
        return firings, dead

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

    async def _profile(self, model_id: str, reference: str | None) -> ReferenceProfile:
        """The configured reference (`reference` None) or a stored profile, read once."""
        key = (model_id, reference)
        profile = self._profiles.get(key)
        if profile is not None:
            return profile
        if reference is None:
            model = self.settings.models.get(model_id)
            if model is None:
                raise ReferenceUnavailable(f"model {model_id!r} has no configured reference")
            profile = await asyncio.to_thread(profile_from_settings, model, self.detector_config)
        else:
            profile = await asyncio.to_thread(profile_from_store, self.settings.model_store_path, reference)
        self._profiles[key] = profile
        return profile

    async def _runtime(self, model_id: str) -> ModelRuntime | None:
        runtime = self.runtimes.get(model_id)
        if runtime is not None:
            return runtime
        topics = dict(features_topic=self.kafka.features_topic, labelled_topic=self.kafka.labelled_topic)
        model = self.settings.models.get(model_id)
        saved = self.states.get(model_id.encode())
        if saved is not None:
            state = decode_state(saved)
            profile = await self._profile(model_id, state.reference)
            try:
                monitor = ModelMonitor.from_state(profile, state.monitor, config=self.detector_config)
                runtime = ModelRuntime(state, monitor, **topics)
                log.info("state restored", model_id=model_id, events_seen=monitor.events_seen,
                         reference=state.reference or "configured")
            except StateError as error:
                # The reference file or the detector settings changed since it was saved.
                monitor = ModelMonitor(profile, self.detector_config, model.task if model else profile.task)
                runtime = ModelRuntime(state, monitor, **topics)
                runtime.restart_monitor(monitor)
                self.metrics.state_discarded.labels(model_id).inc()
                log.warning("saved detector state does not fit the reference or the detector "
                            "settings: its windows restart", model_id=model_id, error=str(error))
        else:
            promoted = self.promotions.latest(model_id)
            if model is None and promoted is None:
                return None
            runtime = None
            if promoted is not None:
                try:
                    profile = await self._profile(model_id, promoted.reference_profile)
                    runtime = ModelRuntime.fresh(
                        model_id, promoted.new_version or "promoted",
                        ModelMonitor(profile, self.detector_config, model.task if model else profile.task),
                        reference=promoted.reference_profile, promotion_id=promoted.trigger_id, **topics)
                except ReferenceUnavailable as error:
                    if model is None:
                        raise
                    self._promotion_failed(model_id, promoted, error)
            if runtime is None:
                profile = await self._profile(model_id, None)
                runtime = ModelRuntime.fresh(
                    model_id, "configured", ModelMonitor(profile, self.detector_config, model.task), **topics)
        self.runtimes[model_id] = runtime
        return runtime

    async def _maybe_rebaseline(self, model_id: str, runtime: ModelRuntime) -> None:
        """Applies the model's latest promotion once (the state records its trigger_id)."""
        promoted = self.promotions.latest(model_id)
        if promoted is None or promoted.trigger_id == runtime.state.promotion_id:
            return
        failed_at = self._promotion_failures.get(promoted.trigger_id)
        if failed_at is not None and time.monotonic() - failed_at < self.conf.promotion_retry_seconds:
            return
        try:
            profile = await self._profile(model_id, promoted.reference_profile)
        except ReferenceUnavailable as error:
            self._promotion_failed(model_id, promoted, error)
            return
        self._promotion_failures.pop(promoted.trigger_id, None)
        runtime.rebaseline(profile, promoted.new_version or "promoted", promoted.trigger_id,
                           promoted.reference_profile)
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
            runtime = self.runtimes.get(model_id)
            if runtime is None or not runtime.dirty:
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
            try:
                await self._join_batch(events)
            except Exception as error:
                await self._stop_on(error, "join", events)
                return
            self.metrics.batch_seconds.labels("join").observe(time.perf_counter() - started)

    async def _join_batch(self, events: Sequence[faust.types.EventT]) -> None:
        await self.outputs_ready.wait()
        kafka, now = self.kafka, time.time()
        self._rebuild_expiry()
        dead: list[DeadLetter] = []
        sends = []
        for event, record, decoded in self._join_inputs(events, dead):
            message = event.message
            is_prediction = message.topic == kafka.predictions_topic
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

    def _join_inputs(self, events: Sequence[faust.types.EventT], dead: list[DeadLetter]):
        """(faust event, record, decoded message) of every valid event, in order; a
        batch record gives one per event. Invalid events and unknown models go to `dead`."""
        kafka = self.kafka
        for event in events:
            message = event.message
            record = Record(message.topic, message.partition, message.offset, event.value)
            is_prediction = message.topic == kafka.predictions_topic
            decoded: Decoded = Decoded()
            decode_record(PredictionEvent if is_prediction else ActualEvent, record, decoded)
            self.metrics.events_consumed.labels(message.topic).inc(decoded.events)
            dead.extend(decoded.dead)
            for item, message_ in decoded.valid:
                if not self._known(message_.model_id):
                    dead.append(_dead(item, SchemaError(
                        "unknown_model", f"model {message_.model_id!r} is not configured")))
                    continue
                yield event, item, message_

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


    # -- consumer lag --------------------------------------------------------------------
    async def _report_lag(self) -> None:
        """`driftline_consumer_lag_messages` per assigned input partition: the high
        watermark minus the group's committed offset (the fetch position until the
        first commit of this worker)."""
        try:
            consumer = self.app.consumer
            tps = sorted(tp for tp in consumer.assignment() if tp.topic in self.input_topics)
            highwaters = await consumer.highwaters(*tps) if tps else {}
            committed = self.app.monitor.tp_committed_offsets or {}
            lags: dict[tuple[str, str], float] = {}
            for tp in tps:
                done = committed.get(tp)
                if done is None:
                    done = await consumer.position(tp)
                end = highwaters.get(tp)
                if done is not None and end is not None:
                    lags[(tp.topic, str(tp.partition))] = max(0, end - done)
            self.metrics.set_consumer_lag(lags)
        except Exception as error:  # a metric must not stop the worker
            log.warning("consumer lag not measured", error=f"{type(error).__name__}: {error}")


def _processing_error(error: Exception) -> SchemaError:
    return SchemaError("processing_error", f"{type(error).__name__}: {error}"[:1000])


def _span(events: Sequence[faust.types.EventT]) -> str:
    """`topic[partition]:first-last, ...` of a batch, for logs."""
    ranges: dict[tuple[str, int], list[int]] = {}
    for event in events:
        message = event.message
        span = ranges.setdefault((message.topic, message.partition), [message.offset, message.offset])
        span[0], span[1] = min(span[0], message.offset), max(span[1], message.offset)
    return ", ".join(f"{t}[{p}]:{a}-{b}" for (t, p), (a, b) in sorted(ranges.items()))


def _span_items(items: dict[str, list]) -> str:
    parts = []
    for kind in ("features", "labelled"):
        if items[kind]:
            first, last = items[kind][0][0], items[kind][-1][0]
            parts.append(f"{first.topic}[{first.partition}]:{first.offset}-{last.offset}")
    return ", ".join(parts)


def _dead(record: Record, error: SchemaError) -> DeadLetter:
    return dead_letter(record, error)

