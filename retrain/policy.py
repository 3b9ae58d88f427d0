"""Whether a trigger may retrain now: a pure decision, no I/O.

The consumer gathers the facts (the model's last attempted retrain, the trainings that
run, the recent sample count) and this module answers run, wait or skip, with why.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

SEVERITY_ORDER = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


class Verdict(enum.Enum):
    RUN = "run"
    WAIT = "wait"  # over the concurrency limit: the trigger stays in Kafka until a slot frees
    SKIP = "skip"  # logged with execution_attempted = false


@dataclass(frozen=True)
class PolicyDecision:
    verdict: Verdict
    reason: str = ""


@dataclass(frozen=True)
class RetrainPolicy:
    """The thresholds, stored unchanged (from `RetrainSettings`).

    >>> policy = RetrainPolicy(cooldown_seconds=3600, max_concurrent=1, min_severity="HIGH", min_samples=100)
    >>> now = dt.datetime(2026, 11, 26, 6, 0, tzinfo=dt.timezone.utc)
    >>> policy.admit(severity="HIGH", triggered_at=now, last_attempt_at=now - dt.timedelta(hours=2), running=1)
    PolicyDecision(verdict=<Verdict.WAIT: 'wait'>, reason='1 retrain(s) running, limit 1')
    >>> policy.admit(severity="MEDIUM", triggered_at=now, last_attempt_at=None, running=0).reason
    'severity MEDIUM is below the minimum HIGH'
    """

    cooldown_seconds: float
    max_concurrent: int
    min_severity: str
    min_samples: int

    def admit(
        self, *, severity: str, triggered_at: dt.datetime, last_attempt_at: dt.datetime | None, running: int
    ) -> PolicyDecision:
        """The checks that need no data: severity, cooldown, then the concurrency limit."""
        if SEVERITY_ORDER.index(severity) < SEVERITY_ORDER.index(self.min_severity):
            return PolicyDecision(Verdict.SKIP, f"severity {severity} is below the minimum {self.min_severity}")
        if last_attempt_at is not None and self.cooldown_seconds > 0:
            # Measured between trigger times, so a replay decides as the first run did; a
            # trigger older than the last retrain is inside the cooldown too (stale).
            elapsed = (triggered_at - last_attempt_at).total_seconds()
            if elapsed < self.cooldown_seconds:
                when = f"{elapsed:.0f} s before" if elapsed >= 0 else f"{-elapsed:.0f} s after"
                return PolicyDecision(
                    Verdict.SKIP,
                    f"cooldown: last retrain {when} this trigger, cooldown is {self.cooldown_seconds:.0f} s",
                )
        if running >= self.max_concurrent:
            return PolicyDecision(Verdict.WAIT, f"{running} retrain(s) running, limit {self.max_concurrent}")
        return PolicyDecision(Verdict.RUN)

    def enough_samples(self, recent_samples: int) -> PolicyDecision:
        """The design's minimum of recent labelled samples, checked once the data is read."""
        if recent_samples < self.min_samples:
            return PolicyDecision(
                Verdict.SKIP, f"too few recent labelled samples: {recent_samples} < {self.min_samples}"
            )
        return PolicyDecision(Verdict.RUN)
