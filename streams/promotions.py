"""Every worker follows all of `retrain-events` (a small topic) to know each model's
promoted version, whatever partitions of the inference topics it owns.

A plain aiokafka consumer without a group, from the beginning: after a restart it reads
the history again, so the latest promotion per model is always known without a state of
its own; the per-model state records which promotion it has applied.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.messages import RetrainOutcome, SchemaError, decode
from streams.kafka_clients import aiokafka_security
from streams.logs import get_logger
from streams.settings import KafkaSettings

log = get_logger(__name__)


class PromotionWatcher:
    def __init__(self, kafka: KafkaSettings, *, poll_timeout_seconds: float = 0.5) -> None:
        self._kafka = kafka
        self._poll_timeout_ms = int(poll_timeout_seconds * 1000)
        self._latest: dict[str, RetrainOutcome] = {}
        self.caught_up = asyncio.Event()

    def latest(self, model_id: str) -> RetrainOutcome | None:
        return self._latest.get(model_id)

    async def run(self) -> None:
        topic = self._kafka.retrain_events_topic
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._kafka.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **aiokafka_security(self._kafka),
        )
        await consumer.start()
        try:
            partitions: set[int] = set()
            while not partitions:  # until the topic exists
                await consumer.topics()  # refreshes metadata of all topics
                partitions = consumer.partitions_for_topic(topic) or set()
                if not partitions:
                    await asyncio.sleep(self._poll_timeout_ms / 1000)
            assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            end = await consumer.end_offsets(assigned)
            while True:
                batches = await consumer.getmany(timeout_ms=self._poll_timeout_ms)
                for records in batches.values():
                    for record in records:
                        self._apply(record.value or b"")
                if not self.caught_up.is_set() and all(
                    await asyncio.gather(*(_position_reached(consumer, tp, end[tp]) for tp in assigned))
                ):
                    self.caught_up.set()
        finally:
            await consumer.stop()

    def _apply(self, value: bytes) -> None:
        try:
            outcome = decode(RetrainOutcome, value)
        except SchemaError as error:
            log.warning("retrain event ignored", reason=error.reason, detail=error.detail)
            return
        if outcome.outcome == "promoted" and outcome.reference_profile:
            self._latest[outcome.model_id] = outcome
            log.info(
                "promotion seen",
                model_id=outcome.model_id,
                new_version=outcome.new_version,
                trigger_id=outcome.trigger_id,
            )


async def _position_reached(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
    return await consumer.position(tp) >= end
