"""Validation, pure: the current model against the new one on the same holdout.

Regression is scored by R2, RMSE and MAE (on one holdout R2 and RMSE rank two models
the same way, so RMSE decides; MAE serves the watch after a promotion), classification
by accuracy. The new model is promoted unless it is worse than the current one by more
than the margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.prediction_error import prediction_errors


@dataclass(frozen=True)
class Validation:
    new: dict[str, float]
    current: dict[str, float] | None  # None: no current model, or it cannot score the holdout
    improvements: dict[str, float | None]  # improvement_{r2,rmse,accuracy}_percent
    promote: bool
    reason: str


def score(task: str, predictions: Any, actuals: Any) -> dict[str, float]:
    predicted = np.asarray(predictions)
    actual = np.asarray(actuals)
    if predicted.shape != actual.shape:
        raise ValueError(f"{predicted.shape[0]} predictions for {actual.shape[0]} rows")
    errors = prediction_errors(task, predicted, actual)
    if task == "classification":
        return {"accuracy": float(1.0 - errors.mean())}
    actual = actual.astype(np.float64)
    sse = float(errors @ errors)
    sst = float(((actual - actual.mean()) ** 2).sum())
    return {
        "r2": 1.0 - sse / sst if sst > 0 else 0.0,
        "rmse": float(np.sqrt(sse / len(errors))),
        "mae": float(np.abs(errors).mean()),  # the promotion watch's first figure
    }


def _percent(new: float, old: float, higher_is_better: bool) -> float | None:
    if old == 0:
        return None
    change = (new - old) if higher_is_better else (old - new)
    return 100.0 * change / abs(old)


def improvements(new: dict[str, float], current: dict[str, float] | None) -> dict[str, float | None]:
    """Percent change per metric, positive when the new model is better.

    >>> improvements({"r2": 0.75, "rmse": 0.5}, {"r2": 0.5, "rmse": 1.0})
    {'improvement_r2_percent': 50.0, 'improvement_rmse_percent': 50.0, 'improvement_accuracy_percent': None}
    """
    result: dict[str, float | None] = {}
    for metric, higher_is_better in (("r2", True), ("rmse", False), ("accuracy", True)):
        key = f"improvement_{metric}_percent"
        if current is None or metric not in new or metric not in current:
            result[key] = None
        else:
            result[key] = _percent(new[metric], current[metric], higher_is_better)
    return result


def compare(task: str, new: dict[str, float], current: dict[str, float] | None, margin: float) -> Validation:
    """Promote unless the new model is worse by more than `margin` (a fraction).

    >>> compare("regression", {"r2": 0.7, "rmse": 1.2}, {"r2": 0.8, "rmse": 1.0}, 0.1).promote
    False
    >>> compare("classification", {"accuracy": 0.88}, {"accuracy": 0.9}, 0.05).promote
    True
    """
    gains = improvements(new, current)
    if current is None:
        return Validation(new, None, gains, True, "no current model to compare with")
    if task == "classification":
        limit = current["accuracy"] * (1 - margin)
        ok = new["accuracy"] >= limit
        detail = f"accuracy {new['accuracy']:.4f} vs current {current['accuracy']:.4f} (minimum {limit:.4f})"
    else:
        limit = current["rmse"] * (1 + margin)
        ok = new["rmse"] <= limit
        detail = f"rmse {new['rmse']:.4f} vs current {current['rmse']:.4f} (maximum {limit:.4f})"
    return Validation(new, current, gains, ok, ("promoted: " if ok else "rejected: ") + detail)
