"""Confidence-based performance estimation (CBPE) of a classifier without labels.

A classifier that gives each prediction a probability ``q`` of being right expects to be
right ``q`` of the time when ``q`` is calibrated, so the mean of ``q`` over a window is an
unbiased estimate of its accuracy there: no label needed. ``q`` is the probability of
the *predicted* class (:func:`predicted_class_probability`), so the estimate covers
binary and multi-class models and any decision threshold.

Calibration is checked on the reference (which has scores and actuals): the
Hosmer-Lemeshow statistic over ``bins`` quantile bins of ``q`` compares the number of
right predictions in each bin with the number ``q`` expects; it is about chi-square with
``bins`` degrees of freedom for calibrated scores (an external validation: nothing is
fitted). Scores that fail it at ``alpha`` are recalibrated once, by isotonic regression
of "right" on ``q`` over the reference, and the profile records it. The expected
calibration error (ECE) is reported beside the test: the bound it must stay within is
what the reference size allows, so the test and not a fixed ECE decides.

>>> rng = np.random.default_rng(0)
>>> q = rng.uniform(0.5, 1.0, 20_000)
>>> right = rng.random(20_000) < q
>>> cal = CalibrationMap.fit(q, right)
>>> cal.recalibrated, round(float(cal.apply(q).mean() - right.mean()), 3)
(False, -0.003)
>>> bad = CalibrationMap.fit(q, rng.random(20_000) < q ** 3)
>>> bad.recalibrated, round(float(bad.apply(q).mean() - (q ** 3).mean()), 2)
(True, 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.stats import chi2

from .errors import DetectorError


def predicted_class_probability(predictions: Sequence[Any], scores: Sequence[Any],
                                positive: Any = None) -> np.ndarray:
    """The probability each event's model gave its predicted class; NaN when unknown.

    ``scores[i]`` is a mapping class -> probability (the predicted class is looked up
    as given, then as text), a number (the probability of the ``positive`` class of a
    binary model: ``q = p`` when the prediction is ``positive``, else ``1 - p``) or None.

    >>> predicted_class_probability([1, 0, "b", 0], [0.9, 0.2, {"a": 0.3, "b": 0.7}, None], 1)
    array([0.9, 0.8, 0.7, nan])
    """
    out = np.full(len(scores), np.nan)
    for i, (pred, s) in enumerate(zip(predictions, scores)):
        if isinstance(s, Mapping):
            v = s.get(pred, s.get(str(pred)))
            if v is None and isinstance(pred, float) and pred.is_integer():
                v = s.get(str(int(pred)))  # 1.0 -> "1": labels as JSON keys
            out[i] = np.nan if v is None else float(v)
        elif s is not None and positive is not None:
            out[i] = float(s) if _same_class(pred, positive) else 1.0 - float(s)
    out[(out < 0) | (out > 1)] = np.nan
    return out


def positive_probability_to_predicted(predictions: np.ndarray, positive_scores: np.ndarray,
                                      positive: Any) -> np.ndarray:
    """:func:`predicted_class_probability` for a column of positive-class
    probabilities (vectorised: a file's ``--score-column``)."""
    p = np.asarray(positive_scores, dtype=np.float64)
    pred = np.asarray(predictions)
    if pred.dtype.kind in "biuf" and isinstance(positive, (int, float)):
        is_pos = pred == positive  # numbers compare as numbers, in one pass
    else:
        is_pos = np.array([_same_class(v, positive) for v in pred], dtype=bool)
    q = np.where(is_pos, p, 1.0 - p)
    q[(q < 0) | (q > 1)] = np.nan
    return q


def _same_class(a: Any, b: Any) -> bool:
    """Classes compare as numbers when both are, else as text (as prediction errors)."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def positive_class(classes: Sequence[Any]) -> Any:
    """The class a binary model's single score is the probability of: the larger of the
    two (1 of 0/1, True of False); None unless exactly two classes."""
    uniq = sorted({_as_number_or_text(c) for c in classes}, key=lambda v: (isinstance(v, str), v))
    return uniq[-1] if len(uniq) == 2 else None


def positive_index(classes: Sequence[Any]) -> int | None:
    """Where a binary model's positive class (`positive_class`) is among its classes.

    >>> positive_index(["yes", "no"]), positive_index([0, 1]), positive_index([1, 2, 3])
    (0, 1, None)
    """
    positive = positive_class(classes)
    return None if positive is None else [_as_number_or_text(c) for c in classes].index(positive)


def _as_number_or_text(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def hosmer_lemeshow(q: np.ndarray, right: np.ndarray, bins: int = 10
                    ) -> tuple[float, float, float]:
    """(statistic, p-value, ECE) of probabilities ``q`` against outcomes ``right`` over
    ``bins`` equal-count bins of ``q``."""
    order = np.argsort(q, kind="stable")
    groups = np.array_split(order, min(bins, len(q)))
    stat, ece = 0.0, 0.0
    for g in groups:
        n, e, o = len(g), float(q[g].sum()), float(right[g].sum())
        var = e * (1.0 - e / n)
        stat += (o - e) ** 2 / var if var > 1e-12 else 0.0
        ece += abs(o - e) / len(q)
    return stat, float(chi2.sf(stat, len(groups))), ece


@dataclass(frozen=True)
class CalibrationMap:
    """``q`` -> the probability of being right: the identity when the reference found
    the scores calibrated, else an isotonic step function (``knots`` -> ``values``,
    linear between knots, flat outside)."""

    recalibrated: bool
    knots: np.ndarray
    values: np.ndarray
    hl_statistic: float
    hl_pvalue: float
    ece: float

    @classmethod
    def fit(cls, q: np.ndarray, right: np.ndarray, alpha: float = 0.01,
            bins: int = 10) -> "CalibrationMap":
        """Check ``q`` against ``right`` on the reference; recalibrate when it fails."""
        q = np.asarray(q, dtype=np.float64)
        right = np.asarray(right, dtype=np.float64)
        ok = np.isfinite(q) & np.isfinite(right)
        q, right = q[ok], right[ok]
        if len(q) < 2 * bins:
            raise DetectorError(f"the reference has {len(q)} scored and labelled rows; "
                                f"checking calibration needs at least {2 * bins}")
        stat, p, ece = hosmer_lemeshow(q, right, bins)
        if p >= alpha:
            return cls(False, np.zeros(0), np.zeros(0), stat, p, ece)
        from sklearn.isotonic import IsotonicRegression  # only when building a profile
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(q, right)
        return cls(True, np.asarray(iso.X_thresholds_, np.float64),
                   np.asarray(iso.y_thresholds_, np.float64), stat, p, ece)

    def apply(self, q: np.ndarray) -> np.ndarray:
        """The calibrated probability of being right (NaN stays NaN)."""
        q = np.asarray(q, dtype=np.float64)
        if not self.recalibrated:
            return q
        return np.where(np.isfinite(q), np.interp(q, self.knots, self.values), np.nan)

    def to_dict(self) -> dict[str, Any]:
        return {"recalibrated": self.recalibrated, "knots": self.knots,
                "values": self.values, "hl_statistic": self.hl_statistic,
                "hl_pvalue": self.hl_pvalue, "ece": self.ece}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CalibrationMap":
        return cls(bool(d["recalibrated"]), np.asarray(d["knots"], np.float64),
                   np.asarray(d["values"], np.float64), float(d["hl_statistic"]),
                   float(d["hl_pvalue"]), float(d["ece"]))
