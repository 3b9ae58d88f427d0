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


def labelled_records(model_id: str, frame: pd.DataFrame, prefix: str = "e") -> list[LabelledRecord]:
    return [
        LabelledRecord(
            model_id=model_id,
            model_version="1",
            event_id=f"{prefix}{i}",
            timestamp=START + dt.timedelta(seconds=i),
            prediction=0.0,
            actual=float(row.actual),
            actual_timestamp=START + dt.timedelta(seconds=i + 1),
            features={"x1": float(row.x1), "x2": float(row.x2)},
        )
        for i, row in enumerate(frame.itertuples())
    ]


def encoded(records: list[LabelledRecord]) -> list[bytes]:
    return [encode(r) for r in records]
