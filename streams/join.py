"""Predictions waiting for their actual: what is kept, and when it expires.

The pending predictions themselves live in a faust table keyed by `event_id` (durable
through its changelog); this module holds the value stored there and the in-memory
expiry index over it, rebuilt from the table after a restart or a rebalance. A
prediction expires when the partition's event time has moved past its own by the TTL,
or when it has waited the TTL in wall-clock time (an idle stream releases it too).
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterable

import msgspec

from schemas.messages import ActualEvent, FeatureValue, Label, LabelledRecord, PredictionEvent


class Pending(msgspec.Struct, kw_only=True, array_like=True):
    model_id: str
    model_version: str
    partition: int
    prediction: Label
    features: dict[str, FeatureValue] | None
    timestamp: dt.datetime
    received_at: float  # wall-clock seconds when the prediction arrived

    @classmethod
    def of(cls, event: PredictionEvent, partition: int, now: float) -> Pending:
        return cls(
            model_id=event.model_id,
            model_version=event.model_version,
            partition=partition,
            prediction=event.prediction,
            features=event.features,
            timestamp=event.timestamp,
            received_at=now,
        )

    def labelled(self, actual: ActualEvent) -> LabelledRecord:
        return LabelledRecord(
            model_id=self.model_id,
            model_version=self.model_version,
            event_id=actual.event_id,
            timestamp=self.timestamp,
            prediction=self.prediction,
            actual=actual.actual,
            actual_timestamp=actual.timestamp,
            features=self.features or {},
        )


encode_pending = msgspec.msgpack.Encoder().encode
decode_pending = msgspec.msgpack.Decoder(Pending).decode


class ExpiryIndex:
    """Two heaps (event-time and wall-clock deadlines); stale entries are skipped lazily."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._by_event_time: list[tuple[float, str]] = []
        self._by_arrival: list[tuple[float, str]] = []
        self._watermark: dict[int, float] = {}

    def add(self, event_id: str, pending: Pending) -> None:
        heapq.heappush(self._by_event_time, (pending.timestamp.timestamp(), event_id))
        heapq.heappush(self._by_arrival, (pending.received_at, event_id))

    def observe(self, partition: int, event_time: dt.datetime) -> None:
        seconds = event_time.timestamp()
        if seconds > self._watermark.get(partition, float("-inf")):
            self._watermark[partition] = seconds

    def due(self, now: float) -> Iterable[str]:
        """Event ids whose deadline passed (may include ids matched since: check)."""
        # The event-time heap is global; an entry is due when the lowest watermark of
        # the partitions seen has passed it, so a slow partition never expires early.
        watermark = min(self._watermark.values(), default=float("-inf"))
        while self._by_event_time and self._by_event_time[0][0] + self.ttl < watermark:
            yield heapq.heappop(self._by_event_time)[1]
        while self._by_arrival and self._by_arrival[0][0] + self.ttl < now:
            yield heapq.heappop(self._by_arrival)[1]

    def size(self) -> int:
        """Upper bound of the pending predictions (entries not yet popped)."""
        return len(self._by_arrival)

    def clear(self) -> None:
        self._by_event_time.clear()
        self._by_arrival.clear()
        self._watermark.clear()
