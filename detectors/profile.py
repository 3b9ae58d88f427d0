"""Reference profile of one model: what "no drift" looks like."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ._state import pack, unpack
from . import dependence as dep
from . import reconstruction
from .config import DetectorConfig
from .errors import DetectorError, EmptyReferenceError
from .prediction_error import prediction_errors
from . import performance_estimate


def regression_metrics(pred: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """R2 and RMSE of ``pred`` against ``actual``."""
    err = actual - pred
    sse = float(err @ err)
    sst = float(((actual - actual.mean()) ** 2).sum())
    return {"r2": 1.0 - sse / sst if sst > 0 else 0.0,
            "rmse": float(np.sqrt(sse / len(err)))}


def _feature_split(frame: pd.DataFrame, feature_columns, prediction_column,
                   actual_column, score_column=None) -> tuple[list[str], list[str]]:
    """The numeric and the categorical feature columns (booleans are categorical);
    raises when the frame is empty or lacks a named column."""
    if frame is None or len(frame) == 0 or frame.shape[1] == 0:
        raise EmptyReferenceError("reference data is empty: no rows or no columns")
    special = {c for c in (prediction_column, actual_column, score_column) if c}
    missing = [c for c in special | set(feature_columns or ()) if c not in frame]
    if missing:
        raise DetectorError(f"reference data has no column(s): {', '.join(missing)}")
    cols = list(feature_columns) if feature_columns is not None else [
        c for c in frame.columns if c not in special]
    numeric = [c for c in cols if pd.api.types.is_numeric_dtype(frame[c])
               and not pd.api.types.is_bool_dtype(frame[c])]
    return numeric, [c for c in cols if c not in numeric]


def _numeric_sample(frame: pd.DataFrame, column: str, rng: np.random.Generator,
                    cap: int) -> np.ndarray:
    """The column's finite values, a random subsample of ``cap`` when more (unsorted)."""
    v = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise EmptyReferenceError(f"reference column {column!r} has no finite values")
    if v.size > cap:
        v = rng.choice(v, size=cap, replace=False)
    return v


def _reference_errors(pred: np.ndarray, act: np.ndarray
                      ) -> tuple[np.ndarray, str, dict[str, float]]:
    """The errors of the reference's predictions (absolute, or 0/1 when the actuals
    look like classes: not floats with more than 20 distinct values), the task and
    its metrics; pairs with a missing value are left out."""
    ok = pd.notna(pred) & pd.notna(act)
    pred, act = pred[ok], act[ok]
    if not (pd.api.types.is_float_dtype(act) and len(np.unique(act)) > 20):
        errors = prediction_errors("classification", pred, act)
        return errors, "classification", {"accuracy": float(1.0 - errors.mean())}
    pred, act = pred.astype(np.float64), act.astype(np.float64)
    return prediction_errors("regression", pred, act), "regression", regression_metrics(pred, act)


@dataclass(frozen=True)
class ReferenceProfile:
    """Per-column reference samples and statistics, plus baseline metrics.

    Build it with :meth:`from_frame`. Numeric columns keep a sorted sample (at most
    ``config.reference_cap`` values, a deterministic seeded subsample), its mean and
    standard deviation; categorical columns keep category frequencies. When the frame
    has prediction and actual columns, the absolute errors (or 0/1 errors for
    classification) are kept as the concept-drift baseline.

    With ``config.reference_order == "time"`` (the default: the frame's rows are in
    event order, as a training export is) ``dependence`` holds each monitored series'
    long-run variance factor (see :mod:`detectors.dependence`), estimated on the rows
    in frame order before any subsampling (at most the last :data:`DEPENDENCE_ROWS`):
    ``mean``, ``var``, ``ks``, ``out`` and ``lag1`` per numeric column (NaN where the
    column has fewer than ``config.dependence_min_rows`` finite values),
    ``categorical`` per categorical column, ``errors`` for the error series, and the
    row counts. It is None when the order is "shuffled" or the frame is shorter than
    ``dependence_min_rows``; the monitor then learns the dependence from the stream.

    ``estimator`` (None when the model has none) is what estimates the model's
    performance without labels (:mod:`detectors.performance_estimate`): CBPE for a
    classifier whose reference has scores (``score_column``), DLE for a regression
    model when ``config.loss_estimator``.
    ``quality`` (:func:`quality_of`; None in a profile saved before it existed) holds
    the data-quality rates the quality signals compare with: per feature column its
    missing share, per numeric column its repeat rate (consecutive equal values), with
    the long-run variance factors of both indicators when the rows are in time order.
    It is derived from the same rows as the rest, so it is left out of the fingerprint
    (older profiles keep theirs).
    """

    numeric_columns: tuple[str, ...]
    categorical_columns: tuple[str, ...]
    samples: tuple[np.ndarray, ...]
    means: np.ndarray
    stds: np.ndarray
    categories: dict[str, dict[str, int]]
    baseline: dict[str, float]
    errors: np.ndarray | None = None
    task: str = "regression"
    dependence: dict[str, Any] | None = None
    estimator: dict[str, Any] | None = None
    # the model's numeric predictions (``column``, sorted ``sample``, dependence
    # ``factors`` of their normal scores or None) and the numeric columns' joint
    # structure (:func:`detectors.reconstruction.fit`); None when absent
    prediction: dict[str, Any] | None = None
    joint: dict[str, Any] | None = None
    fingerprint: str = field(default="", compare=False)
    quality: dict[str, Any] | None = None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, feature_columns: Sequence[str] | None = None,
                   prediction_column: str | None = None, actual_column: str | None = None,
                   baseline: Mapping[str, float] | None = None,
                   config: DetectorConfig = DetectorConfig(),
                   score_column: str | None = None) -> "ReferenceProfile":
        """Profile a reference (training) frame.

        Examples
        --------
        >>> df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"]})
        >>> p = ReferenceProfile.from_frame(df)
        >>> p.numeric_columns, p.categorical_columns, p.categories["c"]
        (('x',), ('c',), {'a': 2, 'b': 1})
        """
        numeric, categorical = _feature_split(frame, feature_columns, prediction_column,
                                              actual_column, score_column)
        if score_column and score_column not in frame:
            raise DetectorError(f"reference data has no score column {score_column!r}")
        rng = np.random.default_rng(config.seed)
        ordered = config.reference_order == "time" and len(frame) >= config.dependence_min_rows
        tail = frame.iloc[-DEPENDENCE_ROWS:]
        dependence = _dependence(tail, numeric, categorical, config) if ordered else None
        samples = [_numeric_sample(frame, c, rng, config.reference_cap) for c in numeric]
        cats = {c: {str(k): int(n) for k, n in
                    frame[c].dropna().astype(str).value_counts(sort=False).items()}
                for c in categorical}
        if not numeric and not any(cats.values()):
            raise EmptyReferenceError("reference data has no usable feature values")
        base = dict(baseline or {})
        errors, task, estimator = None, "regression", None
        if prediction_column and actual_column:
            errors, task, metrics = _reference_errors(frame[prediction_column].to_numpy(),
                                                      frame[actual_column].to_numpy())
            for k, v in metrics.items():
                base.setdefault(k, v)
            if dependence is not None:
                dependence.update(_error_dependence(errors, config))
            estimator = performance_estimate.build(
                frame, numeric, prediction_column, actual_column, score_column, task,
                config, rng, ordered)
            if errors.size > config.reference_cap:
                errors = rng.choice(errors, size=config.reference_cap, replace=False)
        # mean and sd of each sample as drawn: those of the sorted one may differ in the
        # last bits, and the fingerprints with them
        obj = cls(tuple(numeric), tuple(categorical), tuple(np.sort(v) for v in samples),
                  np.array([float(v.mean()) for v in samples]),
                  np.array([float(v.std()) for v in samples]), cats,
                  {k: float(v) for k, v in base.items()}, errors, task, dependence,
                  estimator, _prediction(frame, prediction_column, rng, config, ordered),
                  _joint(tail, numeric),
                  quality=quality_of(frame, numeric, categorical, ordered))
        return obj._with_fingerprint()

    def _payload(self) -> dict[str, Any]:
        return {"numeric": list(self.numeric_columns),
                "categorical": list(self.categorical_columns),
                "samples": list(self.samples), "means": self.means, "stds": self.stds,
                "categories": self.categories, "baseline": self.baseline,
                "errors": self.errors, "task": self.task,
                # only when known: older profiles keep their fingerprints
                **({"dependence": self.dependence} if self.dependence is not None else {}),
                **({"estimator": self.estimator} if self.estimator is not None else {}),
                **({"prediction": self.prediction} if self.prediction is not None else {}),
                **({"joint": self.joint} if self.joint is not None else {})}

    def _with_fingerprint(self) -> "ReferenceProfile":
        h = hashlib.sha256()
        p = self._payload()
        for key in sorted(p):
            val = p[key]
            h.update(key.encode())
            arrs = val if isinstance(val, list) and val and isinstance(val[0], np.ndarray) \
                else [val]
            if key in ("dependence", "prediction", "joint"):
                arrs = [val[k] for k in sorted(val)]
            if key == "estimator":  # nested arrays: their packed bytes
                arrs = [np.frombuffer(pack("estimator", val), np.uint8)]
            for a in arrs:
                h.update(np.ascontiguousarray(a).tobytes() if isinstance(a, np.ndarray)
                         else repr(a).encode())
        object.__setattr__(self, "fingerprint", h.hexdigest())
        return self

    def to_bytes(self) -> bytes:
        extra = {"quality": self.quality} if self.quality is not None else {}
        return pack("ReferenceProfile", {**self._payload(), **extra})

    @classmethod
    def from_bytes(cls, data: bytes) -> "ReferenceProfile":
        p = unpack("ReferenceProfile", data)
        obj = cls(tuple(p["numeric"]), tuple(p["categorical"]), tuple(p["samples"]),
                  p["means"], p["stds"], p["categories"], p["baseline"], p["errors"],
                  p["task"], p.get("dependence"), p.get("estimator"), p.get("prediction"),
                  p.get("joint"), quality=p.get("quality"))
        return obj._with_fingerprint()


DEPENDENCE_ROWS = 200_000


def repeats(v: np.ndarray) -> np.ndarray:
    """Per event after the first, whether it equals the one before (NaN never does)."""
    return v[1:] == v[:-1]


def quality_of(frame: pd.DataFrame, numeric, categorical, ordered: bool) -> dict[str, Any]:
    """The missing share of every feature column and the repeat rate of every numeric
    one, with their indicators' long-run variance factors (1 when the rows are not in
    time order; at most the last :data:`DEPENDENCE_ROWS` rows count for them)."""
    tail = frame.iloc[-DEPENDENCE_ROWS:]
    columns = list(numeric) + list(categorical)
    missing = {c: float(frame[c].isna().mean()) for c in columns}
    miss_tau = {c: float(max(dep.long_run_factor(tail[c].isna().to_numpy(np.float64))[0], 1.0))
                if ordered else 1.0 for c in columns}
    rate, rep_tau = {}, {}
    for c in numeric:
        v = frame[c].to_numpy(dtype=np.float64, na_value=np.nan)
        rate[c] = float(repeats(v).mean()) if len(v) > 1 else 0.0
        r = repeats(tail[c].to_numpy(dtype=np.float64, na_value=np.nan)).astype(np.float64)
        rep_tau[c] = float(max(dep.long_run_factor(r)[0], 1.0)) if ordered else 1.0
    return {"rows": int(len(frame)), "missing": missing, "missing_factor": miss_tau,
            "repeat": rate, "repeat_factor": rep_tau}


def _dependence(frame: pd.DataFrame, numeric, categorical, config) -> dict[str, Any]:
    """Long-run variance factors of the frame's series, in row order."""
    z = np.column_stack([dep.normal_scores(frame[c].to_numpy(dtype=np.float64,
                                                              na_value=np.nan))
                         for c in numeric]) if numeric else np.zeros((len(frame), 0))
    rows = np.isfinite(z).sum(axis=0)
    f = dep.score_factors(z) if numeric else {k: np.zeros(0) for k in
                                              ("mean", "var", "ks", "out", "lag1")}
    short = rows < config.dependence_min_rows
    out: dict[str, Any] = {k: np.where(short, np.nan, v) for k, v in f.items()}
    out["rows"] = rows.astype(np.int64)
    cats = {}
    for c in categorical:
        s = frame[c]
        codes = pd.factorize(s.astype(str).where(s.notna()))[0]
        cats[c] = dep.indicator_factor(codes) \
            if np.count_nonzero(codes >= 0) >= config.dependence_min_rows else float("nan")
    out["categorical"] = cats
    out["errors"] = float("nan")
    out["error_rows"] = 0
    return out


def _error_dependence(errors: np.ndarray, config) -> dict[str, Any]:
    """The error series' long-run variance factor (NaN when too short) and its rows."""
    e = errors[-DEPENDENCE_ROWS:]
    enough = len(e) >= config.dependence_min_rows
    return {"errors": float(max(dep.long_run_factor(e)[0], 1.0)) if enough else float("nan"),
            "error_rows": int(len(errors))}


def _prediction(frame: pd.DataFrame, column: str | None, rng: np.random.Generator,
                config, ordered: bool) -> dict[str, Any] | None:
    """The reference's numeric predictions: a sorted sample and, in time order, the
    dependence factors of their normal scores (None: learnt with the features')."""
    if not column or pd.api.types.is_bool_dtype(frame[column]):
        return None
    # numbers, possibly in an object column (a retrain's reference: None, then the
    # holdout's predictions); text labels are not numbers
    given = frame[column].notna().to_numpy()
    v = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(v).any() or np.count_nonzero(np.isfinite(v)) < np.count_nonzero(given):
        return None
    frame = pd.DataFrame({column: v})
    f = dep.score_factors(dep.normal_scores(v[-DEPENDENCE_ROWS:])[:, None]) if ordered else None
    return {"column": str(column), "sample": np.sort(_numeric_sample(frame, column, rng,
                                                                      config.reference_cap)),
            "factors": None if f is None else {k: float(f[k][0]) for k in ("mean", "var")}}


def _joint(frame: pd.DataFrame, numeric) -> dict[str, Any] | None:
    """The numeric columns' joint structure for the multivariate signal (or None)."""
    if len(numeric) < 2:
        return None
    z = np.column_stack([dep.normal_scores(frame[c].to_numpy(dtype=np.float64,
                                                             na_value=np.nan))
                         for c in numeric])
    return reconstruction.fit(z)
