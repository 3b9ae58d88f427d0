"""Data preparation and validation: pure, no services."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from retrain.preparation import ChangePoint, clean, records_to_frame, resolve_feature_columns, split_at_change
from retrain.validation import compare, score
from tests.retrain.synthetic import START, labelled_records, regression_frame

FEATURES = ["x1", "x2"]


def recent_frame(rows: int) -> pd.DataFrame:
    return records_to_frame(labelled_records("m", regression_frame(rows, seed=3)), FEATURES, "actual")


def prepare(data, *, since=None):
    """The rows a covariate shift trains on (history and recent rows), split at `since`."""
    at = ChangePoint(since, "trigger") if since is not None else None
    return split_at_change(data, feature_columns=FEATURES, target="actual", holdout_fraction=0.2,
                           change_point=at, concept=False, keep_history=True,
                           old_concept_share=0.0, min_rows=1)[1]


def test_feature_columns_default_to_numeric_columns_but_prediction_and_actual() -> None:
    frame = pd.DataFrame({"x": [1.0], "city": ["Lyon"], "prediction": [1.0], "actual": [2.0]})
    assert resolve_feature_columns(frame, None, ("prediction", "actual")) == ["x"]


def test_duplicates_and_invalid_rows_are_dropped_and_counted() -> None:
    recent = recent_frame(10)
    recent = pd.concat([recent, recent.iloc[[0, 1]]], ignore_index=True)  # two redelivered events
    recent.loc[3, "actual"] = None  # no target
    recent["x1"] = recent["x1"].astype(object)
    recent.loc[4, "x1"] = "not a number"  # a string in a numeric feature
    recent.loc[5, ["x1", "x2"]] = None  # no feature at all
    recent.loc[6, "x2"] = None  # one missing feature: kept, the trainer imputes it
    data = clean(regression_frame(20, seed=1), recent, feature_columns=FEATURES, target="actual", task="regression")
    assert data.counts == {"historical_rows": 20, "recent_rows": 7, "duplicates_dropped": 2, "invalid_dropped": 3}
    assert data.recent["x1"].dtype == np.float64


def test_holdout_is_the_newest_recent_rows_in_time_order() -> None:
    recent = recent_frame(10).sample(frac=1.0, random_state=0)  # arrival order is not time order
    data = clean(regression_frame(20, seed=1), recent, feature_columns=FEATURES, target="actual", task="regression")
    prepared = prepare(data)
    assert prepared.counts["training_rows"] == 28 and prepared.counts["holdout_rows"] == 2
    newest = recent.sort_values("timestamp").tail(2)
    assert prepared.holdout["x1"].tolist() == newest["x1"].tolist()
    assert prepared.ranges["holdout_start"] == pd.Timestamp(START + dt.timedelta(seconds=8)).isoformat()


def test_profile_rows_are_the_recent_rows_after_the_trigger() -> None:
    recent = recent_frame(20)  # one event a second from START
    data = clean(regression_frame(50, seed=1), recent, feature_columns=FEATURES, target="actual", task="regression")
    since = START + dt.timedelta(seconds=9.5)
    prepared = prepare(data, since=since)
    # rows 10..17 are after the trigger and not in the holdout (18, 19: the newest 20 % of
    # the rows after it); no historical row
    assert prepared.profile_rows["x1"].tolist() == recent["x1"].iloc[10:18].tolist()
    everything = prepare(data)
    assert everything.profile_rows["x1"].tolist() == recent["x1"].iloc[:16].tolist()


def test_scores() -> None:
    assert score("regression", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == {"r2": 1.0, "rmse": 0.0, "mae": 0.0}
    assert score("classification", ["a", "b"], ["a", "a"]) == {"accuracy": 0.5}


@pytest.mark.parametrize(("new_rmse", "margin", "promote"), [(1.0, 0.0, True), (1.05, 0.0, False), (1.05, 0.1, True)])
def test_promotion_margin(new_rmse: float, margin: float, promote: bool) -> None:
    result = compare("regression", {"r2": 0.5, "rmse": new_rmse}, {"r2": 0.5, "rmse": 1.0}, margin)
    assert result.promote is promote


def test_improvements_are_positive_when_better_and_none_without_a_current_model() -> None:
    result = compare("regression", {"r2": 0.9, "rmse": 0.5}, {"r2": 0.6, "rmse": 1.0}, 0.0)
    assert result.improvements["improvement_r2_percent"] == pytest.approx(50.0)
    assert result.improvements["improvement_rmse_percent"] == pytest.approx(50.0)
    first = compare("regression", {"r2": 0.9, "rmse": 0.5}, None, 0.0)
    assert first.promote and set(first.improvements.values()) == {None}


@pytest.mark.parametrize(("trigger_types", "keep_history", "historical_rows"), [
    (["data_drift"], False, 50),
    (["concept_drift", "performance_degradation"], False, 0),
    (["performance_degradation"], False, 0),  # the error rose while the inputs did not move
    (["data_drift", "performance_degradation"], False, 50),  # a covariate shift hurting the model
    (["concept_drift"], True, 50),
])
def test_a_change_of_concept_trains_on_recent_rows_only(
    tmp_path, trigger_types: list[str], keep_history: bool, historical_rows: int
) -> None:
    from retrain.datasets import policy_from, prepare_for_training
    from schemas.settings import ModelSettings, RetrainSettings

    retrain = RetrainSettings(history_on_concept_drift=keep_history, min_recent_samples=10)
    model = ModelSettings(reference_path=tmp_path / "unused.csv")
    _, prepared = prepare_for_training(
        model, retrain, policy_from(retrain), regression_frame(50, seed=1), recent_frame(40), FEATURES,
        trigger_types=trigger_types,
    )
    assert prepared.counts["historical_rows"] == historical_rows
    assert prepared.counts["training_rows"] == historical_rows + 32


def test_a_change_of_concept_keeps_only_the_rows_after_the_trigger(tmp_path) -> None:
    from retrain.datasets import policy_from, prepare_for_training
    from schemas.settings import ModelSettings, RetrainSettings

    retrain = RetrainSettings(min_recent_samples=10)
    model = ModelSettings(reference_path=tmp_path / "unused.csv")
    since = START + dt.timedelta(seconds=19.5)  # rows 20..39 are after the trigger
    _, prepared = prepare_for_training(
        model, retrain, policy_from(retrain), regression_frame(50, seed=1), recent_frame(40), FEATURES,
        profile_since=since, trigger_types=["concept_drift"],
    )
    assert prepared.counts["recent_rows"] == 20 and prepared.counts["historical_rows"] == 0
