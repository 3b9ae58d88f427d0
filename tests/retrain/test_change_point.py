"""Training on the right rows after a change: pure, no services."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from detectors.prediction_error import prediction_errors
from retrain import change_point
from retrain.datasets import policy_from, prepare_for_training
from retrain.preparation import records_to_frame
from schemas.settings import ModelSettings, RetrainSettings
from tests.retrain.synthetic import START, concept_change_frame, labelled_records, regression_frame

FEATURES = ["x1", "x2"]
BEFORE, AFTER = 300, 400  # rows of the old concept, then of the new one (one a second)


def window_frame(before: int = BEFORE, after: int = AFTER, seed: int = 40):
    frame = concept_change_frame(before, after, seed)
    records = labelled_records("m", frame)
    positions = [(0, 1000 + i) for i in range(len(records))]  # offsets 1000... of partition 0
    return records_to_frame(records, FEATURES, "actual", positions)


def prepare(recent, trigger_types=("concept_drift",), change_at=None, trigger_time=None, **retrain):
    settings = RetrainSettings(**{"min_recent_samples": 50, "holdout_fraction": 0.25, **retrain})
    model = ModelSettings(reference_path="unused.csv")
    return prepare_for_training(
        model, settings, policy_from(settings), regression_frame(500, seed=1), recent, FEATURES,
        profile_since=trigger_time, trigger_types=list(trigger_types), change_point=change_at,
    )


def test_the_change_point_is_estimated_from_the_served_model_errors() -> None:
    recent = window_frame()
    errors = prediction_errors("regression", recent["_prediction"], recent["actual"])
    assert abs(change_point.estimate(errors) - BEFORE) <= 3
    assert change_point.estimate(errors[:BEFORE]) is None  # no change, no estimate
    flips = prediction_errors("classification", ["a", "b", None, 1], ["a", "a", "a", 1.0])
    assert flips[[0, 1, 3]].tolist() == [0.0, 1.0, 0.0] and np.isnan(flips[2])


def test_a_change_of_concept_trains_from_the_estimated_change_point_and_holds_out_new_rows() -> None:
    # The trigger fired 20 rows after the change: its time would keep 380 new rows.
    decision, prepared = prepare(window_frame(), trigger_time=START + dt.timedelta(seconds=BEFORE + 20))
    training, holdout = prepared.windows["training"], prepared.windows["holdout"]
    assert training["change_point_source"] == "estimated"
    assert abs(training["labelled"][0]["start"] - (1000 + BEFORE)) <= 3
    assert training["old_concept_rows"] == 0 and training["historical_rows"] == 0
    assert prepared.counts["old_concept_rows"] == 0 and prepared.counts["historical_rows"] == 0
    post = 1000 + BEFORE + AFTER - training["labelled"][0]["start"]
    assert holdout["rows"] == prepared.counts["holdout_rows"] == int(np.ceil(post * 0.25))
    assert training["rows"] == prepared.counts["training_rows"] == post - holdout["rows"]
    # the holdout is the newest post-change rows, after every training row
    assert holdout["labelled"] == [{"partition": 0, "start": 1000 + BEFORE + AFTER - holdout["rows"], "end": 1699}]
    assert training["labelled"][0]["end"] == holdout["labelled"][0]["start"] - 1
    assert holdout["event_time_start"] > training["event_time_end"]


def test_the_detectors_change_point_wins_and_old_rows_are_limited_to_their_share() -> None:
    at = START + dt.timedelta(seconds=BEFORE)
    _, kept_out = prepare(window_frame(), change_at=at)
    assert kept_out.windows["training"]["change_point_source"] == "message"
    assert kept_out.windows["training"]["labelled"] == [{"partition": 0, "start": 1300, "end": 1599}]
    _, shared = prepare(window_frame(), change_at=at, old_concept_share=0.25)
    # 300 new training rows; old rows at most a quarter of the training set: 100, the newest
    assert shared.counts["old_concept_rows"] == 100 and shared.counts["training_rows"] == 400
    assert shared.windows["training"]["labelled"] == [{"partition": 0, "start": 1200, "end": 1599}]
    assert shared.windows["holdout"] == kept_out.windows["holdout"]


def test_a_covariate_shift_trains_on_history_and_recent_rows_and_holds_out_post_change_rows() -> None:
    at = START + dt.timedelta(seconds=BEFORE)
    _, prepared = prepare(window_frame(), trigger_types=["data_drift"], change_at=at)
    assert prepared.counts["historical_rows"] == 500 and prepared.counts["old_concept_rows"] == BEFORE
    assert prepared.counts["training_rows"] == 500 + BEFORE + 300
    assert prepared.windows["holdout"]["labelled"] == [{"partition": 0, "start": 1600, "end": 1699}]


def test_too_few_rows_after_the_change_point_skip_with_the_reason() -> None:
    decision, prepared = prepare(window_frame(after=40), change_at=START + dt.timedelta(seconds=BEFORE))
    assert prepared is None
    assert decision.reason == (
        f"too few labelled rows after the change point ({(START + dt.timedelta(seconds=BEFORE)).isoformat()}, "
        "message): 40 < 50"
    )


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_no_old_concept_row_beyond_the_share(share: float) -> None:
    _, prepared = prepare(window_frame(), change_at=START + dt.timedelta(seconds=BEFORE), old_concept_share=share)
    counts = prepared.counts
    assert counts["old_concept_rows"] <= share * counts["training_rows"]
