"""The one streaming core: a per-model monitor over feature and labelled micro-batches."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._state import pack, unpack
from .calibration import DEFAULT_CACHE, Calibration, CalibrationCache, ks_critical
from .categorical import CategoricalWindow
from .config import DetectorConfig
from .cusum import CUSUM
from .errors import DetectorError
from .fusion import Decision, fuse
from .ks_window import KSWindow
from .labelled import LabelledSignals
from .outliers import OutlierRate
from .profile import ReferenceProfile

_LABEL_SIGNALS = ("mae", "r2", "rmse", "accuracy")


class ModelMonitor:
    """Streaming drift monitor of one model.

    Feed feature micro-batches to :meth:`update_features` and labelled ones to
    :meth:`update_labelled`; each returns the decisions that fired inside the batch
    (at most one per ``config.cooldown`` events, none before ``config.min_samples``).

    Examples
    --------
    >>> import pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> ref = pd.DataFrame(rng.normal(size=(5000, 3)), columns=["a", "b", "c"])
    >>> mon = ModelMonitor(ReferenceProfile.from_frame(ref))
    >>> x = rng.normal(size=(4000, 3)); x[2000:, 1] += 1.0
    >>> [(d.offset, d.columns) for d in mon.update_features(x)]
    [(2066, ['b']), (3067, ['b'])]
    """

    def __init__(self, profile: ReferenceProfile, config: DetectorConfig = DetectorConfig(),
                 task: str = "regression", *, cache: CalibrationCache = DEFAULT_CACHE,
                 calibration: Calibration | None = None) -> None:
        if task not in ("regression", "classification"):
            raise DetectorError("task must be 'regression' or 'classification'")
        self.profile, self.config, self.task = profile, config, task
        self._cache = cache
        self._build(calibration)

    # -- construction -------------------------------------------------------------
    def _build(self, calibration: Calibration | None) -> None:
        p, cfg = self.profile, self.config
        self.ks = KSWindow(p.samples, window=cfg.ks_window, stride=cfg.ks_stride)
        cal = calibration or self._cache.get(p, cfg, self.ks.transforms)
        self.calibration = cal
        self._score = np.concatenate([t.score for t in self.ks.transforms]) \
            if p.samples else np.zeros(0)
        self._offsets = self.ks._offsets[:-1]
        d = cal.mean_scale
        self.mean_up = CUSUM(np.full(len(p.samples), d), cal.mean_drift_up, cal.mean_h)
        self.mean_down = CUSUM(np.full(len(p.samples), -d), cal.mean_drift_down, cal.mean_h)
        self.variance = CUSUM(np.full(len(p.samples), cal.var_scale), cal.var_drift, cal.var_h)
        self.outliers = OutlierRate(p.means, p.stds, cal.out_p0, cal.out_p1, cal.out_h,
                                    cfg.z_score_threshold, cfg.outlier_pct_threshold / 100)
        self.cats = {c: CategoricalWindow(p.categories[c], cfg.ks_window, cfg.ks_stride)
                     for c in p.categorical_columns}
        self._cat_crit = {c: w.critical(cal.cat_alpha) for c, w in self.cats.items()}
        self.labelled = LabelledSignals(
            self.task, cfg.performance_window, cfg.concept_window,
            cfg.concept_baseline_size, p.baseline,
            p.errors if p.task == self.task else None, cal.concept_scale, cal.concept_h,
            cal.perf_z, {"error": cfg.error_threshold, "r2": cfg.r2_threshold,
                         "rmse": cfg.rmse_threshold, "accuracy": cfg.accuracy_threshold,
                         "min_samples": cfg.min_samples})
        self.events_seen = 0
        self.labelled_seen = 0
        self._next_feature_fire = cfg.min_samples - 1
        self._next_label_fire = cfg.min_samples - 1
        self._last: dict[str, Any] = {}
        self._crit_cache: dict[tuple[int, int], float] = {}

    def _parts(self):
        return [self.ks, self.mean_up, self.mean_down, self.variance, self.outliers,
                *self.cats.values()]

    # -- features -----------------------------------------------------------------
    def update_features(self, numeric: np.ndarray,
                        categorical: dict[str, np.ndarray] | None = None) -> list[Decision]:
        """Process a micro-batch of feature events; return decisions fired in it.

        ``numeric`` is (n, len(profile.numeric_columns)) float with NaN for missing;
        ``categorical`` maps each categorical column to an array of n values.
        """
        x = np.asarray(numeric, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(-1, len(self.profile.numeric_columns) or 1)
        n = len(x)
        if x.shape[1] != len(self.profile.numeric_columns):
            raise DetectorError(f"expected {len(self.profile.numeric_columns)} numeric "
                                f"columns, got {x.shape[1]}")
        cats = {c: np.asarray((categorical or {})[c], dtype=object) if c in (categorical or {})
                else np.full(n, None, dtype=object) for c in self.cats}
        decisions, start = [], 0
        while start < n:
            saved = [part.get_state() for part in self._parts()]
            fire = self._feature_step(x[start:], {c: v[start:] for c, v in cats.items()})
            if fire is None:
                break
            i, signals = fire
            if i < n - start - 1:  # roll back, redo exactly up to the firing event
                for part, st in zip(self._parts(), saved):
                    part.set_state(st)
                self.events_seen -= n - start
                self._feature_step(x[start:start + i + 1],
                                   {c: v[start:start + i + 1] for c, v in cats.items()})
            offset = self.events_seen - 1
            decisions.append(fuse(signals, offset, self.config, self.snapshot()))
            self._next_feature_fire = offset + self.config.cooldown + 1
            for part in (self.mean_up, self.mean_down, self.variance, self.outliers):
                part._reset()  # restart the sequential tests after an alarm
            start += i + 1
        return decisions

    def _feature_step(self, x: np.ndarray, cats: dict[str, np.ndarray]):
        """Advance all feature detectors; return ``(index, signals)`` of the first
        eligible alarm in the batch, or None."""
        n, c = x.shape
        slots = self.ks.slots(x)
        z = self._score[np.where(slots >= 0, slots + self._offsets, 0)]
        z[slots < 0] = 0.0  # missing values carry no evidence
        up = self.mean_up.update_many(z)
        down = self.mean_down.update_many(z)
        var = self.variance.update_many(z * z)
        o = self.outliers.indicators(x)
        out, rate = self.outliers.update_indicators(o)
        k_idx, d, wn, missing = self.ks.update_slots(slots)
        cal = self.calibration
        floor = self.config.outlier_pct_threshold / 100
        strength = np.zeros((n, c, 4))  # mean, variance, outliers, ks
        strength[:, :, 0] = np.maximum(up, down) / cal.mean_h
        strength[:, :, 1] = var / cal.var_h
        strength[:, :, 2] = np.where(rate >= floor, out / cal.out_h, 0.0)
        ks_strength = self._ks_strength(d, wn)
        strength[k_idx, :, 3] = ks_strength
        cat_strength = np.zeros((n, len(self.cats)))
        cat_info = {}
        for j, (name, win) in enumerate(self.cats.items()):
            ci, stat, tv = win.update_codes(win.codes(cats[name]))
            cat_strength[ci, j] = np.where(win.seen >= self.config.min_samples,
                                           stat / self._cat_crit[name], 0.0)
            cat_info[name] = (stat[-1], tv[-1]) if len(ci) else None
        start = self.events_seen
        self.events_seen += n
        self._record(up, down, var, rate, o, k_idx, d, wn, missing, cat_info)
        alarm = (strength >= 1).any(axis=(1, 2)) | (cat_strength >= 1).any(axis=1)
        alarm &= np.arange(start, start + n) >= self._next_feature_fire
        if not alarm.any():
            return None
        i = int(np.argmax(alarm))
        names = self.profile.numeric_columns
        kinds = ("mean_shift", "variance", "outlier_rate", "ks")
        sig = [{"signal": kinds[k], "column": names[j], "strength": float(strength[i, j, k])}
               for j, k in zip(*np.nonzero(strength[i] >= 1))]
        sig += [{"signal": "categorical", "column": name, "strength": float(cat_strength[i, j])}
                for j, name in enumerate(self.cats) if cat_strength[i, j] >= 1]
        return i, sig

    def _ks_strength(self, d: np.ndarray, wn: np.ndarray) -> np.ndarray:
        """KS statistic over its critical value for the checkpoint's window size."""
        out = np.zeros(d.shape)
        for (r, j) in zip(*np.nonzero(wn >= self.config.min_samples)):
            key = (int(self.ks.reference_sizes[j]), int(wn[r, j]))
            if key not in self._crit_cache:
                self._crit_cache[key] = ks_critical(self.calibration.ks_alpha, *key)
            out[r, j] = d[r, j] / self._crit_cache[key]
        return out

    def _record(self, up, down, var, rate, o, k_idx, d, wn, missing, cat_info) -> None:
        last = self._last
        if len(up):
            last["mean_shift"] = np.maximum(up[-1], down[-1])
            last["variance"] = var[-1]
            last["outlier_segment_rate"] = rate[-1]
            last["batch_outlier_rate"] = o.mean(axis=0)
        if len(k_idx):
            last["ks"] = d[-1]
            last["ks_n"] = wn[-1]
            last["missing"] = missing[-1]
        for k, v in cat_info.items():
            if v is not None:
                last[f"cat:{k}"] = v

    # -- labelled -----------------------------------------------------------------
    def update_labelled(self, predictions: np.ndarray, actuals: np.ndarray) -> list[Decision]:
        """Process labelled events; ``offset`` counts labelled events."""
        pred = np.asarray(predictions, dtype=np.float64).ravel()
        act = np.asarray(actuals, dtype=np.float64).ravel()
        if pred.shape != act.shape:
            raise DetectorError("predictions and actuals must have the same length")
        decisions, start, n = [], 0, len(pred)
        while start < n:
            saved = self.labelled.get_state()
            res = self.labelled.update_pairs(pred[start:], act[start:])
            alarm = (res["strength"] >= 1).any(axis=1)
            alarm &= np.arange(self.labelled_seen, self.labelled_seen + n - start) \
                >= self._next_label_fire
            self._last["labelled"] = {k: float(v[-1]) for k, v in res.items()
                                      if k != "strength" and len(v)}
            if not alarm.any():
                self.labelled_seen += n - start
                break
            i = int(np.argmax(alarm))
            self.labelled.set_state(saved)
            res = self.labelled.update_pairs(pred[start:start + i + 1],
                                             act[start:start + i + 1])
            self._last["labelled"] = {k: float(v[-1]) for k, v in res.items()
                                      if k != "strength"}
            self.labelled_seen += i + 1
            st = res["strength"][-1]
            sig = [{"signal": s, "column": None, "strength": float(v)}
                   for s, v in zip(_LABEL_SIGNALS, st) if v >= 1]
            offset = self.labelled_seen - 1
            decisions.append(fuse(sig, offset, self.config, self.snapshot()))
            self._next_label_fire = offset + self.config.cooldown + 1
            self.labelled.s[:] = 0.0
            start += i + 1
        return decisions

    # -- reporting, state ----------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Current statistics and thresholds as plain floats (for Prometheus)."""
        cal, last = self.calibration, self._last
        cols = {}
        for j, name in enumerate(self.profile.numeric_columns):
            n = last.get("ks_n", np.zeros(len(self.profile.samples)))[j]
            crit = self._crit_cache.get((int(self.ks.reference_sizes[j]), int(n)))
            cols[name] = {
                "ks_statistic": float(last["ks"][j]) if "ks" in last else 0.0,
                "ks_threshold": float(crit) if crit else float("nan"),
                "mean_shift_statistic": float(last.get("mean_shift", [0.0] * (j + 1))[j]),
                "mean_shift_threshold": float(cal.mean_h),
                "variance_statistic": float(last.get("variance", [0.0] * (j + 1))[j]),
                "variance_threshold": float(cal.var_h),
                "outlier_rate": float(last.get("batch_outlier_rate", [0.0] * (j + 1))[j]),
                "outlier_reference_rate": float(cal.out_p0[j]),
                "missing": float(last.get("missing", [0] * (j + 1))[j]),
            }
        for name in self.cats:
            stat, tv = last.get(f"cat:{name}", (0.0, 0.0))
            cols[name] = {"chi2_statistic": float(stat), "chi2_threshold": self._cat_crit[name],
                          "total_variation": float(tv)}
        lab = last.get("labelled", {})
        b = self.labelled.baseline
        return {"events_seen": float(self.events_seen),
                "labelled_seen": float(self.labelled_seen), "columns": cols,
                "mae": lab.get("mae", float("nan")), "r2": lab.get("r2", float("nan")),
                "rmse": lab.get("rmse", float("nan")),
                "accuracy": lab.get("accuracy", float("nan")),
                "baseline_r2": float(b.get("r2", float("nan"))),
                "baseline_rmse": float(b.get("rmse", float("nan"))),
                "baseline_accuracy": float(b.get("accuracy", float("nan")))}

    def to_bytes(self) -> bytes:
        body = {"profile": self.profile.to_bytes(), "config": self.config.to_dict(),
                "task": self.task, "calibration": self.calibration.to_dict(),
                "parts": [p.get_state() for p in self._parts()],
                "labelled": self.labelled.get_state(),
                "counters": [self.events_seen, self.labelled_seen,
                             self._next_feature_fire, self._next_label_fire],
                "last": {k: v for k, v in self._last.items() if not k.startswith("cat:")},
                "crit": [[k[0], k[1], v] for k, v in self._crit_cache.items()]}
        body["profile"] = np.frombuffer(body["profile"], dtype=np.uint8)
        return pack("ModelMonitor", body)

    @classmethod
    def from_bytes(cls, data: bytes) -> "ModelMonitor":
        b = unpack("ModelMonitor", data)
        profile = ReferenceProfile.from_bytes(b["profile"].tobytes())
        cal = b["calibration"]
        cal = Calibration(**{k: np.asarray(v) if isinstance(v, (np.ndarray, list)) else v
                             for k, v in cal.items()})
        obj = cls(profile, DetectorConfig.from_mapping(b["config"]), b["task"],
                  calibration=cal)
        for part, st in zip(obj._parts(), b["parts"]):
            part.set_state(st)
        obj.labelled.set_state(b["labelled"])
        (obj.events_seen, obj.labelled_seen,
         obj._next_feature_fire, obj._next_label_fire) = b["counters"]
        obj._last = b["last"]
        obj._crit_cache = {(k0, k1): v for k0, k1, v in b["crit"]}
        return obj

    def rebaseline(self, profile: ReferenceProfile) -> None:
        """Swap in a new reference profile and baseline; all windows restart."""
        self.profile = profile
        self._build(None)
