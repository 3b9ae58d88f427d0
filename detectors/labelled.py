"""Concept drift and performance signals on the labelled (prediction, actual) stream."""

from __future__ import annotations

import numpy as np

from .base import StreamDetector
from .cusum import lindley
from .ranks import RankTransform


class LabelledSignals(StreamDetector):
    """Error CUSUM (concept drift) and rolling R2 / RMSE / accuracy (performance).

    Concept drift: an upward CUSUM on normal scores of the error (|error|, or 0/1 for
    classification) against a baseline error sample; it fires only if the MAE of the
    last ``concept_window`` events is also ``error_threshold`` (15 %) above the
    baseline MAE. Performance: rolling metrics over the last ``window`` events; a metric
    fires when past the design's drop and the window's MSE (or error rate) is above the
    baseline by ``z`` standard errors. Until ``baseline_size`` errors are seen, when
    the reference had no predictions, the first ones are the baseline.
    """

    _state_fields = ("s", "ring", "buffer", "seen", "baseline", "base_errors")
    _settings = ("task", "window", "concept_window", "baseline_size", "baseline",
                 "base_errors", "delta", "h", "z", "floors")

    def __init__(self, task, window, concept_window, baseline_size, baseline, base_errors,
                 delta, h, z, floors) -> None:
        self.task, self.window = task, int(window)
        self.concept_window, self.baseline_size = int(concept_window), int(baseline_size)
        self.baseline = dict(baseline or {})
        self.base_errors = None if base_errors is None else np.asarray(base_errors, float)
        self.delta, self.h, self.z = float(delta), float(h), float(z)
        self.floors = dict(floors)
        self._reset()

    def _reset(self) -> None:
        self.s = np.zeros(1)
        # columns: valid, err (abs or 0/1), err^2, actual, actual^2
        self.ring = np.zeros((self.window, 5))
        self.buffer = np.zeros((0, 2))
        self.seen = 0
        self._prepare()

    def set_state(self, state) -> None:
        super().set_state(state)
        self._prepare()

    def _prepare(self) -> None:
        self._rt = None
        if self.base_errors is not None and len(self.base_errors):
            self._rt = RankTransform(self.base_errors)
            self._psi = self._rt.cgf(self.delta)
            self._mae0 = float(self.base_errors.mean())
            sq = self.base_errors**2
            self._sq_sd = float(sq.std())

    @property
    def ready(self) -> bool:
        return self._rt is not None

    def _learn_baseline(self, pred: np.ndarray, act: np.ndarray) -> int:
        """Use the first labelled events as baseline; return how many were used."""
        need = self.baseline_size - len(self.buffer)
        take = min(need, len(pred))
        self.buffer = np.concatenate([self.buffer, np.c_[pred[:take], act[:take]]])
        if len(self.buffer) >= self.baseline_size:
            p, a = self.buffer[:, 0], self.buffer[:, 1]
            e = (p != a).astype(float) if self.task == "classification" else np.abs(a - p)
            self.base_errors = e
            if self.task == "classification":
                self.baseline.setdefault("accuracy", float(1 - e.mean()))
            else:
                sst = float(((a - a.mean()) ** 2).sum())
                self.baseline.setdefault("rmse", float(np.sqrt((e**2).mean())))
                self.baseline.setdefault("r2", 1 - float((e**2).sum()) / sst if sst else 0.0)
            self.buffer = np.zeros((0, 2))
            self._prepare()
        return take

    def update_many(self, values: np.ndarray):
        return self.update_pairs(values[:, 0], values[:, 1])

    def update_pairs(self, pred: np.ndarray, act: np.ndarray) -> dict[str, np.ndarray]:
        """Return per-event arrays: ``strength`` (n, 4) for mae/r2/rmse/accuracy and
        the metric paths; events used for the baseline have strength 0."""
        n = len(pred)
        skip = 0 if self.ready else self._learn_baseline(pred, act)
        out = {k: np.zeros(n) for k in ("mae", "r2", "rmse", "accuracy", "cusum")}
        out["strength"] = np.zeros((n, 4))
        if skip:
            out.update(self._roll(pred[:skip], act[:skip], skip_only=True))
        if skip < n and self.ready:
            res = self._signals(pred[skip:], act[skip:])
            for k, v in res.items():
                out[k][skip:] = v
        self.seen += n
        return out

    def _roll(self, pred, act, skip_only=False):
        e = (pred != act).astype(float) if self.task == "classification" \
            else np.abs(act - pred)
        rows = np.c_[np.ones_like(e), e, e * e, act, act * act]
        hist = np.concatenate([self.ring, rows])
        self.ring = hist[-self.window:].copy()
        return {} if skip_only else (e, hist)

    def _signals(self, pred, act):
        n = len(pred)
        e, hist = self._roll(pred, act)
        z = self._rt.score[self._rt.slots(e)]
        path = lindley((self.delta * z - self._psi)[:, None], self.s)[:, 0]
        self.s = path[-1:].copy()
        c = np.vstack([np.zeros((1, 5)), np.cumsum(hist, axis=0)])
        w, cw, W = self.window, self.concept_window, self.window
        end = np.arange(W + 1, W + n + 1)
        win = c[end] - c[end - w]
        cwin = c[end] - c[end - min(cw, w)]
        cnt = np.maximum(win[:, 0], 1)
        mae_recent = cwin[:, 1] / np.maximum(cwin[:, 0], 1)
        mse = win[:, 2] / cnt
        var_a = np.maximum(win[:, 4] / cnt - (win[:, 3] / cnt) ** 2, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(var_a > 0, 1 - mse / var_a, 0.0)
        enough = win[:, 0] >= min(self.floors["min_samples"], w)
        st = np.zeros((n, 4))
        mae0 = max(self._mae0, 1e-12)
        st[:, 0] = np.where((path > self.h) & (mae_recent > mae0 * (1 + self.floors["error"])),
                            path / self.h, 0.0)
        b = self.baseline
        if self.task == "classification":
            acc = 1 - win[:, 1] / cnt
            acc0 = b.get("accuracy", 1 - self._mae0)
            se = np.sqrt(max(acc0 * (1 - acc0), 1e-12) / cnt)
            zacc = (acc0 - acc) / se
            drop = (acc0 - acc) / max(acc0, 1e-12)
            st[:, 3] = np.where(enough & (zacc > self.z) & (drop > self.floors["accuracy"]),
                                np.maximum(zacc / self.z, drop / self.floors["accuracy"]), 0)
            out = {"accuracy": acc}
        else:
            rmse = np.sqrt(mse)
            rmse0 = b.get("rmse", float(np.sqrt(mae0)))
            se = np.maximum(self._sq_sd, 1e-12) / np.sqrt(cnt)
            zmse = (mse - rmse0**2) / se
            sig = enough & (zmse > self.z)
            rise = rmse / max(rmse0, 1e-12) - 1
            st[:, 2] = np.where(sig & (rise > self.floors["rmse"]),
                                np.minimum(zmse / self.z, rise / self.floors["rmse"]), 0)
            if "r2" in b:
                drop = (b["r2"] - r2) / max(abs(b["r2"]), 1e-12)
                st[:, 1] = np.where(sig & (drop > self.floors["r2"]),
                                    np.minimum(zmse / self.z, drop / self.floors["r2"]), 0)
            out = {"rmse": rmse, "r2": r2}
        out.update({"mae": mae_recent, "cusum": path, "strength": st})
        return out
