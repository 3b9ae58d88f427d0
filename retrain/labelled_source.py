"""Reads a trigger's recent labelled records back from the `labelled` topic, by the
partition offsets the monitor put in the trigger's window."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from retrain.errors import DataPreparationError
from schemas.logs import librdkafka_callbacks
from schemas.messages import LabelledRecord, SchemaError, TopicWindow, decode
from schemas.settings import KafkaSettings

POLL_SECONDS = 0.5


@dataclass
class LabelledRead:
    records: list[LabelledRecord] = field(default_factory=list)
    positions: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset) per record
    undecodable: int = 0  # dropped: not a valid labelled record
    other_models: int = 0  # skipped: another model's record in the same partition


def read_window(
    kafka: KafkaSettings, window: TopicWindow, model_id: str, group_id: str, timeout_seconds: float
) -> LabelledRead:
    """Every record of `window` (inclusive offsets) that still exists on the broker."""
    consumer = _consumer(kafka, group_id)
    try:
        starts, last_offsets = _still_on_broker(consumer, window, timeout_seconds)
        if not starts:
            return LabelledRead()
        consumer.assign(starts)
        return _read_to_last_offsets(consumer, window.topic, last_offsets, model_id, timeout_seconds)
    finally:
        consumer.close()


def _consumer(kafka: KafkaSettings, group_id: str) -> Consumer:
    return Consumer(
        {
            **kafka.client_config(),
            **librdkafka_callbacks("labelled-source", kafka.bootstrap_servers),
            "group.id": group_id,  # required by the client; nothing is ever committed with it
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",  # offsets removed by retention: read what is left
        }
    )


def _still_on_broker(
    consumer: Consumer, window: TopicWindow, timeout_seconds: float
) -> tuple[list[TopicPartition], dict[int, int]]:
    """The window's ranges cut to the broker's watermarks, since retention may have removed
    the oldest records and the newest may not exist: where each partition's read starts,
    and its last offset to read (partitions with nothing left are left out)."""
    starts: list[TopicPartition] = []
    last_offsets: dict[int, int] = {}
    for offset_range in window.ranges:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(window.topic, offset_range.partition), timeout=timeout_seconds
        )
        last = min(offset_range.end, high - 1)
        start = max(offset_range.start, low)
        if start <= last:
            last_offsets[offset_range.partition] = last
            starts.append(TopicPartition(window.topic, offset_range.partition, start))
    return starts, last_offsets


def _read_to_last_offsets(
    consumer: Consumer, topic: str, last_offsets: dict[int, int], model_id: str, timeout_seconds: float
) -> LabelledRead:
    """Polls until every partition has reached its last offset (`last_offsets`, emptied),
    skipping what lies past it: the partitions go on beyond the window."""
    result = LabelledRead()
    deadline = time.monotonic() + timeout_seconds
    while last_offsets:
        if time.monotonic() > deadline:
            raise DataPreparationError(f"reading {topic} timed out after {timeout_seconds:.0f} s")
        message = consumer.poll(POLL_SECONDS)
        if message is None:
            continue
        if message.error():
            raise KafkaException(message.error())
        partition, offset = message.partition(), message.offset()
        if partition not in last_offsets or offset > last_offsets[partition]:
            continue
        if offset == last_offsets[partition]:
            del last_offsets[partition]
        _add(result, message, model_id)
    return result


def _add(result: LabelledRead, message: Message, model_id: str) -> None:
    """Keeps the message's record if it is the model's; counts it otherwise."""
    try:
        record = decode(LabelledRecord, message.value())
    except SchemaError:
        result.undecodable += 1
        return
    if record.model_id == model_id:
        result.records.append(record)
        result.positions.append((message.partition(), message.offset()))
    else:
        result.other_models += 1
