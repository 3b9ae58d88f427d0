"""The one definition of a prediction's error, used by every part of driftline.

A class prediction errs 0 or 1 (a mismatch); a numeric prediction errs by its absolute
distance to the actual. Class labels compare as numbers when both sides are numbers
(so ``1`` and ``1.0`` are the same class), else as text. A pair with a missing side has
no error: NaN, for the caller to leave out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def prediction_errors(task: str, predictions: Any, actuals: Any) -> np.ndarray:
    """Errors as float64, NaN where the prediction or the actual is missing.

    >>> prediction_errors("classification", ["a", "b", None], ["a", "c", "a"]).tolist()
    [0.0, 1.0, nan]
    >>> prediction_errors("classification", [1, 2], ["1.0", 2.0]).tolist()
    [0.0, 0.0]
    >>> prediction_errors("regression", [1.0, 2.0], [1.5, 2.0]).tolist()
    [0.5, 0.0]
    """
    p, a = _as_array(predictions), _as_array(actuals)
    if p.shape != a.shape:
        raise ValueError(f"predictions and actuals differ in length ({len(p)} and {len(a)})")
    if task == "regression" or (p.dtype.kind in "biuf" and a.dtype.kind in "biuf"):
        pn, an = _numbers(p), _numbers(a)
        errors = np.abs(an - pn) if task == "regression" else (pn != an).astype(np.float64)
        errors[np.isnan(pn) | np.isnan(an)] = np.nan
        return errors
    return _class_mismatches(p, a)


def _as_array(values: Any) -> np.ndarray:
    return np.asarray(values).ravel()


def _numbers(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "biuf":
        return values.astype(np.float64)
    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(np.float64)


def _class_mismatches(p: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Labels of mixed kinds: numbers where both sides read as numbers, text elsewhere."""
    missing = pd.isna(p) | pd.isna(a)
    pn, an = _numbers(p), _numbers(a)
    numeric = ~(np.isnan(pn) | np.isnan(an))
    errors = (p.astype(str) != a.astype(str)).astype(np.float64)
    errors[numeric] = (pn[numeric] != an[numeric]).astype(np.float64)
    errors[missing] = np.nan
    return errors
