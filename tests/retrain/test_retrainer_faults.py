"""Errors other than an outage, against the real broker and database: a stage that
raises is retried `max_attempts` times, then its trigger is dead-lettered, recorded as
failed and committed, and the retrainer carries on with the next trigger."""

from __future__ import annotations

import pytest

from retrain import datasets, metrics
from retrain.model_store import FileModelStore
from schemas.messages import DeadLetter, RetrainOutcome, RetrainRequest, decode
from tests.retrain.conftest import MODEL, Harness, wait_for

pytestmark = pytest.mark.services

POISON_ROWS = 137  # the window size that the injected fault recognises


def failing_preparation(monkeypatch: pytest.MonkeyPatch, times: int | None) -> list[int]:
    """`prepare_for_training` raises a KeyError (no stage catches it) for a window of
    POISON_ROWS recent rows: `times` times, or always when None. Returns the call log."""
    real = datasets.prepare_for_training
    calls: list[int] = []

    def prepare(model, retrain, policy, historical, recent, *args, **kwargs):
        if len(recent) == POISON_ROWS:
            calls.append(len(recent))
            if times is None or len(calls) <= times:
                raise KeyError("injected fault")
        return real(model, retrain, policy, historical, recent, *args, **kwargs)

    monkeypatch.setattr(datasets, "prepare_for_training", prepare)
    return calls


def stage_failures() -> float:
    return metrics.REGISTRY.get_sample_value("driftline_retrain_stage_failures_total", {"stage": "admit"}) or 0.0


def test_a_trigger_that_always_raises_is_dead_lettered_recorded_and_committed(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = failing_preparation(monkeypatch, times=None)
    settings = harness.settings(max_attempts=3, cooldown_seconds=0)
    poison = harness.trigger("t-poison", harness.labelled_window(POISON_ROWS, seed=21))
    harness.trigger("t-after", harness.labelled_window(150, seed=22))
    failures_before = stage_failures()
    harness.start(settings)

    wait_for(lambda: harness.committed() == 2, "the poison trigger and the next one to be committed")
    assert len(calls) == 3, "not tried exactly max_attempts times"
    assert stage_failures() == failures_before + 3
    poisoned, after = harness.rows()
    assert (poisoned["trigger_id"], poisoned["execution_attempted"], poisoned["execution_successful"]) == (
        "t-poison",
        True,
        False,
    )
    reason = poisoned["execution_metrics"]["reason"]
    assert reason.startswith("gave up after 3 failed attempt(s) at admit: KeyError") and "injected fault" in reason
    assert after["trigger_id"] == "t-after" and after["execution_successful"] is True

    [letter] = [decode(DeadLetter, v) for v in harness.read(settings.kafka.dead_letter_topic, 1)]
    assert (letter.reason, letter.source_offset, letter.source_key) == ("processing_failed", 0, MODEL)
    assert "injected fault" in letter.detail
    assert decode(RetrainRequest, letter.original) == poison  # the trigger, intact, for a replay
    events = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 2)]
    assert [(e.trigger_id, e.outcome) for e in events] == [("t-poison", "failed"), ("t-after", "promoted")]
    assert FileModelStore(settings.model_store_path, 5).versions(MODEL) == ["1", "2"]


def test_a_stage_that_raises_once_is_retried_and_the_trigger_trains(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = failing_preparation(monkeypatch, times=1)
    settings = harness.settings(max_attempts=3)
    harness.trigger("t-flaky", harness.labelled_window(POISON_ROWS, seed=23))
    harness.start(settings)

    wait_for(lambda: harness.committed() == 1, "the trigger to be committed")
    assert len(calls) == 2
    [row] = harness.rows()
    assert row["trigger_id"] == "t-flaky" and row["execution_successful"] is True
    assert harness.high_watermark(settings.kafka.dead_letter_topic) == 0  # nothing dead-lettered


def test_a_trigger_whose_handling_killed_the_retrainer_each_time_is_given_up(harness: Harness, db) -> None:
    settings = harness.settings(max_attempts=3, cooldown_seconds=0)
    poison = harness.trigger("t-crashloop", harness.labelled_window(150, seed=24))
    # As if three retrainers had died handling it (the kill test shows one such death).
    db.execute(
        "INSERT INTO retrain_trigger_starts (trigger_id, model_id, starts, last_started_at) VALUES (%s, %s, 3, now())",
        ("t-crashloop", MODEL),
    )
    harness.trigger("t-next", harness.labelled_window(150, seed=25))
    harness.start(settings)

    wait_for(lambda: harness.committed() == 2, "both triggers to be committed")
    given_up, following = harness.rows()
    assert given_up["trigger_id"] == "t-crashloop" and given_up["execution_successful"] is False
    assert given_up["execution_metrics"]["reason"] == (
        "gave up: handling began 3 time(s) before without an outcome (the retrainer stopped while handling it)"
    )
    [letter] = [decode(DeadLetter, v) for v in harness.read(settings.kafka.dead_letter_topic, 1)]
    assert letter.reason == "processing_failed" and decode(RetrainRequest, letter.original) == poison
    assert following["trigger_id"] == "t-next" and following["execution_successful"] is True
    assert FileModelStore(settings.model_store_path, 5).versions(MODEL) == ["1", "2"]  # never trained t-crashloop
    # a trigger's starts are forgotten once its outcome is written
    assert db.execute("SELECT count(*) FROM retrain_trigger_starts").fetchone() == (0,)


def test_a_trigger_for_an_unknown_model_is_recorded_skipped_and_dead_lettered(harness: Harness) -> None:
    settings = harness.settings()
    request = harness.trigger("t-nobody", harness.labelled_window(10, seed=26), model_id="../nobody")
    harness.start(settings)

    wait_for(lambda: harness.committed() == 1, "the trigger to be committed")
    [row] = harness.rows()
    assert (row["trigger_id"], row["model_id"], row["execution_attempted"]) == ("t-nobody", "../nobody", False)
    assert row["execution_metrics"]["reason"] == "unknown model: model '../nobody' is not configured"
    [letter] = [decode(DeadLetter, v) for v in harness.read(settings.kafka.dead_letter_topic, 1)]
    assert letter.reason == "unknown_model" and decode(RetrainRequest, letter.original) == request
    [event] = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 1)]
    assert (event.trigger_id, event.outcome) == ("t-nobody", "skipped")
    labelled = {s.labels.get("model") for family in metrics.REGISTRY.collect() for s in family.samples}
    assert "../nobody" not in labelled  # metric labels stay bounded to configured models
