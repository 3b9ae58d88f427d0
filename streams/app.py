"""The worker: the faust app that joins predictions with their actuals, and the
monitor loop (`streams/monitor_loop.py`) on a thread beside it.

- `join` agent (predictions + actuals, co-partitioned, keyed by `model_id`): whichever
  of a prediction and its actual comes first waits in the `join-pending` table until the
  other arrives (-> a `LabelledRecord` on the labelled topic, same partition) or the TTL
  expires it (`streams/join.py`).
- the monitor loop (features + labelled): micro-batches into each model's
  `ModelMonitor`; decisions at or above the minimum severity become `RetrainRequest`s.
- the promotion watcher (retrain events), shared by both; metrics on one endpoint.

Join table writes do not use faust's own changelog path: it queues the record in a
buffer whose flush before a commit gives up after 0.1 s without a send (faust 0.15.3,
`ProducerBuffer.flush_atmost`), so offsets could be committed past an entry the
changelog never received. The join updates the local store (`_store`) and sends the
changelog records with the output producer (`_send_change`), and the batch awaits them
before it is acked.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from faust.streams import _current_event  # no public API to write a table "as" an event

from schemas.messages import ActualEvent, DeadLetter, PredictionEvent, SchemaError, encode
from streams.decoding import Decoded, Record, dead_letter, decode_record, letter_key
from streams.join import (
    ExpiryIndex,
    InputCursor,
    Pending,
    cursor_key,
    decode_pending,
    encode_pending,
    is_cursor_key,
)
from streams.kafka_clients import GapProbe, faust_credentials, output_producer
from schemas.logs import get_logger
from streams.metrics import MonitorMetrics
from streams.monitor_loop import MonitorLoop
from streams.promotions import PromotionWatcher
from schemas.settings import Settings

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
            consumer_group_instance_id=settings.group_instance_id("join"),
            producer_acks=-1,
            producer_max_request_size=conf.state_max_bytes,
            stream_wait_empty=True,
            consumer_max_fetch_size=conf.consumer_max_fetch_size,
            broker_max_poll_records=conf.max_poll_records,
            stream_buffer_maxsize=conf.stream_buffer_maxsize,
            table_standby_replicas=0,
        )
        self.join_inputs = app.topic(kafka.predictions_topic, kafka.actuals_topic, key_type=bytes,
                                     value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.pending = app.Table("join-pending", key_type=bytes, value_type=bytes,  # bytes: raw codec
                                 partitions=conf.partitions)
        self.producer: AIOKafkaProducer | None = None  # made in the worker's event loop
        self.outputs_ready = asyncio.Event()
        self.promotions = PromotionWatcher(kafka)
        self.monitor = MonitorLoop(settings, self.metrics, self.promotions, on_fatal=self._monitor_failed)
        self._monitor_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the worker's, once it runs
        self.expiry = ExpiryIndex(conf.join_ttl_seconds)
        self.expiry_stale = True
        self.cursor = InputCursor()
        self.gap_probe = GapProbe(kafka)

        app.agent(self.join_inputs, name="join")(self._join_agent)
        app.timer(conf.join_sweep_interval_seconds)(self._sweep_expired)
        app.timer(conf.lag_interval_seconds)(self._report_lag)
        self.input_topics = frozenset((kafka.predictions_topic, kafka.actuals_topic))
        app.task(self._start_outputs)
        app.on_partitions_revoked.connect(self._on_rebalance)
        app.on_partitions_assigned.connect(self._on_rebalance)
        app.on_before_shutdown.connect(self._stop_monitor)

    # -- lifecycle ---------------------------------------------------------------------
    async def _start_outputs(self) -> None:
        self.producer = output_producer(self.kafka, max_request_size=self.conf.state_max_bytes)
        await self.producer.start()
        self.outputs_ready.set()
        self.metrics.serve(self.conf.metrics_port)
        self.app.add_future(self._follow_promotions())
        self._loop = asyncio.get_running_loop()
        self._monitor_thread = threading.Thread(target=self.monitor.run, name="monitor", daemon=True)
        self._monitor_thread.start()
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

    def _monitor_failed(self, error: BaseException) -> None:
        """From the monitor's thread: its failure stops the worker (a restart resumes
        from the committed offsets and the saved states)."""
        asyncio.run_coroutine_threadsafe(self.app.crash(error), self._loop)

    async def _stop_monitor(self, *args: Any, **kwargs: Any) -> None:
        self.monitor.stop()
        if self._monitor_thread is not None:
            await asyncio.to_thread(self._monitor_thread.join)
        self.gap_probe.close()

    async def _on_rebalance(self, *args: Any, **kwargs: Any) -> None:
        self.expiry_stale = True  # the pending table changed hands: index it again
        self.cursor.reset()

    async def _stop_on(self, error: Exception, agent: str, events: Sequence[faust.types.EventT]) -> None:
        """What reaches here is the output producer or the table failing. faust would
        restart the agent with the batch un-acked (its offsets could never be committed
        again): stop the worker instead, loudly; a restart resumes from the committed
        offsets and the saved table."""
        log.error("batch failed: stopping the worker", agent=agent, inputs=_span(events),
                  error=f"{type(error).__name__}: {error}", exc_info=error)
        await self.app.crash(error)

    @staticmethod
    def _store(table: faust.types.CollectionT, event: faust.types.EventT, key: bytes,
               value: bytes | None) -> tuple[int, bytes, bytes | None]:
        """Sets (`value` None: deletes) `key` in the local store of the event's partition;
        returns the change, for `_send_change` once the batch's outputs are acknowledged."""
        with acting_as(event):
            if value is None:
                table.data.pop(key, None)
            else:
                table.data[key] = value
        return event.message.partition, key, value

    async def _send_change(self, table: faust.types.CollectionT, partition: int, key: bytes,
                           value: bytes | None) -> asyncio.Future:
        """Sends a change of the table to its changelog with the output producer; the
        delivery future is for the batch to await before it is acked (why not faust's
        own changelog path: the module's docstring)."""
        return await self.producer.send(table.changelog_topic.get_topic_name(), value, key=key, partition=partition)

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
        """Outputs (labelled records, dead letters) are acknowledged before the table's
        changes are sent: a crash in between repeats a match (a duplicate labelled
        record) rather than losing it (a prediction deleted, its labelled record not sent)."""
        await self.outputs_ready.wait()
        kafka, now = self.kafka, time.time()
        self._rebuild_expiry()
        dead: list[DeadLetter] = []
        outputs, changes = [], []  # changes: (partition, key, value), already in the local store
        events, last_events = await self._admitted(events)
        for event, _, decoded in self._join_inputs(events, dead):
            partition = event.message.partition
            key = decoded.event_id.encode()
            self.expiry.observe(partition, decoded.timestamp)
            arrived = Pending.of(decoded, partition, now)
            with acting_as(event):
                stored = self.pending.get(key)
            waiting = decode_pending(stored) if stored is not None else None
            if waiting is None or not waiting.completes(arrived):
                # First of the pair (or a repeat of the waiting side, which replaces it).
                changes.append(self._store(self.pending, event, key, encode_pending(arrived)))
                self.expiry.add(decoded.event_id, arrived)
                continue
            changes.append(self._store(self.pending, event, key, None))
            self.expiry.matched(decoded.event_id)
            self.metrics.joins.labels("matched").inc()
            outputs.append(await self.producer.send(
                kafka.labelled_topic, encode(waiting.labelled(arrived, decoded.event_id)),
                key=decoded.model_id.encode(), partition=partition))
        for letter in dead:
            self.metrics.events_invalid.labels(letter.reason).inc()
            outputs.append(await self.producer.send(
                kafka.dead_letter_topic, encode(letter.bounded(kafka.dead_letter_max_original_bytes)),
                key=letter_key(letter)))
        if outputs:
            await asyncio.gather(*outputs)
        for (topic, partition), event in last_events.items():
            position = str(self.cursor.next[(topic, partition)]).encode()
            changes.append(self._store(self.pending, event, cursor_key(topic, partition), position))
        sends = [await self._send_change(self.pending, *change) for change in changes]
        sends.extend(await self._expire(now))
        if sends:
            await asyncio.gather(*sends)

    async def _admitted(self, events: Sequence[faust.types.EventT]):
        """The events to process (see `InputCursor`), and the last of them per partition;
        a partition found to have skipped records is sought back to the first of them."""
        admitted, last = [], {}
        sought: set[tuple[str, int]] = set()
        for event in events:
            message = event.message
            tp = (message.topic, message.partition)

            def saved() -> int | None:
                with acting_as(event):
                    value = self.pending.get(cursor_key(*tp))
                return int(value) if value is not None else None

            verdict = self.cursor.admit(tp, message.offset, saved)
            if verdict == InputCursor.GAP:
                expected = self.cursor.next[tp]
                first = await asyncio.to_thread(self.gap_probe.first_offset, *tp, expected)
                verdict = self.cursor.gap_checked(tp, message.offset, first)
                if verdict == InputCursor.SKIP:
                    log.warning("records skipped by the consumer: seeking back", topic=tp[0], partition=tp[1],
                                expected=expected, first_record=first, handed_over=message.offset)
            if verdict == InputCursor.SKIP and self.cursor.awaiting(tp) and tp not in sought:
                # Once per batch while records ahead still come: faust drops a re-fetched
                # record if the fetch under way when it was sought handed over a later one.
                sought.add(tp)
                await self.app.consumer.seek_wait({faust.types.TP(*tp): self.cursor.next[tp]})
            if verdict == InputCursor.PROCESS:
                admitted.append(event)
                last[tp] = event
            else:
                self.metrics.events_duplicate.labels(tp[0]).inc()
        return admitted, last

    def _join_inputs(self, events: Sequence[faust.types.EventT], dead: list[DeadLetter]):
        """(faust event, record, decoded message) of every valid event, in order; a
        batch record gives one per event. Invalid events and unknown models go to `dead`."""
        kafka = self.kafka
        for event in events:
            message = event.message
            record = Record(message.topic, message.partition, message.offset, event.value, None, event.key)
            is_prediction = message.topic == kafka.predictions_topic
            decoded: Decoded = Decoded()
            decode_record(PredictionEvent if is_prediction else ActualEvent, record, decoded)
            self.metrics.events_consumed.labels(message.topic).inc(decoded.events)
            dead.extend(decoded.dead)
            for item, message_ in decoded.valid:
                if not self._known(message_.model_id):
                    dead.append(dead_letter(item, SchemaError(
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
            if not is_cursor_key(key):
                self.expiry.add(key.decode(), decode_pending(value))
        self.expiry_stale = False

    async def _expire(self, now: float) -> list[asyncio.Future]:
        """Deletes the entries whose TTL passed, counted as `expired` (a prediction that
        never got its actual) or `unmatched` (an actual that never got its prediction);
        returns the tombstones' deliveries."""
        deletes = []
        for event_id in list(self.expiry.due(now)):  # the heaps stay consistent across the awaits
            key = event_id.encode()
            stored = self.pending.data.get(key)
            if stored is None:
                continue  # matched meanwhile
            waiting = decode_pending(stored)
            self.pending.data.pop(key, None)  # outside an event: looked up in every partition
            deletes.append(await self._send_change(self.pending, waiting.partition, key, None))
            self.metrics.joins.labels("expired" if waiting.side == "prediction" else "unmatched").inc()
        return deletes

    async def _sweep_expired(self) -> None:
        if not self.expiry_stale:
            deletes = await self._expire(time.time())
            if deletes:
                await asyncio.gather(*deletes)
            self.metrics.join_waiting.set(self.expiry.size())

    # -- consumer lag --------------------------------------------------------------------
    async def _report_lag(self) -> None:
        """`driftline_consumer_lag_messages` per assigned input partition: the high
        watermark minus the group's committed offset (the fetch position until the
        first commit of this worker). Bounded by the interval: while the broker is away
        the metric keeps its last value instead of stacking up calls."""
        try:
            await asyncio.wait_for(self._measure_lag(), timeout=self.conf.lag_interval_seconds)
        except Exception as error:  # a metric must not stop the worker
            log.warning("consumer lag not measured", error=f"{type(error).__name__}: {error}")

    async def _measure_lag(self) -> None:
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
        self.metrics.set_consumer_lag(lags, source="join")


def _span(events: Sequence[faust.types.EventT]) -> str:
    """`topic[partition]:first-last, ...` of a batch, for logs."""
    ranges: dict[tuple[str, int], list[int]] = {}
    for event in events:
        message = event.message
        span = ranges.setdefault((message.topic, message.partition), [message.offset, message.offset])
        span[0], span[1] = min(span[0], message.offset), max(span[1], message.offset)
    return ", ".join(f"{t}[{p}]:{a}-{b}" for (t, p), (a, b) in sorted(ranges.items()))
