"""A trainer for `tests/streams/test_loop_backtest.py`: `[models.m] trainer` points here."""

from __future__ import annotations

import numpy as np
import pandas as pd


class MeanOfTarget:
    def __init__(self, mean: float) -> None:
        self.mean = mean

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return np.full(len(features), self.mean)


def mean_of_target(frame: pd.DataFrame, target: str) -> MeanOfTarget:
    """Predicts the training target's mean: a model the validation must reject."""
    return MeanOfTarget(float(frame[target].mean()))
