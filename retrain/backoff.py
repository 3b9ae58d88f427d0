"""Exponential backoff for writes that must eventually succeed (PostgreSQL, Kafka).

The schedule is pure; the caller decides how to wait (the consumer keeps polling Kafka
in between, so a database outage never gets it thrown out of its group).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays `initial`, 2x, 4x ... capped at `maximum`.

    >>> b = Backoff(initial=0.5, maximum=2.0)
    >>> [b.next_delay() for _ in range(4)]
    [0.5, 1.0, 2.0, 2.0]
    """

    initial: float
    maximum: float
    attempts: int = field(default=0, init=False)

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * 2**self.attempts)
        self.attempts += 1
        return delay


@dataclass
class RetryClock:
    """When the next attempt of one pending write is due."""

    backoff: Backoff
    due_at: float = 0.0  # monotonic seconds; 0 = now

    def due(self) -> bool:
        return time.monotonic() >= self.due_at

    def failed(self) -> float:
        delay = self.backoff.next_delay()
        self.due_at = time.monotonic() + delay
        return delay
