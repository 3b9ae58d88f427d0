"""The local broker delivers every message once and in order per partition, with both
clients driftline uses: confluent-kafka (retrainer, replay) and aiokafka (faust)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import aiokafka
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

MESSAGES = 10_000
PARTITIONS = 4
KEYS = [f"model-{i}".encode() for i in range(8)]
DEADLINE_SECONDS = 60

pytestmark = pytest.mark.services


def create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    futures[topic].result(timeout=30)


def produce(bootstrap: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for seq in range(MESSAGES):
        key = KEYS[seq % len(KEYS)]
        producer.produce(topic, key=key, value=str(seq).encode())
        producer.poll(0)
    assert producer.flush(30) == 0


def assert_once_and_in_order(received: list[tuple[int, bytes, int]]) -> None:
    """`received` holds (partition, key, sequence) in consumption order."""
    sequences = [seq for _, _, seq in received]
    assert sorted(sequences) == list(range(MESSAGES)), "a message was lost or duplicated"
    per_partition: dict[int, list[int]] = defaultdict(list)
    partition_of_key: dict[bytes, int] = {}
    for partition, key, seq in received:
        per_partition[partition].append(seq)
        assert partition_of_key.setdefault(key, partition) == partition
    for partition, seqs in per_partition.items():
        assert seqs == sorted(seqs), f"partition {partition} out of order"


def test_confluent_kafka_roundtrip(kafka_bootstrap: str, unique_name: str) -> None:
    create_topic(kafka_bootstrap, unique_name)
    produce(kafka_bootstrap, unique_name)
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": unique_name,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([unique_name])
    received: list[tuple[int, bytes, int]] = []
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        while len(received) < MESSAGES and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=1.0):
                assert message.error() is None, message.error()
                received.append((message.partition(), message.key(), int(message.value())))
    finally:
        consumer.close()
    assert_once_and_in_order(received)


def test_aiokafka_roundtrip(kafka_bootstrap: str, unique_name: str) -> None:
    create_topic(kafka_bootstrap, unique_name)

    async def roundtrip() -> list[tuple[int, bytes, int]]:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            batch = [
                producer.send(unique_name, key=KEYS[seq % len(KEYS)], value=str(seq).encode())
                for seq in range(MESSAGES)
            ]
            await asyncio.gather(*batch)
            await producer.flush()
        finally:
            await producer.stop()
        consumer = aiokafka.AIOKafkaConsumer(
            unique_name,
            bootstrap_servers=kafka_bootstrap,
            group_id=unique_name,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        received: list[tuple[int, bytes, int]] = []
        try:
            async with asyncio.timeout(DEADLINE_SECONDS):
                while len(received) < MESSAGES:
                    batches = await consumer.getmany(timeout_ms=1000, max_records=1000)
                    for tp, messages in batches.items():
                        received.extend((tp.partition, m.key, int(m.value)) for m in messages)
        finally:
            await consumer.stop()
        return received

    assert_once_and_in_order(asyncio.run(roundtrip()))
