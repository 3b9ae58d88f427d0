"""Whether a trigger may retrain now: a pure decision, no I/O.

The consumer gathers the facts (the model's last attempted retrain, the trainings that
run, the recent sample count) and this module answers run, wait or skip, with why.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
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
    cause: str = ""  # a bounded label: severity, type, stale, cooldown, concurrency, samples


@dataclass(frozen=True)
class RetrainPolicy:
    """The thresholds, stored unchanged (from `RetrainSettings`).

    >>> policy = RetrainPolicy(cooldown_seconds=3600, max_concurrent=1, min_severity="HIGH", min_samples=100)
    >>> now = dt.datetime(2026, 11, 26, 6, 0, tzinfo=dt.timezone.utc)
    >>> policy.admit(severity="HIGH", triggered_at=now, last_attempt_at=now - dt.timedelta(hours=2), running=1)
    PolicyDecision(verdict=<Verdict.WAIT: 'wait'>, reason='1 retrain(s) running, limit 1', cause='concurrency')
    >>> policy.admit(severity="MEDIUM", triggered_at=now, last_attempt_at=None, running=0).reason
    'severity MEDIUM is below the minimum HIGH'
    >>> policy.admit(severity="HIGH", triggered_at=now, last_attempt_at=None, running=0,
    ...              trigger_version="1", serving_version="2").cause
    'stale'
    >>> on_labels = RetrainPolicy(3600, 1, "MEDIUM", 100, retrain_on=frozenset({"concept_drift"}))
    >>> on_labels.admit(severity="HIGH", triggered_at=now, last_attempt_at=None, running=0,
    ...                 trigger_types=["data_drift", "outliers"]).reason
    'trigger types data_drift+outliers: none of retrain_on (concept_drift)'
    """

    cooldown_seconds: float
    max_concurrent: int
    min_severity: str
    min_samples: int
    retrain_on: frozenset[str] = frozenset()  # empty: every trigger type

    def retrains_on(self, trigger_types: Sequence[str]) -> bool:
        """Whether the trigger's types may start a retrain (a trigger without types, a
        schedule's, always may)."""
        return not (self.retrain_on and trigger_types) or not self.retrain_on.isdisjoint(trigger_types)

    def eligible(self, severity: str) -> bool:
        return SEVERITY_ORDER.index(severity) >= SEVERITY_ORDER.index(self.min_severity)

    def admit(
        self,
        *,
        severity: str,
        triggered_at: dt.datetime,
        last_attempt_at: dt.datetime | None,
        running: int,
        trigger_version: str | None = None,
        serving_version: str | None = None,
        trigger_types: Sequence[str] = (),
    ) -> PolicyDecision:
        """The checks that need no data: severity, the trigger's types (`retrain_on`),
        staleness (see `stale`), cooldown, then the concurrency limit."""
        if not self.eligible(severity):
            return PolicyDecision(
                Verdict.SKIP, f"severity {severity} is below the minimum {self.min_severity}", "severity"
            )
        if not self.retrains_on(trigger_types):
            wanted = ", ".join(sorted(self.retrain_on))
            return PolicyDecision(
                Verdict.SKIP, f"trigger types {'+'.join(trigger_types)}: none of retrain_on ({wanted})", "type"
            )
        if trigger_version is not None and (old := stale(trigger_version, serving_version)) is not None:
            return old
        if last_attempt_at is not None and self.cooldown_seconds > 0:
            # Measured between trigger times, so a replay decides as the first run did; a
            # trigger older than the last retrain is inside the cooldown too (stale).
            elapsed = (triggered_at - last_attempt_at).total_seconds()
            if elapsed < self.cooldown_seconds:
                when = f"{elapsed:.0f} s before" if elapsed >= 0 else f"{-elapsed:.0f} s after"
                return PolicyDecision(
                    Verdict.SKIP,
                    f"cooldown: last retrain {when} this trigger, cooldown is {self.cooldown_seconds:.0f} s",
                    "cooldown",
                )
        if running >= self.max_concurrent:
            return PolicyDecision(
                Verdict.WAIT, f"{running} retrain(s) running, limit {self.max_concurrent}", "concurrency"
            )
        return PolicyDecision(Verdict.RUN)

    def enough_samples(self, recent_samples: int) -> PolicyDecision:
        """The design's minimum of recent labelled samples, checked once the data is read."""
        if recent_samples < self.min_samples:
            return PolicyDecision(
                Verdict.SKIP, f"too few recent labelled samples: {recent_samples} < {self.min_samples}", "samples"
            )
        return PolicyDecision(Verdict.RUN)


def stale(trigger_version: str, serving_version: str | None) -> PolicyDecision | None:
    """A trigger raised against a version older than the one now serving judged a model
    that is gone (the monitor re-baselines on the new one): skip it. Versions compare as
    the model store's numbers; a version that is not a number is never called stale.

    >>> stale("1", "2").reason
    'stale: raised against version 1, version 2 is serving'
    >>> stale("2", "2") is None, stale("1", None) is None, stale("v1", "2") is None
    (True, True, True)
    """
    if serving_version is None or not (trigger_version.isdigit() and serving_version.isdigit()):
        return None
    if int(trigger_version) >= int(serving_version):
        return None
    return PolicyDecision(
        Verdict.SKIP, f"stale: raised against version {trigger_version}, version {serving_version} is serving", "stale"
    )


def superseded(newer_trigger_id: str, running_trigger_id: str) -> PolicyDecision:
    """A trigger waiting behind its model's running retrain, when a newer one arrives: the
    newer one carries the newest evidence and takes its place as the one follow-up.

    >>> superseded("t3", "t1").reason
    'superseded by newer trigger t3 while trigger t1 was being handled'
    """
    return PolicyDecision(
        Verdict.SKIP,
        f"superseded by newer trigger {newer_trigger_id} while trigger {running_trigger_id} was being handled",
        "superseded",
    )
