"""The model's performance estimated without labels: what the reference profile keeps,
and each event's estimated error.

Two estimators, one shape: each event gets an *estimated error* ``l`` whose mean over a
window estimates the model's error there, with no label.

* ``cbpe`` (a classifier with scores, :mod:`detectors.cbpe`): ``l = 1 - q``, with ``q``
  the (calibrated) probability of the predicted class; ``1 - mean(l)`` estimates the
  accuracy.
* ``dle`` (a regression model, :mod:`detectors.dle`): ``l`` is the loss model's
  estimate of ``|error|`` from the inputs and the prediction; ``mean(l)`` estimates
  the MAE.

The profile keeps, under ``estimator`` (format :data:`FORMAT`): the kind, the metric,
the calibration map or the loss model, the reference's estimated errors (for
DLE: the loss model's estimates on the reference's newest rows, held out of its fit)
as the test's baseline, their long-run variance factor (NaN when the reference
is not time-ordered: learnt from the stream), and the reference's estimated and
realized metric.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from . import dependence as dep
from .cbpe import CalibrationMap, positive_class, positive_probability_to_predicted, \
    predicted_class_probability
from .dle import MIN_FIT_ROWS, LossModel, fit_loss_model
from .errors import DetectorError
from .prediction_error import prediction_errors

FORMAT = 1
PREDICTION_INPUT = "__prediction__"  # the loss model's last input


def build(frame, numeric: list[str], prediction_column: str, actual_column: str,
          score_column: str | None, task: str, config, rng: np.random.Generator,
          ordered: bool) -> dict[str, Any] | None:
    """The profile's ``estimator`` record, or None when the model has no estimator:
    CBPE for a classifier whose reference has ``score_column``; DLE for a regression
    model when ``config.loss_estimator`` and the frame has at least ``MIN_FIT_ROWS``
    labelled rows (a retrained model's profile has labels on its holdout only, often
    fewer: it then has no estimate, and severity follows the design's rule).
    ``ordered``: the frame's rows are in time order (the errors' dependence is
    estimated from them)."""
    pred = frame[prediction_column].to_numpy()
    act = frame[actual_column].to_numpy()
    ok = np.array([p is not None and a is not None for p, a in zip(pred, act)]) \
        & ~_isna(pred) & ~_isna(act)
    if task == "classification" and score_column:
        return _build_cbpe(frame, pred, act, ok, score_column, config, rng, ordered)
    if task == "regression" and config.loss_estimator and ok.sum() >= MIN_FIT_ROWS:
        return _build_dle(frame, numeric, pred, act, ok, config, rng, ordered)
    return None


def _isna(v: np.ndarray) -> np.ndarray:
    import pandas as pd
    return np.asarray(pd.isna(v), dtype=bool)


def _build_cbpe(frame, pred, act, ok, score_column, config, rng, ordered) -> dict[str, Any]:
    classes = np.unique(np.asarray(act[ok]).astype(str))
    positive = positive_class(list(np.unique(act[ok]))) if len(classes) == 2 else None
    q = scores_to_q(frame[score_column].to_numpy(), pred, positive)
    right = 1.0 - prediction_errors("classification", pred[ok], act[ok])
    keep = np.isfinite(q[ok])
    cal = CalibrationMap.fit(q[ok][keep], right[keep])
    losses = 1.0 - cal.apply(q[ok][keep])
    realized = float(right[keep].mean())
    return _record("cbpe", "accuracy", losses, config, rng, ordered,
                   estimate=1.0 - float(losses.mean()), realized=realized,
                   calibration=cal.to_dict(),
                   positive=None if positive is None else _plain(positive))


def _build_dle(frame, numeric, pred, act, ok, config, rng, ordered) -> dict[str, Any]:
    p = np.asarray(pred[ok], dtype=np.float64)
    err = prediction_errors("regression", p, np.asarray(act[ok], dtype=np.float64))
    x = np.column_stack([frame[c].to_numpy(dtype=np.float64, na_value=np.nan)[ok]
                         for c in numeric] + [p])
    model, held_out = fit_loss_model(x, err, seed=config.seed)
    rows = len(held_out)  # the newest rows: the realized MAE of the same rows beside it
    return _record("dle", "mae", held_out, config, rng, ordered,
                   estimate=float(held_out.mean()), realized=float(err[-rows:].mean()),
                   loss_model=model.to_dict(), inputs=[*numeric, PREDICTION_INPUT])


def _plain(v: Any) -> Any:
    return float(v) if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) \
        else str(v)


def _record(kind, metric, losses, config, rng, ordered, **extra) -> dict[str, Any]:
    """The record with the baseline errors (a sample of ``reference_cap``) and their
    dependence (from all of them, in time order)."""
    tau = float("nan")
    if ordered and len(losses) >= config.dependence_min_rows:
        tau = float(max(dep.long_run_factor(losses[-200_000:])[0], 1.0))
    sample = losses if len(losses) <= config.reference_cap \
        else rng.choice(losses, size=config.reference_cap, replace=False)
    return {"format": FORMAT, "kind": kind, "metric": metric,
            "losses": np.sort(np.asarray(sample, np.float64)), "tau": tau,
            "reference_estimate": extra.pop("estimate"),
            "reference_realized": extra.pop("realized"), **extra}


def scores_to_q(scores: np.ndarray, predictions: np.ndarray, positive: Any) -> np.ndarray:
    """The predicted class's probability from a column of scores: numbers (the positive
    class's probability) or mappings class -> probability."""
    if isinstance(scores, np.ndarray) and scores.dtype.kind == "f" and positive is not None:
        return positive_probability_to_predicted(predictions, scores, positive)
    scores = np.asarray(scores, dtype=object)
    present = [s for s in scores if s is not None][:100]
    if present and all(isinstance(s, (int, float, np.number)) for s in present) and positive is not None:
        p = np.array([np.nan if s is None else float(s) for s in scores])
        return positive_probability_to_predicted(predictions, p, positive)
    return predicted_class_probability(list(predictions), list(scores), positive)


class PerformanceEstimator:
    """Each event's estimated error from a profile's ``estimator`` record."""

    def __init__(self, record: Mapping[str, Any], numeric_columns) -> None:
        if int(record.get("format", 0)) > FORMAT:
            raise DetectorError(f"estimator format {record.get('format')} is newer than "
                                f"this driftline reads ({FORMAT})")
        self.kind, self.metric = str(record["kind"]), str(record["metric"])
        self.reference_estimate = float(record["reference_estimate"])
        self.reference_realized = float(record["reference_realized"])
        self.positive = record.get("positive")
        self.calibration = CalibrationMap.from_dict(record["calibration"]) \
            if self.kind == "cbpe" else None
        self.loss_model = LossModel.from_dict(record["loss_model"]) \
            if self.kind == "dle" else None
        if self.kind == "dle":
            names = list(numeric_columns)
            self._cols = np.array([names.index(c) for c in record["inputs"][:-1]], np.intp)

    @property
    def needs(self) -> str:
        """What an event must carry: ``scores`` (CBPE) or ``predictions`` (DLE)."""
        return "scores" if self.kind == "cbpe" else "predictions"

    def losses(self, numeric: np.ndarray, predictions: np.ndarray | None,
               q: np.ndarray | None) -> np.ndarray:
        """Estimated error per event (NaN where the event lacks what is needed).
        ``numeric``: (events, numeric columns); ``q``: the predicted class's
        probability (CBPE)."""
        n = len(numeric)
        if self.kind == "cbpe":
            return np.full(n, np.nan) if q is None else 1.0 - self.calibration.apply(q)
        if predictions is None:
            return np.full(n, np.nan)
        p = np.asarray(predictions, dtype=np.float64)
        x = np.column_stack([numeric[:, self._cols], p])
        out = self.loss_model.predict(x)
        out[np.isnan(p)] = np.nan
        return out

    @property
    def reference_loss(self) -> float:
        """The reference's mean estimated error (error rate or MAE)."""
        return 1.0 - self.reference_estimate if self.metric == "accuracy" \
            else self.reference_estimate

    def metric_of(self, mean_loss: float) -> float:
        """The metric a mean estimated error stands for (accuracy or MAE)."""
        return 1.0 - mean_loss if self.metric == "accuracy" else mean_loss

    def relative_harm(self, mean_loss):
        """How much worse than the reference's estimate a mean estimated error (a number
        or an array) is, relative to it (> 0: worse)."""
        ref_loss = 1.0 - self.reference_estimate if self.metric == "accuracy" \
            else self.reference_estimate
        if self.metric == "accuracy":
            return (mean_loss - ref_loss) / max(self.reference_estimate, 1e-12)
        return (mean_loss - ref_loss) / max(ref_loss, 1e-12)


def floor_of(metric: str, config) -> float:
    """The design's floor of a metric's change: accuracy 5 %, else the RMSE's 10 %."""
    return config.accuracy_threshold if metric == "accuracy" else config.rmse_threshold


def harm_and_strength(est: PerformanceEstimator, mean_loss, config):
    """The relative harm of mean estimated errors (numbers or arrays; > 0: worse) and
    their strength: the larger of the metric's change over its floor and the error's
    relative rise over ``config.error_threshold`` (the labelled signals the estimate
    stands for, see :mod:`detectors.estimated_performance`)."""
    harm = est.relative_harm(mean_loss)
    rise = (mean_loss - est.reference_loss) / max(est.reference_loss, 1e-12)
    return harm, np.maximum(harm / floor_of(est.metric, config), rise / config.error_threshold)


def impact(est: PerformanceEstimator, mean_loss: float, events: int, config) -> dict[str, Any]:
    """The expected impact of a mean estimated error (see
    :meth:`detectors.estimated_performance.EstimatedPerformance.expected_impact`):
    ``harmful`` when the metric's change is past its floor."""
    harm, strength = harm_and_strength(est, mean_loss, config)
    value, ref = est.metric_of(mean_loss), est.reference_estimate
    return {"metric": est.metric, "reference": round(ref, 6), "estimate": round(value, 6),
            "change": round(value - ref, 6), "relative_harm": round(float(harm), 6),
            "events": int(events), "harmful": bool(harm > floor_of(est.metric, config)),
            "strength": float(strength)}


def batch_impact(reference, recent, prediction_column: str, actual_column: str,
                 score_column: str, config) -> dict[str, Any]:
    """The expected impact on a batch of recent rows of a binary classifier's scores
    (CBPE calibrated on the reference, as the streaming core does)."""
    record = _build_cbpe(reference, reference[prediction_column].to_numpy(),
                         reference[actual_column].to_numpy(),
                         ~_isna(reference[prediction_column].to_numpy())
                         & ~_isna(reference[actual_column].to_numpy()),
                         score_column, config, np.random.default_rng(config.seed), False)
    est = PerformanceEstimator(record, [])
    q = scores_to_q(recent[score_column].to_numpy(dtype=np.float64, na_value=np.nan),
                    recent[prediction_column].to_numpy(), est.positive)
    losses = est.losses(np.zeros((len(recent), 0)), None, q)
    finite = losses[np.isfinite(losses)]
    if not len(finite):
        raise DetectorError(f"no recent row has a prediction and a score ({score_column!r})")
    return impact(est, float(finite.mean()), len(finite), config)
