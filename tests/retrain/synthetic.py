"""Seeded synthetic data for the retrain tests: y = 3 x1 - 2 x2 + noise, and a drifted
variant where the relation changed (so a retrained model is better on it)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from schemas.messages import LabelledRecord, encode

START = dt.datetime(2026, 11, 26, 6, 0, tzinfo=dt.timezone.utc)


def regression_frame(rows: int, seed: int, drifted: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(1.0 if drifted else 0.0, 1.0, rows)
    x2 = rng.normal(0.0, 1.0, rows)
    slope = -1.0 if drifted else 3.0
    actual = slope * x1 - 2.0 * x2 + rng.normal(0.0, 0.1, rows)
    return pd.DataFrame({"x1": x1, "x2": x2, "actual": actual})


def old_concept_predictions(frame: pd.DataFrame) -> np.ndarray:
    """What a model of the original relation (y = 3 x1 - 2 x2) predicts for `frame`."""
    return 3.0 * frame["x1"].to_numpy() - 2.0 * frame["x2"].to_numpy()


def concept_change_frame(before: int, after: int, seed: int) -> pd.DataFrame:
    """`before` rows of the original relation, then `after` of the changed one, with the
    predictions of a model of the original relation (accurate, then wrong)."""
    frame = pd.concat(
        [regression_frame(before, seed=seed), regression_frame(after, seed=seed + 1, drifted=True)],
        ignore_index=True,
    )
    return frame.assign(prediction=old_concept_predictions(frame))


def labelled_records(
    model_id: str, frame: pd.DataFrame, prefix: str = "e", start: dt.datetime = START, model_version: str = "1"
) -> list[LabelledRecord]:
    """One record a second from `start`; predictions from the frame's `prediction`
    column, else 0."""
    predictions = frame["prediction"].tolist() if "prediction" in frame.columns else [0.0] * len(frame)
    return [
        LabelledRecord(
            model_id=model_id,
            model_version=model_version,
            event_id=f"{prefix}{i}",
            timestamp=start + dt.timedelta(seconds=i),
            prediction=float(predictions[i]),
            actual=float(row.actual),
            actual_timestamp=start + dt.timedelta(seconds=i + 1),
            features={"x1": float(row.x1), "x2": float(row.x2)},
        )
        for i, row in enumerate(frame.itertuples())
    ]


def encoded(records: list[LabelledRecord]) -> list[bytes]:
    return [encode(r) for r in records]
