"""Reads a trigger's recent labelled records back from the `labelled` topic, by the
partition offsets the monitor put in the trigger's window."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, TopicPartition

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
    consumer = Consumer(
        {
            **kafka.client_config(),
            **librdkafka_callbacks("labelled-source"),
            "group.id": group_id,  # required by the client; nothing is ever committed with it
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",  # offsets removed by retention: read what is left
        }
    )
    result = LabelledRead()
    try:
        remaining: dict[int, int] = {}  # partition -> last offset still to read
        starts = []
        for offset_range in window.ranges:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(window.topic, offset_range.partition), timeout=timeout_seconds
            )
            last = min(offset_range.end, high - 1)
            start = max(offset_range.start, low)
            if start <= last:
                remaining[offset_range.partition] = last
                starts.append(TopicPartition(window.topic, offset_range.partition, start))
        if not starts:
            return result
        consumer.assign(starts)
        deadline = time.monotonic() + timeout_seconds
        while remaining:
            if time.monotonic() > deadline:
                raise DataPreparationError(f"reading {window.topic} timed out after {timeout_seconds:.0f} s")
            message = consumer.poll(POLL_SECONDS)
            if message is None:
                continue
            if message.error():
                raise KafkaException(message.error())
            partition, offset = message.partition(), message.offset()
            if partition not in remaining or offset > remaining[partition]:
                continue
            if offset == remaining[partition]:
                del remaining[partition]
            try:
                record = decode(LabelledRecord, message.value())
            except SchemaError:
                result.undecodable += 1
                continue
            if record.model_id == model_id:
                result.records.append(record)
                result.positions.append((partition, offset))
            else:
                result.other_models += 1
        return result
    finally:
        consumer.close()
