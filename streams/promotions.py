"""Every worker follows all of `retrain-events` (a small topic) to know each model's
promoted version (a promotion, or a rollback after a promotion's regression), whatever
partitions of the inference topics it owns.

A plain aiokafka consumer without a group, subscribed to the topic (without a group,
aiokafka assigns it every partition, new ones included) and reading from the beginning:
after a restart it reads the history again, so the latest promotion per model is always
known without a state of its own. The per-model monitor state records which promotion it
has applied (its `trigger_id`) and where its reference profile is, so a promotion is
applied once, and a restored state keeps its reference even when the topic's retention
has dropped the promotion. `caught_up` is set once the history present at start has been
read: the monitor waits for it before its first batch.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.messages import RetrainOutcome, SchemaError, decode
from streams.kafka_clients import aiokafka_security
from schemas.logs import get_logger
from schemas.settings import KafkaSettings

log = get_logger(__name__)

# Outcomes that change the serving version: the monitor re-baselines on its profile.
SERVING_CHANGED = ("promoted", "rolled_back")


class PromotionWatcher:
    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        poll_timeout_seconds: float = 0.5,
        metadata_max_age_seconds: float = 10.0,
    ) -> None:
        self._kafka = kafka
        self._poll_timeout_ms = int(poll_timeout_seconds * 1000)
        self._metadata_max_age_ms = int(metadata_max_age_seconds * 1000)
        self._latest: dict[str, RetrainOutcome] = {}
        self._end: dict[TopicPartition, int] | None = None
        self.caught_up = asyncio.Event()

    def latest(self, model_id: str) -> RetrainOutcome | None:
        return self._latest.get(model_id)

    async def run(self) -> None:
        topic = self._kafka.retrain_events_topic
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._kafka.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=self._metadata_max_age_ms,
            **aiokafka_security(self._kafka),
        )
        await consumer.start()
        try:
            if topic not in await consumer.topics():
                self._caught_up(topic)  # nothing promoted yet; records are read as they come
            consumer.subscribe([topic])
            while True:
                batches = await consumer.getmany(timeout_ms=self._poll_timeout_ms)
                for records in batches.values():
                    for record in records:
                        self._apply(record.value or b"", record.partition, record.offset)
                if not self.caught_up.is_set() and await self._reached_end(consumer, topic):
                    self._caught_up(topic)
        finally:
            await consumer.stop()

    def _caught_up(self, topic: str) -> None:
        self.caught_up.set()
        log.info("retrain events read", topic=topic, promoted_models=len(self._latest))

    async def _reached_end(self, consumer: AIOKafkaConsumer, topic: str) -> bool:
        """Whether every record present when we started has been read."""
        if self._end is None:
            partitions = consumer.partitions_for_topic(topic)
            assigned = consumer.assignment()
            if not partitions or {tp.partition for tp in assigned} != partitions:
                return False  # the assignment follows the metadata on the next poll
            self._end = await consumer.end_offsets(sorted(assigned))
        for tp, end in self._end.items():
            if await consumer.position(tp) < end:
                return False
        return True

    def _apply(self, value: bytes, partition: int, offset: int) -> None:
        try:
            outcome = decode(RetrainOutcome, value)
        except SchemaError as error:
            log.warning("retrain event ignored", reason=error.reason, detail=error.detail,
                        partition=partition, offset=offset)
            return
        if outcome.outcome not in SERVING_CHANGED:
            return
        if not outcome.reference_profile:
            log.warning("promotion without a reference profile ignored", model_id=outcome.model_id,
                        trigger_id=outcome.trigger_id, partition=partition, offset=offset)
            return
        # Outcomes are keyed by model_id: one model's promotions are in one partition,
        # in order, so the last one read is the current one.
        self._latest[outcome.model_id] = outcome
        log.info(
            "promotion seen",
            model_id=outcome.model_id,
            new_version=outcome.new_version,
            trigger_id=outcome.trigger_id,
            reference_profile=outcome.reference_profile,
        )
