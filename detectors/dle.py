"""Direct loss estimation (DLE) of a regression model without labels.

A second, small model learns the model's expected absolute error from the inputs and
the prediction on the reference: where the model errs more (a region of the inputs it
fits badly, or where the target is noisier), the estimate rises, so a shift of the
inputs into such a region raises the estimated MAE before any label arrives.

Fitted with scikit-learn's ``HistGradientBoostingRegressor`` (small: few shallow trees)
and kept as plain arrays (:class:`LossModel`): predicting is a vectorised walk of the
trees in numpy, and the model saves with the reference profile without pickle. The
model is fitted on the older ``1 - HOLDOUT_SHARE`` of the time-ordered reference and
the newest rows are held out: the same model's estimates there are the sequential
test's baseline. They do not carry the fit's own training error (an in-sample fit
looks better on its rows than on any new event, and every new event would look like a
degradation), and unlike out-of-fold estimates of K models they come from the one model
the stream sees, so the baseline is the stream's no-change distribution exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .errors import DetectorError

FIT_PARAMS = {"max_iter": 60, "max_leaf_nodes": 15, "learning_rate": 0.1,
              "min_samples_leaf": 40, "early_stopping": False}
MAX_FIT_ROWS = 50_000  # the last rows of a longer reference (fitting stays a few seconds)
HOLDOUT_SHARE = 0.3  # the reference's newest rows, kept out of the fit: the test's baseline
MIN_FIT_ROWS = 400  # labelled reference rows: 280 to fit on, 120 held out


@dataclass(frozen=True)
class LossModel:
    """Trees of a fitted boosting model as flat arrays: node ``i`` splits on
    ``feature[i]`` at ``threshold[i]`` (left when ``x <= threshold``, or when ``x`` is
    NaN and ``missing_left[i]``), or is a leaf with ``value[i]``; ``roots`` are the
    trees' first nodes. The estimate is ``baseline`` plus the leaves reached."""

    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    is_leaf: np.ndarray
    roots: np.ndarray
    baseline: float
    depth: int

    @classmethod
    def from_sklearn(cls, est) -> "LossModel":
        parts, roots, offset = [], [], 0
        for (tree,) in est._predictors:
            nodes = tree.nodes
            if nodes["is_categorical"].any():
                raise DetectorError("the loss model takes numeric inputs only")
            parts.append((nodes, offset))
            roots.append(offset)
            offset += len(nodes)
        cat = np.concatenate

        def field(name, dtype):
            return cat([np.asarray(n[name], dtype) for n, _ in parts]) if parts \
                else np.zeros(0, dtype)

        left = cat([n["left"].astype(np.int64) + o for n, o in parts]) if parts \
            else np.zeros(0, np.int64)
        right = cat([n["right"].astype(np.int64) + o for n, o in parts]) if parts \
            else np.zeros(0, np.int64)
        depth = int(max((int(n["depth"].max()) for n, _ in parts), default=0))
        return cls(field("feature_idx", np.int64), field("num_threshold", np.float64),
                   field("missing_go_to_left", bool), left, right,
                   field("value", np.float64), field("is_leaf", bool),
                   np.asarray(roots, np.int64),
                   float(np.ravel(est._baseline_prediction)[0]), depth)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Estimated absolute error of each row of ``x`` (rows, inputs), at least 0."""
        x = np.asarray(x, dtype=np.float64)
        n = len(x)
        if not len(self.roots):
            return np.full(n, max(self.baseline, 0.0))
        node = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
        rows = np.arange(n)[:, None]
        for _ in range(self.depth):
            leaf = self.is_leaf[node]
            if leaf.all():
                break
            v = x[rows, self.feature[node]]
            go_left = np.where(np.isnan(v), self.missing_left[node], v <= self.threshold[node])
            node = np.where(leaf, node, np.where(go_left, self.left[node], self.right[node]))
        return np.maximum(self.baseline + self.value[node].sum(axis=1), 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LossModel":
        return cls(np.asarray(d["feature"], np.int64), np.asarray(d["threshold"], np.float64),
                   np.asarray(d["missing_left"], bool), np.asarray(d["left"], np.int64),
                   np.asarray(d["right"], np.int64), np.asarray(d["value"], np.float64),
                   np.asarray(d["is_leaf"], bool), np.asarray(d["roots"], np.int64),
                   float(d["baseline"]), int(d["depth"]))


def fit_loss_model(x: np.ndarray, abs_error: np.ndarray, seed: int = 0,
                   holdout: float = HOLDOUT_SHARE) -> tuple[LossModel, np.ndarray]:
    """The loss model fitted on the first ``1 - holdout`` of the rows, and its estimates
    on the rest (held out). ``x``: (rows, inputs), the inputs and the prediction,
    time-ordered; NaN allowed. The held-out estimates are exactly what the model gives
    a new event of the reference's regime: the sequential test's baseline."""
    from sklearn.ensemble import HistGradientBoostingRegressor  # building a profile only
    from threadpoolctl import threadpool_limits

    x = np.asarray(x, dtype=np.float64)[-MAX_FIT_ROWS:]
    y = np.asarray(abs_error, dtype=np.float64)[-MAX_FIT_ROWS:]
    if len(y) < MIN_FIT_ROWS:
        raise DetectorError(f"a loss model needs at least {MIN_FIT_ROWS} labelled reference rows, got {len(y)}")
    cut = int(round(len(y) * (1.0 - holdout)))
    # one thread: the trees are small, and OpenMP threads on a busy machine cost far
    # more than they save (measured: 40 s instead of 1 s on 2 shared cores)
    with threadpool_limits(1):
        est = HistGradientBoostingRegressor(random_state=seed, **FIT_PARAMS).fit(x[:cut], y[:cut])
    model = LossModel.from_sklearn(est)
    return model, model.predict(x[cut:])
