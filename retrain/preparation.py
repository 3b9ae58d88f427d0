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
# Where a labelled record came from, and the served model's prediction (for the change
# point); kept beside the features, never trained on.
PARTITION = "_partition"
OFFSET = "_offset"
PREDICTION = "_prediction"


@dataclass(frozen=True)
class PreparedData:
    train: pd.DataFrame  # feature columns + target
    holdout: pd.DataFrame  # feature columns + target, the newest recent rows
    feature_columns: list[str]
    target: str
    counts: dict[str, int] = field(default_factory=dict)
    ranges: dict[str, Any] = field(default_factory=dict)  # recent event times, row counts
    # Recent training rows that show what the new model will face (features + target),
    # with the holdout the monitor's next reference; see `split_at_change`.
    profile_rows: pd.DataFrame | None = None
    # The training set and the holdout described (`describe_window`): {"training": ..., "holdout": ...}
    windows: dict[str, Any] = field(default_factory=dict)

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


def records_to_frame(
    records: Iterable[LabelledRecord],
    feature_columns: Sequence[str],
    target: str,
    positions: Sequence[tuple[int, int]] | None = None,
) -> pd.DataFrame:
    """One row per labelled record: event_id, timestamp, the features, the actual as
    target; the served prediction and, with `positions` ((partition, offset) per record),
    where the record is in the labelled topic."""
    records = list(records)
    places = positions if positions is not None else [(None, None)] * len(records)
    rows = [
        {
            EVENT_ID: r.event_id,
            EVENT_TIME: r.timestamp,
            **{c: r.features.get(c) for c in feature_columns},
            target: r.actual,
            PREDICTION: r.prediction,
            PARTITION: partition,
            OFFSET: offset,
        }
        for r, (partition, offset) in zip(records, places)
    ]
    return pd.DataFrame(rows, columns=[EVENT_ID, EVENT_TIME, *feature_columns, target, PREDICTION, PARTITION, OFFSET])


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


@dataclass(frozen=True)
class ChangePoint:
    """The first moment of the new regime, and who said so: message (the detectors),
    estimated (from the served model's errors), trigger (the trigger's event time)."""

    at: Any  # a timestamp
    source: str


def describe_window(rows: pd.DataFrame, *, historical_rows: int = 0, **extra: Any) -> dict[str, Any]:
    """Row counts, the labelled offsets per partition and the event-time range of `rows`
    (plus `historical_rows` from the history): what a `DataWindow` reports."""
    summary: dict[str, Any] = {
        "rows": len(rows) + historical_rows,
        "historical_rows": historical_rows,
        "labelled_rows": len(rows),
        "labelled": [],
        "event_time_start": None,
        "event_time_end": None,
    }
    if OFFSET in rows.columns and rows[OFFSET].notna().any():
        placed = rows[rows[OFFSET].notna()]
        for partition, group in placed.groupby(PARTITION, sort=True):
            summary["labelled"].append(
                {"partition": int(partition), "start": int(group[OFFSET].min()), "end": int(group[OFFSET].max())}
            )
    if EVENT_TIME in rows.columns and len(rows):
        times = pd.to_datetime(rows[EVENT_TIME], utc=True)
        summary["event_time_start"] = times.min().isoformat()
        summary["event_time_end"] = times.max().isoformat()
    return {**summary, **extra}


def split_at_change(
    data: CleanData,
    *,
    feature_columns: Sequence[str],
    target: str,
    holdout_fraction: float,
    change_point: ChangePoint | None,
    concept: bool,
    keep_history: bool,
    old_concept_share: float,
    min_rows: int,
) -> tuple[str | None, PreparedData | None]:
    """The training set and the holdout around the change point: (why not, None) or
    (None, the prepared data).

    The holdout is the newest `holdout_fraction` of the rows after the change point, so
    both models are compared on the new regime. After a change of concept the rest of
    those rows train the model, with at most `old_concept_share` of the training rows
    from before the change (the newest of them) and no history (unless `keep_history`);
    after a covariate shift, the history and every recent row train it."""
    recent = _in_event_time_order(data.recent)
    post, pre = _split_at(recent, change_point)
    if len(post) < min_rows:
        if concept:
            return _too_few_after(change_point, len(post), min_rows), None
        post, pre = recent, recent.iloc[:0]  # a covariate shift: hold out the newest rows
    train_post, holdout = split_holdout(post, holdout_fraction)
    historical, old = data.historical, pre
    if concept and not keep_history:
        historical, old = historical.iloc[:0], _newest_share(pre, old_concept_share, len(train_post))
    columns = [*feature_columns, target]
    train = pd.concat([historical[columns], old[columns], train_post[columns]], ignore_index=True)
    if train.empty:
        raise DataPreparationError("no valid training rows")
    return None, PreparedData(
        train=train,
        holdout=holdout[columns].reset_index(drop=True),
        feature_columns=list(feature_columns),
        target=target,
        counts={**data.counts, "historical_rows": len(historical), "recent_rows": len(old) + len(post),
                "old_concept_rows": len(old), "training_rows": len(train), "holdout_rows": len(holdout)},
        ranges=_event_time_ranges(recent, holdout),
        profile_rows=train_post[columns].reset_index(drop=True),
        windows={"training": _training_window(old, train_post, len(historical), change_point),
                 "holdout": describe_window(holdout)},
    )


def _in_event_time_order(recent: pd.DataFrame) -> pd.DataFrame:
    """With event times as UTC timestamps, to compare them with the change point."""
    if EVENT_TIME not in recent.columns:
        return recent
    recent = recent.assign(**{EVENT_TIME: pd.to_datetime(recent[EVENT_TIME], utc=True)})
    return recent.sort_values(EVENT_TIME, kind="stable")


def _split_at(recent: pd.DataFrame, change_point: ChangePoint | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the rows from the change point on, the rows before it); without a change point
    or event times, every row counts as after it."""
    if change_point is not None and EVENT_TIME in recent.columns:
        after = (recent[EVENT_TIME] >= pd.Timestamp(change_point.at)).to_numpy()
    else:
        after = np.ones(len(recent), dtype=bool)
    return recent[after], recent[~after]


def _too_few_after(change_point: ChangePoint | None, rows: int, min_rows: int) -> str:
    at = f" ({pd.Timestamp(change_point.at).isoformat()}, {change_point.source})" if change_point else ""
    return f"too few labelled rows after the change point{at}: {rows} < {min_rows}"


def _newest_share(pre: pd.DataFrame, share: float, post_rows: int) -> pd.DataFrame:
    """The newest rows before the change, as many as make `share` of the training rows
    beside `post_rows` rows after it."""
    allowed = math.floor(share / (1 - share) * post_rows)
    return pre.iloc[len(pre) - allowed :] if allowed > 0 else pre.iloc[:0]


def _event_time_ranges(recent: pd.DataFrame, holdout: pd.DataFrame) -> dict[str, Any]:
    if EVENT_TIME not in recent.columns or not len(recent):
        return {}
    return {
        "recent_start": recent[EVENT_TIME].min().isoformat(),
        "recent_end": recent[EVENT_TIME].max().isoformat(),
        "holdout_start": holdout[EVENT_TIME].min().isoformat(),
    }


def _training_window(
    old: pd.DataFrame, train_post: pd.DataFrame, historical_rows: int, change_point: ChangePoint | None
) -> dict[str, Any]:
    """The recent training rows described, with the change point they were cut at."""
    return describe_window(
        pd.concat([old, train_post]),
        historical_rows=historical_rows,
        old_concept_rows=len(old),
        change_point=pd.Timestamp(change_point.at).isoformat() if change_point else None,
        change_point_source=change_point.source if change_point else None,
    )
