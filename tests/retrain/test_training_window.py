"""Training on the rows after a change of concept, end to end against the real broker
and database: the training window and the holdout in the outcome and the row."""

from __future__ import annotations

import datetime as dt

import pytest

from retrain import metrics

from schemas.messages import ChangePoint, OffsetRange, PartitionOffset, RetrainOutcome, TopicWindow, decode
from tests.retrain.conftest import Harness, wait_for
from tests.retrain.synthetic import START, concept_change_frame

pytestmark = pytest.mark.services

BEFORE, AFTER = 300, 400  # labelled offsets 0..299 the old concept, 300..699 the new one


def test_the_detectors_change_point_starts_the_training_window_before_the_trigger_window(harness: Harness) -> None:
    settings = harness.settings()
    everything = harness.labelled_frame(concept_change_frame(BEFORE, AFTER, seed=50), "cp-")
    # The monitor's window began at offset 400 (after an earlier trigger); the detectors
    # place the change at offset 300: the retrainer reads the new concept's rows from there.
    window = TopicWindow(topic=everything.topic, ranges=[OffsetRange(partition=0, start=400, end=699)])
    change = ChangePoint(
        event_time=START + dt.timedelta(seconds=BEFORE),
        labelled=[PartitionOffset(partition=0, offset=BEFORE)],
        signal="error_cusum",
        events=400,
    )
    harness.trigger("t-cp", window, trigger_types=("concept_drift",), change_point=change)
    harness.start(settings)

    wait_for(lambda: harness.committed() == 1, "the trigger to be committed")
    [event] = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 1)]
    assert event.outcome == "promoted"
    training, holdout = event.training, event.holdout
    assert (training.rows, training.labelled_rows, training.historical_rows, training.old_concept_rows) == (
        320, 320, 0, 0
    )
    assert training.labelled == [OffsetRange(partition=0, start=300, end=619)]
    assert (training.change_point, training.change_point_source) == (change.event_time, "message")
    assert holdout.rows == 80 and holdout.labelled == [OffsetRange(partition=0, start=620, end=699)]

    [row] = harness.rows()
    assert row["training_window"]["labelled"] == [{"partition": 0, "start": 300, "end": 619}]
    assert row["holdout_window"]["rows"] == 80 and row["holdout_window"]["labelled"][0]["start"] == 620
    assert row["execution_metrics"]["counts"]["old_concept_rows"] == 0


def test_without_an_estimate_in_the_trigger_the_retrainer_finds_the_change_in_the_errors(harness: Harness) -> None:
    settings = harness.settings(old_concept_share=0.2)
    window = harness.labelled_frame(concept_change_frame(BEFORE, AFTER, seed=52), "est-")
    harness.trigger("t-est", window, trigger_types=("performance_degradation",))
    harness.start(settings)

    wait_for(lambda: harness.committed() == 1, "the trigger to be committed")
    [event] = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 1)]
    training = event.training
    assert event.outcome == "promoted" and training.change_point_source == "estimated"
    assert abs((training.change_point - START).total_seconds() - BEFORE) <= 5
    assert 0 < training.old_concept_rows <= 0.2 * training.rows  # the configured share, no more
    assert training.historical_rows == 0
    assert event.holdout.labelled[0].start >= BEFORE and event.holdout.labelled[0].end == 699


def test_a_trigger_of_the_features_alone_trains_on_the_labelled_rows_after_it(harness: Harness) -> None:
    settings = harness.settings(post_trigger_rows=120, post_trigger_wait_seconds=120)
    harness.labelled_window(50, seed=53)  # offsets 0..49: before the trigger, not its evidence
    features = TopicWindow(topic="features", ranges=[OffsetRange(partition=0, start=0, end=999)])
    harness.trigger("t-features", None, trigger_types=("data_drift",), features=features)
    harness.start(settings)

    wait_for(
        lambda: metrics.REGISTRY.get_sample_value("driftline_retrain_triggers_waiting") == 1,
        "the trigger to wait for labelled rows",
    )
    harness.labelled_window(150, seed=54)  # offsets 50..199, after the trigger
    wait_for(lambda: harness.committed() == 1, "the trigger to be committed")
    [event] = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 1)]
    assert event.outcome == "promoted"
    training, holdout = event.training, event.holdout
    assert training.historical_rows == 2000  # a covariate shift: the history, and the recent rows
    assert (training.labelled_rows, holdout.rows) == (120, 30)
    assert training.labelled == [OffsetRange(partition=0, start=50, end=169)]
    assert holdout.labelled == [OffsetRange(partition=0, start=170, end=199)]


def test_late_labels_of_predictions_made_before_the_trigger_are_not_its_evidence(harness: Harness) -> None:
    """Labels come late: the records produced after a trigger can all be of predictions
    made before it. The retrainer waits for `post_trigger_rows` of predictions made at or
    after the trigger's last event, then trains on everything up to there."""
    settings = harness.settings(post_trigger_rows=120, post_trigger_wait_seconds=120)
    fired = START + dt.timedelta(hours=1)
    window = harness.labelled_window(50, seed=55, start=fired - dt.timedelta(seconds=400))  # offsets 0..49
    harness.labelled_window(150, seed=56, start=fired - dt.timedelta(seconds=150))  # 50..199: late, made before
    harness.trigger("t-late", window, trigger_types=("data_drift",), event_time_end=fired)
    harness.start(settings)

    wait_for(
        lambda: metrics.REGISTRY.get_sample_value("driftline_retrain_triggers_waiting") == 1,
        "the trigger to wait for labels of predictions made after it",
    )
    harness.labelled_window(120, seed=57, start=fired)  # offsets 200..319
    wait_for(lambda: harness.committed() == 1, "the trigger to be committed")
    [event] = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 1)]
    assert event.outcome == "promoted"
    assert event.training.labelled[0].start == 0 and event.holdout.labelled[-1].end == 319
