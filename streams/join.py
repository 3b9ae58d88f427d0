"""One side of a prediction/actual join waiting for the other: what is kept, and when it
expires.

Either side can come first: an actual is normally late, but a worker catching up on a
backlog reads the two topics at their own pace, and the actuals topic may run ahead (an
actual dropped for want of its prediction was a lost labelled record). So whichever
arrives first waits in a faust table keyed by `event_id` (durable through its
changelog), and the other completes it. This module holds the value stored there and the
in-memory expiry index over it, rebuilt from the table after a restart or a rebalance.
An entry expires when the partition's event time has moved past its own by the TTL, or
when it has waited the TTL in wall-clock time (an idle stream releases it too).
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Callable, Iterable
from typing import Literal

import msgspec

from schemas.messages import ActualEvent, FeatureValue, Label, LabelledRecord, PredictionEvent, Scores


class Pending(msgspec.Struct, kw_only=True, array_like=True):
    side: Literal["prediction", "actual"]
    model_id: str
    model_version: str
    partition: int
    value: Label  # the prediction or the actual
    features: dict[str, FeatureValue] | None  # a prediction's
    timestamp: dt.datetime  # the side's own event time
    received_at: float  # wall-clock seconds when it arrived
    scores: Scores | None = None  # a prediction's (last: pendings stored before it decode)

    @classmethod
    def of(cls, event: PredictionEvent | ActualEvent, partition: int, now: float) -> Pending:
        is_prediction = isinstance(event, PredictionEvent)
        return cls(
            side="prediction" if is_prediction else "actual",
            model_id=event.model_id,
            model_version=event.model_version,
            partition=partition,
            value=event.prediction if is_prediction else event.actual,
            features=event.features if is_prediction else None,
            timestamp=event.timestamp,
            received_at=now,
            scores=event.scores if is_prediction else None,
        )

    def completes(self, other: Pending) -> bool:
        return self.side != other.side

    def labelled(self, other: Pending, event_id: str) -> LabelledRecord:
        """The joined record of this side and the other (either order)."""
        prediction, actual = (self, other) if self.side == "prediction" else (other, self)
        return LabelledRecord(
            model_id=prediction.model_id,
            model_version=prediction.model_version,
            event_id=event_id,
            timestamp=prediction.timestamp,
            prediction=prediction.value,
            actual=actual.value,
            actual_timestamp=actual.timestamp,
            features=prediction.features or {},
            scores=prediction.scores,
        )


encode_pending = msgspec.msgpack.Encoder().encode
decode_pending = msgspec.msgpack.Decoder(Pending).decode


class ExpiryIndex:
    """Two heaps (event-time and wall-clock deadlines) and the set of ids still waiting;
    the heaps' entries of matched ids are skipped lazily."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._by_event_time: list[tuple[float, str]] = []
        self._by_arrival: list[tuple[float, str]] = []
        self._watermark: dict[int, float] = {}
        self._waiting: set[str] = set()

    def add(self, event_id: str, pending: Pending) -> None:
        heapq.heappush(self._by_event_time, (pending.timestamp.timestamp(), event_id))
        heapq.heappush(self._by_arrival, (pending.received_at, event_id))
        self._waiting.add(event_id)

    def matched(self, event_id: str) -> None:
        self._waiting.discard(event_id)

    def observe(self, partition: int, event_time: dt.datetime) -> None:
        seconds = event_time.timestamp()
        if seconds > self._watermark.get(partition, float("-inf")):
            self._watermark[partition] = seconds

    def due(self, now: float) -> Iterable[str]:
        """Event ids whose deadline passed (may include ids matched since: check)."""
        # The event-time heap is global; an entry is due when the lowest watermark of
        # the partitions seen has passed it, so a slow partition never expires early.
        watermark = min(self._watermark.values(), default=float("-inf"))
        waiting = self._waiting
        while self._by_event_time and self._by_event_time[0][0] + self.ttl < watermark:
            event_id = heapq.heappop(self._by_event_time)[1]
            if event_id in waiting:
                waiting.discard(event_id)
                yield event_id
        while self._by_arrival and self._by_arrival[0][0] + self.ttl < now:
            event_id = heapq.heappop(self._by_arrival)[1]
            if event_id in waiting:
                waiting.discard(event_id)
                yield event_id

    def size(self) -> int:
        """Entries waiting for the other side of their join."""
        return len(self._waiting)

    def clear(self) -> None:
        self._by_event_time.clear()
        self._by_arrival.clear()
        self._watermark.clear()
        self._waiting.clear()


class InputCursor:
    """The next offset the join expects in each input partition, saved with every batch
    and checked against every record faust hands over.

    Why: faust 0.15.3 can hand over a stretch of a partition twice or skip one around a
    restart (it resumes partitions before it seeks them to the committed offsets, and
    its gap bookkeeping can commit offsets never processed). Reproduced with `kill -9`
    during a backlog: hundreds of labelled records never produced, and their records in
    no changelog. So the saved position decides: a record before it is a repeat
    (skipped); a record past it is a gap, which the caller checks against the log
    (`gap_checked`): a real gap (transaction markers) is accepted, a skipped stretch is
    sought back to, and records are skipped until the awaited one comes.
    """

    PROCESS, SKIP, GAP = "process", "skip", "gap"

    def __init__(self) -> None:
        self.next: dict[tuple[str, int], int] = {}
        self._awaiting: set[tuple[str, int]] = set()  # sought back: waiting for `next`

    def reset(self) -> None:
        """After an assignment: positions are read from the saved ones again."""
        self.next.clear()
        self._awaiting.clear()

    def admit(self, tp: tuple[str, int], offset: int, saved: Callable[[], int | None]) -> str:
        expected = self.next.get(tp)
        if expected is None:  # the partition's first record since the assignment
            expected = saved()
            if expected is None:  # nothing saved yet: a first run
                expected = offset
            self.next[tp] = expected
        if offset < expected or (offset > expected and tp in self._awaiting):
            return self.SKIP
        if offset > expected:
            return self.GAP
        self._awaiting.discard(tp)
        self.next[tp] = offset + 1
        return self.PROCESS

    def awaiting(self, tp: tuple[str, int]) -> bool:
        """Sought back and still waiting for the record at `self.next[tp]`."""
        return tp in self._awaiting

    def gap_checked(self, tp: tuple[str, int], offset: int, first_record: int | None) -> str:
        """After `GAP` for `offset`: `first_record` is the log's first record at or
        after the expected offset (None: none). Returns PROCESS (a real gap) or SKIP
        (wait for the re-delivery from `self.next[tp]`, which the caller seeks to)."""
        if first_record is None or first_record >= offset:
            self.next[tp] = offset + 1
            return self.PROCESS
        self.next[tp] = first_record
        self._awaiting.add(tp)
        return self.SKIP


def cursor_key(topic: str, partition: int) -> bytes:
    """Key of a partition's saved position in the join table (no event id starts so)."""
    return f"\x00next-offset:{topic}:{partition}".encode()


def is_cursor_key(key: bytes) -> bool:
    return key.startswith(b"\x00next-offset:")
