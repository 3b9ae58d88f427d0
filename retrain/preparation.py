"""Data preparation, pure: the design's "combines historical + recent data".

Historical rows (the model's training data) and recent labelled rows (the trigger's
window) become one training frame, after dropping invalid rows and duplicate events; the
newest part of the recent rows is held out, in time order, to validate both models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from retrain.errors import DataPreparationError
from schemas.messages import LabelledRecord

EVENT_ID = "event_id"
EVENT_TIME = "timestamp"


@dataclass(frozen=True)
class PreparedData:
    train: pd.DataFrame  # feature columns + target
    holdout: pd.DataFrame  # feature columns + target, the newest recent rows
    feature_columns: list[str]
    target: str
    counts: dict[str, int] = field(default_factory=dict)
    ranges: dict[str, Any] = field(default_factory=dict)  # recent event times, row counts
    # Recent training rows that show what the new model will face (features + target),
    # with the holdout the monitor's next reference; see `combine`.
    profile_rows: pd.DataFrame | None = None

    @property
    def holdout_features(self) -> pd.DataFrame:
        return self.holdout[self.feature_columns]


def resolve_feature_columns(
    historical: pd.DataFrame, configured: Sequence[str] | None, excluded: Iterable[str]
) -> list[str]:
    """The configured columns, else every numeric column but the excluded ones."""
    if configured:
        missing = [c for c in configured if c not in historical.columns]
        if missing:
            raise DataPreparationError(f"training data has no feature column(s): {', '.join(missing)}")
        return list(configured)
    skip = set(excluded) | {EVENT_ID, EVENT_TIME}
    columns = [
        c
        for c in historical.columns
        if c not in skip
        and pd.api.types.is_numeric_dtype(historical[c])
        and not pd.api.types.is_bool_dtype(historical[c])
    ]
    if not columns:
        raise DataPreparationError("training data has no numeric feature columns")
    return columns


def records_to_frame(records: Iterable[LabelledRecord], feature_columns: Sequence[str], target: str) -> pd.DataFrame:
    """One row per labelled record: event_id, timestamp, the features, the actual as target."""
    rows = [
        {
            EVENT_ID: r.event_id,
            EVENT_TIME: r.timestamp,
            **{c: r.features.get(c) for c in feature_columns},
            target: r.actual,
        }
        for r in records
    ]
    return pd.DataFrame(rows, columns=[EVENT_ID, EVENT_TIME, *feature_columns, target])


def dedupe_events(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keeps the last record of each event_id (a re-joined actual replaces the earlier)."""
    if EVENT_ID not in frame.columns:
        return frame, 0
    kept = frame.drop_duplicates(subset=EVENT_ID, keep="last")
    return kept, len(frame) - len(kept)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


def drop_invalid(
    frame: pd.DataFrame, feature_columns: Sequence[str], numeric_columns: Sequence[str], target: str, task: str
) -> tuple[pd.DataFrame, int]:
    """Drops rows without a usable target, with a non-number in a numeric feature, or with
    no feature value at all; missing single features stay (the trainer imputes them)."""
    if frame.empty:
        return frame, 0
    target_ok = frame[target].map(_is_number if task == "regression" else lambda v: v is not None and v == v)
    numeric_ok = np.ones(len(frame), dtype=bool)
    for column in numeric_columns:
        numeric_ok &= frame[column].map(lambda v: v is None or _is_number(v) or v != v).to_numpy(dtype=bool)
    any_feature = frame[list(feature_columns)].notna().any(axis=1).to_numpy(dtype=bool)
    keep = target_ok.to_numpy(dtype=bool) & numeric_ok & any_feature
    kept = frame[keep]
    for column in numeric_columns:
        kept = kept.assign(**{column: pd.to_numeric(kept[column])})
    if task == "regression":
        kept = kept.assign(**{target: pd.to_numeric(kept[target])})
    return kept, int((~keep).sum())


def split_holdout(recent: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Oldest rows for training, the newest `fraction` (at least one row) for validation."""
    ordered = recent.sort_values(EVENT_TIME, kind="stable") if EVENT_TIME in recent.columns else recent
    holdout_rows = max(1, math.ceil(len(ordered) * fraction))
    return ordered.iloc[:-holdout_rows], ordered.iloc[-holdout_rows:]


@dataclass(frozen=True)
class CleanData:
    historical: pd.DataFrame
    recent: pd.DataFrame
    counts: dict[str, int]


def clean(
    historical: pd.DataFrame, recent: pd.DataFrame, *, feature_columns: Sequence[str], target: str, task: str
) -> CleanData:
    """Drops invalid rows from both frames and duplicate events from the recent one."""
    if target not in historical.columns:
        raise DataPreparationError(f"training data has no target column {target!r}")
    numeric = [c for c in feature_columns if pd.api.types.is_numeric_dtype(historical[c])]
    historical, historical_invalid = drop_invalid(historical, feature_columns, numeric, target, task)
    recent, duplicates = dedupe_events(recent)
    recent, recent_invalid = drop_invalid(recent, feature_columns, numeric, target, task)
    counts = {
        "historical_rows": len(historical),
        "recent_rows": len(recent),
        "duplicates_dropped": duplicates,
        "invalid_dropped": historical_invalid + recent_invalid,
    }
    return CleanData(historical, recent, counts)


def combine(
    data: CleanData,
    *,
    feature_columns: Sequence[str],
    target: str,
    holdout_fraction: float,
    profile_since: Any = None,
) -> PreparedData:
    """Splits the recent rows in time order and adds the older part to the history.

    The new version's reference profile is built from recent rows only, those after
    `profile_since` (the trigger's event time) when given: the history holds the data
    from before the change, and a reference that mixed it in would report the change
    again to the monitor as drift."""
    if data.recent.empty:
        raise DataPreparationError("no valid recent labelled rows")
    older, holdout = split_holdout(data.recent, holdout_fraction)
    columns = [*feature_columns, target]
    train = pd.concat([data.historical[columns], older[columns]], ignore_index=True)
    if train.empty:
        raise DataPreparationError("no valid training rows")
    profile_rows = older
    if profile_since is not None and EVENT_TIME in older.columns:
        profile_rows = older[pd.to_datetime(older[EVENT_TIME], utc=True) > pd.Timestamp(profile_since)]
    counts = {**data.counts, "training_rows": len(train), "holdout_rows": len(holdout)}
    ranges: dict[str, Any] = {}
    if EVENT_TIME in data.recent.columns:
        ranges = {
            "recent_start": pd.Timestamp(data.recent[EVENT_TIME].min()).isoformat(),
            "recent_end": pd.Timestamp(data.recent[EVENT_TIME].max()).isoformat(),
            "holdout_start": pd.Timestamp(holdout[EVENT_TIME].min()).isoformat(),
        }
    return PreparedData(
        train,
        holdout[columns].reset_index(drop=True),
        list(feature_columns),
        target,
        counts,
        ranges,
        profile_rows[columns].reset_index(drop=True),
    )
