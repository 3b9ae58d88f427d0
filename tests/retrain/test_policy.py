"""The retrain policy: pure, no services."""

from __future__ import annotations

import datetime as dt

import pytest

from retrain.policy import RetrainPolicy, Verdict

T0 = dt.datetime(2026, 11, 26, 6, 0, tzinfo=dt.timezone.utc)
POLICY = RetrainPolicy(cooldown_seconds=3600, max_concurrent=1, min_severity="MEDIUM", min_samples=100)


def admit(severity: str = "HIGH", last: dt.datetime | None = None, running: int = 0, at: dt.datetime = T0):
    return POLICY.admit(severity=severity, triggered_at=at, last_attempt_at=last, running=running)


def test_a_fresh_trigger_runs() -> None:
    assert admit().verdict is Verdict.RUN


@pytest.mark.parametrize(
    ("severity", "verdict"), [("LOW", Verdict.SKIP), ("MEDIUM", Verdict.RUN), ("CRITICAL", Verdict.RUN)]
)
def test_minimum_severity(severity: str, verdict: Verdict) -> None:
    assert admit(severity).verdict is verdict


def test_inside_the_cooldown_is_skipped_with_why() -> None:
    decision = admit(last=T0 - dt.timedelta(minutes=10))
    assert decision.verdict is Verdict.SKIP
    assert decision.reason == "cooldown: last retrain 600 s before this trigger, cooldown is 3600 s"


def test_after_the_cooldown_runs() -> None:
    assert admit(last=T0 - dt.timedelta(seconds=3600)).verdict is Verdict.RUN


def test_a_trigger_older_than_the_last_retrain_is_stale() -> None:
    assert (
        admit(last=T0 + dt.timedelta(seconds=30)).reason
        == "cooldown: last retrain 30 s after this trigger, cooldown is 3600 s"
    )


def test_no_cooldown_means_no_cooldown_skip() -> None:
    policy = RetrainPolicy(cooldown_seconds=0, max_concurrent=1, min_severity="LOW", min_samples=1)
    decision = policy.admit(severity="LOW", triggered_at=T0, last_attempt_at=T0 + dt.timedelta(seconds=5), running=0)
    assert decision.verdict is Verdict.RUN


def test_over_the_concurrency_limit_waits_rather_than_skips() -> None:
    decision = admit(running=1)
    assert decision.verdict is Verdict.WAIT and "limit 1" in decision.reason
    wider = RetrainPolicy(cooldown_seconds=0, max_concurrent=2, min_severity="LOW", min_samples=1)
    assert wider.admit(severity="LOW", triggered_at=T0, last_attempt_at=None, running=1).verdict is Verdict.RUN


def test_skip_reasons_win_over_waiting() -> None:
    assert admit("LOW", running=5).verdict is Verdict.SKIP


@pytest.mark.parametrize(("samples", "verdict"), [(99, Verdict.SKIP), (100, Verdict.RUN)])
def test_the_designs_minimum_of_100_samples(samples: int, verdict: Verdict) -> None:
    decision = POLICY.enough_samples(samples)
    assert decision.verdict is verdict
    if verdict is Verdict.SKIP:
        assert decision.reason == "too few recent labelled samples: 99 < 100"


@pytest.mark.parametrize(("types", "verdict"), [
    (["data_drift", "outliers"], Verdict.SKIP),
    (["data_drift", "concept_drift"], Verdict.RUN),
    (["performance_degradation"], Verdict.RUN),
    ([], Verdict.RUN),  # a schedule's trigger has no types
])
def test_retrain_on_the_labels_evidence_only(types: list[str], verdict: Verdict) -> None:
    from retrain.datasets import policy_from
    from schemas.settings import RetrainSettings

    on_labels = policy_from(RetrainSettings(retrain_on=["concept_drift", "performance_degradation"]))
    decision = on_labels.admit(severity="CRITICAL", triggered_at=T0, last_attempt_at=None, running=0,
                               trigger_types=types)
    assert decision.verdict is verdict
    if verdict is Verdict.SKIP:
        assert decision.cause == "type" and "data_drift+outliers" in decision.reason
    by_default = POLICY.admit(severity="CRITICAL", triggered_at=T0, last_attempt_at=None, running=0,
                              trigger_types=["data_drift", "outliers"])
    assert by_default.verdict is Verdict.RUN  # the default retrains on every type


def test_retrain_on_names_only_trigger_types() -> None:
    from pydantic import ValidationError
    from schemas.settings import RetrainSettings

    with pytest.raises(ValidationError, match="concept_drfit"):
        RetrainSettings(retrain_on=["concept_drfit"])
