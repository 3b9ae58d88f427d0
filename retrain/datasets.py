"""Where the training data comes from: the model's historical file and, for a trigger,
its window of the `labelled` topic; then the shared cleaning, policy check and split.
Only `recent_from_window` reads Kafka (the consumer's edge); `prepare_for_training` is
pure, shared by the retrainer and `driftline backtest --retrain`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from detectors.prediction_error import prediction_errors
from retrain import change_point as change_points
from retrain.errors import DataPreparationError
from retrain.policy import PolicyDecision, RetrainPolicy, Verdict
from retrain.preparation import (
    EVENT_TIME,
    PREDICTION,
    ChangePoint,
    PreparedData,
    clean,
    records_to_frame,
    resolve_feature_columns,
    split_at_change,
)
from schemas.errors import TableError
from schemas.tables import read_table
from schemas.messages import Window
from schemas.settings import KafkaSettings, ModelSettings, RetrainSettings


def historical_frame(model: ModelSettings) -> pd.DataFrame:
    try:
        return read_table(model.training_data_path or model.reference_path)
    except TableError as error:
        raise DataPreparationError(str(error)) from None


def feature_columns(model: ModelSettings, historical: pd.DataFrame) -> list[str]:
    return resolve_feature_columns(historical, model.feature_columns, (model.prediction_column, model.actual_column))


def recent_from_window(
    kafka: KafkaSettings,
    window: Window,
    model_id: str,
    columns: list[str],
    target: str,
    group_id: str,
    timeout_seconds: float,
) -> tuple[pd.DataFrame, int]:
    """The trigger's labelled records as a frame, and how many could not be decoded."""
    from retrain.labelled_source import read_window  # Kafka, only where a window is read

    if window.labelled is None:
        return records_to_frame([], columns, target), 0
    read = read_window(kafka, window.labelled, model_id, group_id, timeout_seconds)
    return records_to_frame(read.records, columns, target, read.positions), read.undecodable


def prepare_for_training(
    model: ModelSettings,
    retrain: RetrainSettings,
    policy: RetrainPolicy,
    historical: pd.DataFrame,
    recent: pd.DataFrame,
    columns: list[str],
    undecodable: int = 0,
    profile_since: Any = None,
    trigger_types: Sequence[str] = (),
    change_point: Any = None,
) -> tuple[PolicyDecision, PreparedData | None]:
    """Cleans the data and splits it at the change point (`split_at_change`), unless too
    few recent samples survive the cleaning, or too few come after a change of concept.

    The change point is `change_point` (the detectors' estimate, from the trigger), else
    for a change of concept the rise of the served model's errors (`retrain.change_point`),
    else `profile_since` (the trigger's event time)."""
    target = model.actual_column
    concept = changed_concept(trigger_types)
    cleaned = clean(historical, recent, feature_columns=columns, target=target, task=model.task)
    decision = policy.enough_samples(len(cleaned.recent))
    if decision.verdict is not Verdict.RUN:
        return decision, None
    point = resolve_change_point(cleaned.recent, model.task, target, change_point, profile_since, concept)
    why_not, prepared = split_at_change(
        cleaned,
        feature_columns=columns,
        target=target,
        holdout_fraction=retrain.holdout_fraction,
        change_point=point,
        concept=concept,
        keep_history=retrain.history_on_concept_drift,
        old_concept_share=retrain.old_concept_share,
        min_rows=retrain.min_recent_samples,
    )
    if why_not is not None:
        return PolicyDecision(Verdict.SKIP, why_not, "samples"), None
    prepared.counts["invalid_dropped"] += undecodable
    return decision, prepared


def resolve_change_point(
    recent: pd.DataFrame, task: str, target: str, given: Any, trigger_time: Any, concept: bool
) -> ChangePoint | None:
    if given is not None:
        return ChangePoint(given, "message")
    if concept and PREDICTION in recent.columns and EVENT_TIME in recent.columns and len(recent):
        ordered = recent.assign(**{EVENT_TIME: pd.to_datetime(recent[EVENT_TIME], utc=True)})
        ordered = ordered.sort_values(EVENT_TIME, kind="stable")
        index = change_points.estimate(prediction_errors(task, ordered[PREDICTION], ordered[target]))
        if index is not None:
            return ChangePoint(ordered[EVENT_TIME].iloc[index], "estimated")
    if trigger_time is not None:
        return ChangePoint(trigger_time, "trigger")
    return None


def changed_concept(trigger_types: Sequence[str]) -> bool:
    """The targets of the same inputs changed: concept drift, or the error rising while
    the inputs did not move (without data drift, worse performance is a new concept)."""
    types = set(trigger_types)
    return "concept_drift" in types or ("performance_degradation" in types and "data_drift" not in types)


def policy_from(retrain: RetrainSettings) -> RetrainPolicy:
    return RetrainPolicy(
        cooldown_seconds=retrain.cooldown_seconds,
        max_concurrent=retrain.max_concurrent_retrains,
        min_severity=retrain.min_severity,
        min_samples=retrain.min_recent_samples,
        retrain_on=frozenset(t.value for t in retrain.retrain_on),
    )
