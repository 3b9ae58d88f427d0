"""Where the training data comes from: the model's historical file and, for a trigger,
its window of the `labelled` topic; then the shared cleaning, policy check and split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from retrain.errors import DataPreparationError
from retrain.labelled_source import read_window
from retrain.policy import PolicyDecision, RetrainPolicy, Verdict
from retrain.preparation import (
    EVENT_TIME,
    PreparedData,
    clean,
    combine,
    records_to_frame,
    resolve_feature_columns,
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
    if window.labelled is None:
        return records_to_frame([], columns, target), 0
    read = read_window(kafka, window.labelled, model_id, group_id, timeout_seconds)
    return records_to_frame(read.records, columns, target), read.undecodable


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
) -> tuple[PolicyDecision, PreparedData | None]:
    """Cleans and splits the data, unless too few recent samples survive the cleaning."""
    target = model.actual_column
    if changed_concept(trigger_types) and not retrain.history_on_concept_drift:
        # The old concept is wrong now, in the history and in the window before the
        # trigger alike: keep the rows after the trigger when there are enough of them.
        historical = historical.iloc[:0]
        recent = _after(recent, profile_since, retrain.min_recent_samples)
    cleaned = clean(historical, recent, feature_columns=columns, target=target, task=model.task)
    decision = policy.enough_samples(len(cleaned.recent))
    if decision.verdict is not Verdict.RUN:
        return decision, None
    prepared = combine(
        cleaned,
        feature_columns=columns,
        target=target,
        holdout_fraction=retrain.holdout_fraction,
        profile_since=profile_since,
    )
    prepared.counts["invalid_dropped"] += undecodable
    return decision, prepared


def changed_concept(trigger_types: Sequence[str]) -> bool:
    """The targets of the same inputs changed: concept drift, or the error rising while
    the inputs did not move (without data drift, worse performance is a new concept)."""
    types = set(trigger_types)
    return "concept_drift" in types or ("performance_degradation" in types and "data_drift" not in types)


def _after(recent: pd.DataFrame, since: Any, at_least: int) -> pd.DataFrame:
    if since is None or EVENT_TIME not in recent.columns:
        return recent
    later = recent[pd.to_datetime(recent[EVENT_TIME], utc=True) > pd.Timestamp(since)]
    return later if len(later) >= at_least else recent


def policy_from(retrain: RetrainSettings) -> RetrainPolicy:
    return RetrainPolicy(
        cooldown_seconds=retrain.cooldown_seconds,
        max_concurrent=retrain.max_concurrent_retrains,
        min_severity=retrain.min_severity,
        min_samples=retrain.min_recent_samples,
    )
