"""Concept drift and performance signals on the labelled (prediction, actual) stream."""

from __future__ import annotations

import numpy as np

from scipy.stats import norm

from .base import StreamDetector
from .calibration import cusum_lambda, dependent_threshold
from .cusum import lindley
from .dependence import long_run_factor
from .persistence import n_of_m
from .prediction_error import prediction_errors
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

    Trend: the MAE of each successive block of ``concept_window``
    events; at the end of every block, the least-squares slope of the last
    ``trend_windows`` block MAEs is tested with ``z = slope / se`` where ``se`` uses the
    baseline error variance (the block MAEs are independent under no drift), against
    ``trend_z``; it fires when also the fitted rise over those blocks is at least
    ``error_threshold`` (15 %) of the baseline MAE.

    Serial dependence: ``tau`` is the long-run variance factor of the error series (see
    :mod:`detectors.dependence`). The CUSUM's increments are divided by it, with the
    threshold of :func:`~detectors.calibration.dependent_threshold` for the run length
    ``arl`` (when given), and its in-control drift is raised by ``margin`` times the
    standard error the dependence adds to the baseline's mean score
    (``sqrt((tau - 1) / baseline size)``); the z-tests'
    standard errors are multiplied by ``sqrt(tau)``. ``tau = NaN`` means unknown: when
    the baseline is learnt from the stream, ``tau`` is estimated from those (time-
    ordered) baseline errors; when the baseline came with the reference, from the first
    ``warmup`` labelled errors, during which no labelled signal fires.
    """

    _state_fields = ("s", "run_len", "run_sum", "ring", "buffer", "seen", "baseline",
                     "base_errors", "trend_maes", "block_sum", "block_count", "trend_last",
                     "tau_e", "err_buffer")
    _settings = ("task", "window", "concept_window", "baseline_size", "baseline",
                 "base_errors", "delta", "h", "z", "floors", "trend_windows", "trend_z",
                 "tau", "arl", "margin", "warmup")

    def __init__(self, task, window, concept_window, baseline_size, baseline, base_errors,
                 delta, h, z, floors, trend_windows: int = 10,
                 trend_z: float = float("inf"), tau: float = 1.0,
                 arl: float | None = None, margin: float = 0.0,
                 warmup: int = 2000) -> None:
        self.task, self.window = task, int(window)
        self.concept_window, self.baseline_size = int(concept_window), int(baseline_size)
        self.baseline = dict(baseline or {})
        self.base_errors = None if base_errors is None else np.asarray(base_errors, float)
        self.delta, self.h, self.z = float(delta), float(h), float(z)
        self.floors = dict(floors)
        self.trend_windows, self.trend_z = int(trend_windows), float(trend_z)
        self.tau = float(tau)
        self.arl = None if arl is None else float(arl)
        self.margin, self.warmup = float(margin), int(warmup)
        k = np.arange(self.trend_windows, dtype=np.float64)
        self._trend_w = k - k.mean()  # slope = w @ maes / sxx
        self._sxx = float(self._trend_w @ self._trend_w)
        self._reset()

    def _reset(self) -> None:
        self.tau_e = self.tau  # NaN until learnt
        self.err_buffer = np.zeros(0)
        self.reset_cusum()
        # columns: valid, err (abs or 0/1), err^2, actual, actual^2
        self.ring = np.zeros((self.window, 5))
        self.buffer = np.zeros((0, 2))
        self.seen = 0
        self.reset_trend()
        self._prepare()

    def reset_cusum(self) -> None:
        """Restart the error CUSUM (after a trigger): statistic, and the length and
        error sum of its run since it last stood at zero (Page's change-point
        estimate), whence the error rise reported as the concept signal's strength."""
        self.s = np.zeros(1)
        self.run_len = 0
        self.run_sum = 0.0

    def reset_trend(self) -> None:
        """Forget the block MAEs (after a trigger, like the CUSUM)."""
        self.trend_maes = np.zeros(0)
        self.block_sum = 0.0
        self.block_count = 0
        self.trend_last = np.full(2, np.nan)  # slope and z at the last block end

    def set_state(self, state) -> None:
        super().set_state(state)
        self._prepare()

    def _prepare(self) -> None:
        self._rt = None
        if self.base_errors is not None and len(self.base_errors):
            self._rt = RankTransform(self.base_errors)
            self._mae0 = float(self.base_errors.mean())
            # The baseline is itself an estimate from this many errors: its sampling error
            # adds to the window's in the performance z-tests (a small holdout would
            # otherwise make a fixed bias look like degradation).
            self._base_n = len(self.base_errors)
            self._abs_sd = float(self.base_errors.std())
            tau = self.tau_e if np.isfinite(self.tau_e) else 1.0
            self._root_tau = float(np.sqrt(tau))
            self._psi = self._rt.cgf(self.delta) + \
                self.margin * abs(self.delta) * np.sqrt((tau - 1.0) / self._base_n)
            self._h = float(dependent_threshold(self.arl, self.delta, tau)) \
                if self.arl else self.h
            # standard error of the trend slope under no drift
            self._trend_se = float(self.base_errors.std()) / np.sqrt(
                self.concept_window * self._sxx) * self._root_tau

    @property
    def ready(self) -> bool:
        return self._rt is not None and bool(np.isfinite(self.tau_e))

    @property
    def threshold(self) -> float:
        """The CUSUM's threshold (for its increments divided by ``tau``)."""
        return self._h if self._rt is not None else self.h

    def _learn_tau(self, pred: np.ndarray, act: np.ndarray) -> int:
        """Buffer the first ``warmup`` errors (baseline from the reference, dependence
        unknown) and estimate ``tau`` from them; return how many were used."""
        take = min(self.warmup - len(self.err_buffer), len(pred))
        e = prediction_errors(self.task, pred[:take], act[:take])
        self.err_buffer = np.concatenate([self.err_buffer, e])
        if len(self.err_buffer) >= self.warmup:
            self.tau_e = float(max(long_run_factor(self.err_buffer)[0], 1.0))
            self.err_buffer = np.zeros(0)
            self._prepare()
        return take

    def _learn_baseline(self, pred: np.ndarray, act: np.ndarray) -> int:
        """Use the first labelled events as baseline; return how many were used."""
        need = self.baseline_size - len(self.buffer)
        take = min(need, len(pred))
        self.buffer = np.concatenate([self.buffer, np.c_[pred[:take], act[:take]]])
        if len(self.buffer) >= self.baseline_size:
            p, a = self.buffer[:, 0], self.buffer[:, 1]
            e = prediction_errors(self.task, p, a)
            self.base_errors = e
            if not np.isfinite(self.tau_e):  # the baseline's errors are time-ordered
                self.tau_e = float(max(long_run_factor(e)[0], 1.0))
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
        skip = 0
        if not self.ready:
            skip = self._learn_baseline(pred, act) if self._rt is None \
                else self._learn_tau(pred, act)
        out = {k: np.zeros(n) for k in ("mae", "r2", "rmse", "accuracy", "cusum")}
        out["trend_slope"] = np.full(n, np.nan)
        out["trend_z"] = np.full(n, np.nan)
        out["strength"] = np.zeros((n, 5))
        out["lambda"] = np.full((n, 5), np.inf)
        out["trend_checks"] = np.zeros(0, dtype=np.intp)
        if skip:
            out.update(self._roll(pred[:skip], act[:skip], skip_only=True))
        if skip < n and self.ready:
            res = self._signals(pred[skip:], act[skip:])
            out["trend_checks"] = res.pop("trend_checks") + skip
            for k, v in res.items():
                out[k][skip:] = v
        self.seen += n
        return out

    def _roll(self, pred, act, skip_only=False):
        e = prediction_errors(self.task, pred, act)
        rows = np.c_[np.ones_like(e), e, e * e, act, act * act]
        hist = np.concatenate([self.ring, rows])
        self.ring = hist[-self.window:].copy()
        return {} if skip_only else (e, hist)

    def _signals(self, pred, act):
        """The arrays of :meth:`update_pairs` for events past the baseline and ``tau``
        learning, plus ``trend_checks`` (the block ends, see :meth:`_trend`)."""
        n = len(pred)
        e, hist = self._roll(pred, act)
        path = self._cusum_path(e)
        mae_run = self._run_mae(path, e)
        win, cwin = self._window_sums(hist, n)
        cnt = np.maximum(win[:, 0], 1)
        mae_recent = cwin[:, 1] / np.maximum(cwin[:, 0], 1)
        # R2/RMSE/accuracy are judged on full windows only: on a short one, the
        # heavy right tail of a mean of squared errors defeats the normal z-test (the
        # error CUSUM covers the first events after a (re)start).
        enough = win[:, 0] >= max(self.floors["min_samples"], self.window)
        st = np.zeros((n, 5))  # mae, r2, rmse, accuracy, trend
        lam = np.full((n, 5), np.inf)  # expected exceedances per horizon (confidence)
        lam[:, 0] = cusum_lambda(path, self._h)
        st[:, 0] = self._concept_strength(path, mae_recent, mae_run)
        if self.task == "classification":
            out = self._accuracy_signals(win, cnt, enough, st, lam)
        else:
            out = self._regression_signals(win, cnt, enough, st, lam)
        slope, tz, checks, st[:, 4] = self._trend(e)
        lam[checks, 4] = self._z_lambda(tz[checks], self.concept_window)
        out.update({"mae": mae_recent, "cusum": path, "strength": st, "lambda": lam,
                    "trend_slope": slope, "trend_z": tz, "trend_checks": checks})
        return out

    def _cusum_path(self, e: np.ndarray) -> np.ndarray:
        """The error CUSUM after each event (its statistic carries over batches)."""
        z = self._rt.score[self._rt.slots(e)]
        tau = self._root_tau ** 2
        path = lindley(((self.delta * z - self._psi) / tau)[:, None], self.s)[:, 0]
        self.s = path[-1:].copy()
        return path

    def _run_mae(self, path: np.ndarray, e: np.ndarray) -> np.ndarray:
        """MAE since the CUSUM last stood at zero, per event (the run carries over
        batches)."""
        idx = np.arange(len(e))
        last0 = np.maximum.accumulate(np.where(path == 0, idx, -1))
        ce = np.cumsum(e)
        run_len = np.where(last0 >= 0, idx - last0, self.run_len + idx + 1)
        run_sum = np.where(last0 >= 0, ce - ce[np.maximum(last0, 0)], self.run_sum + ce)
        self.run_len, self.run_sum = int(run_len[-1]), float(run_sum[-1])
        return run_sum / np.maximum(run_len, 1)

    def _window_sums(self, hist: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Sums of the ring's columns over the last ``window`` and the last
        ``concept_window`` (at most ``window``) events, at each of the batch's ``n``
        events (the last rows of ``hist``)."""
        w, cw = self.window, self.concept_window
        c = np.vstack([np.zeros((1, 5)), np.cumsum(hist, axis=0)])
        end = np.arange(w + 1, w + n + 1)
        return c[end] - c[end - w], c[end] - c[end - min(cw, w)]

    def _concept_strength(self, path: np.ndarray, mae_recent: np.ndarray,
                          mae_run: np.ndarray) -> np.ndarray:
        """Where the CUSUM is past its threshold and the recent MAE past the 15 % floor:
        the MAE rise since the CUSUM's change-point estimate over that floor, at least 1
        (like every strength: the effect over the design's); else 0."""
        mae0 = max(self._mae0, 1e-12)
        fl = self.floors["error"]
        return np.where((path > self._h) & (mae_recent > mae0 * (1 + fl)),
                        np.maximum((mae_run / mae0 - 1) / fl, 1.0), 0.0)

    def _accuracy_signals(self, win, cnt, enough, st, lam) -> dict[str, np.ndarray]:
        """The accuracy signal into ``st`` and ``lam``; return the accuracy path."""
        acc = 1 - win[:, 1] / cnt
        acc0 = self.baseline.get("accuracy", 1 - self._mae0)
        se = np.sqrt(max(acc0 * (1 - acc0), 1e-12) * (1 / cnt + 1 / self._base_n)) \
            * self._root_tau
        zacc = (acc0 - acc) / se
        drop = (acc0 - acc) / max(acc0, 1e-12)
        st[:, 3] = np.where(enough & (zacc > self.z) & (drop > self.floors["accuracy"]),
                            drop / self.floors["accuracy"], 0)
        lam[:, 3] = self._z_lambda(zacc)
        return {"accuracy": acc}

    def _regression_signals(self, win, cnt, enough, st, lam) -> dict[str, np.ndarray]:
        """The R2 and RMSE signals into ``st`` and ``lam``; return their paths."""
        b = self.baseline
        mse = win[:, 2] / cnt
        var_a = np.maximum(win[:, 4] / cnt - (win[:, 3] / cnt) ** 2, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(var_a > 0, 1 - mse / var_a, 0.0)
        rmse = np.sqrt(mse)
        rmse0 = b.get("rmse", float(np.sqrt(max(self._mae0, 1e-12))))
        # The evidence is a rise of the mean absolute error: squared errors are too
        # heavy-tailed for a z-test (their variance, estimated from the baseline, is
        # far below the truth for t-like errors); the RMSE and R2 floors then say
        # whether the rise matters.
        se = np.maximum(self._abs_sd, 1e-12) * np.sqrt(1 / cnt + 1 / self._base_n) \
            * self._root_tau
        zmae = (win[:, 1] / cnt - self._mae0) / se
        lam[:, 1] = lam[:, 2] = self._z_lambda(zmae)
        sig = enough & (zmae > self.z)
        rise = rmse / max(rmse0, 1e-12) - 1
        st[:, 2] = np.where(sig & (rise > self.floors["rmse"]), rise / self.floors["rmse"], 0)
        if "r2" in b:
            drop = (b["r2"] - r2) / max(abs(b["r2"]), 1e-12)
            st[:, 1] = np.where(sig & (drop > self.floors["r2"]), drop / self.floors["r2"], 0)
        return {"rmse": rmse, "r2": r2}

    def _z_lambda(self, z: np.ndarray, every: int = 1) -> np.ndarray:
        """``lambda`` of a z-test checked every ``every`` events at level
        ``every / arl`` (its threshold ``z`` or ``trend_z``): p-value over level."""
        arl = self.arl or 1.0 / max(float(norm.sf(self.z)), 1e-300)
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(z), norm.sf(z) * arl / every, np.inf)

    def _trend(self, e: np.ndarray):
        """Slope of the last ``trend_windows`` block MAEs at each block end in ``e``.

        Returns per-event slope and z (held between block ends, NaN before the first
        full set of blocks), the block-end indices and the trend strength per event.
        """
        n, w, k = len(e), self.concept_window, self.trend_windows
        slope, tz, strength = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n)
        ends = np.arange(w - self.block_count - 1, n, w)
        if len(ends):
            cs = np.cumsum(e)
            sums = np.diff(np.r_[0.0, cs[ends]])
            sums[0] += self.block_sum
            series = np.r_[self.trend_maes, sums / w]
            rest = len(self.trend_maes)
            if len(series) >= k:
                win = np.lib.stride_tricks.sliding_window_view(series, k)
                b = (win @ self._trend_w) / self._sxx
                at = np.arange(k - 1, len(series)) - rest  # block index in this batch
                keep = at >= 0
                b, at = b[keep], at[keep]
                z = b / max(self._trend_se, 1e-300)
                rise = b * (k - 1) / max(self._mae0, 1e-12)
                fl = self.floors["error"]
                st = np.where((z > self.trend_z) & (rise > fl), rise / fl, 0.0)
                slope[ends[at]], tz[ends[at]], strength[ends[at]] = b, z, st
            self.trend_maes = series[-(k - 1):].copy()
            self.block_sum = float(cs[-1] - cs[ends[-1]])
            self.block_count = n - 1 - int(ends[-1])
        else:
            self.block_sum += float(e.sum())
            self.block_count += n
        # hold the last slope/z between block ends (for the snapshot)
        for arr, last in zip((slope, tz), self.trend_last):
            idx = np.where(np.isfinite(arr), np.arange(n), -1)
            np.maximum.accumulate(idx, out=idx)
            arr[:] = np.where(idx >= 0, arr[np.maximum(idx, 0)], last)
        if n:
            self.trend_last = np.array([slope[-1], tz[-1]])
        return slope, tz, ends, strength


LABEL_SIGNALS = ("mae", "r2", "rmse", "accuracy", "trend")  # the columns of ``strength``


def calibrated(task: str, profile, config, cal) -> LabelledSignals:
    """The labelled signals of a monitor of ``task`` over ``profile`` (a
    :class:`~detectors.profile.ReferenceProfile`), with ``config``'s thresholds and the
    calibration ``cal``; the profile's errors are the baseline when its task is ``task``."""
    known = profile.task == task
    dependent = cal.dependence_source != "none"
    return LabelledSignals(
        task, config.performance_window, config.concept_window,
        config.concept_baseline_size, profile.baseline, profile.errors if known else None,
        cal.concept_scale, cal.concept_h, cal.perf_z,
        {"error": config.error_threshold, "r2": config.r2_threshold,
         "rmse": config.rmse_threshold, "accuracy": config.accuracy_threshold,
         "min_samples": config.min_samples},
        config.trend_windows, cal.trend_z,
        tau=float(cal.err_tau) if known else float("nan"),
        arl=cal.arl_test if dependent else None,
        margin=config.reference_margin if dependent else 0.0, warmup=config.dependence_warmup)


def first_alarm(res: dict[str, np.ndarray], hist: dict[str, np.ndarray], config,
                first_event: int, next_fire: int):
    """``(index, signals)`` of the first eligible alarm in the results ``res`` of
    :meth:`LabelledSignals.update_pairs` whose first event is ``first_event``, after the
    n-of-m rule of ``config`` (the histories ``hist["lab"]`` and ``hist["trend"]`` are
    advanced) and none before event ``next_fire``; ``(None, [])`` without one."""
    st = res["strength"]
    n = len(st)
    flags = (st[:, :4] >= 1).T
    checks = res["trend_checks"]
    tflags = (st[checks, 4] >= 1)[None, :]
    if config.persistence_m > 1:
        need = config.persistence_n
        flags, hist["lab"] = n_of_m(flags, hist["lab"], need)
        tflags, hist["trend"] = n_of_m(tflags, hist["trend"], need)
    alarm = flags.any(axis=0)
    alarm[checks] |= tflags[0]
    alarm &= np.arange(first_event, first_event + n) >= next_fire
    if not alarm.any():
        return None, []
    i = int(np.argmax(alarm))
    on = list(flags[:, i]) + [bool(tflags[0, np.flatnonzero(checks == i)].any())]
    lam = res["lambda"]
    return i, [{"signal": s, "column": None, "strength": float(st[i, k]),
                "lambda": float(lam[i, k])} for k, s in enumerate(LABEL_SIGNALS) if on[k]]


def readings(res: dict[str, np.ndarray]) -> dict[str, float]:
    """The latest metrics of :meth:`LabelledSignals.update_pairs`' results."""
    return {k: float(v[-1]) for k, v in res.items()
            if k not in ("strength", "trend_checks", "lambda") and len(v)}


def snapshot(last: dict[str, float], baseline: dict[str, float], trend_z: float
             ) -> dict[str, float]:
    """The labelled part of the monitor's snapshot: the latest metrics (``last``, from
    :func:`readings`), the trend's threshold and the baseline's metrics (NaN: unknown)."""
    nan = float("nan")
    return {**{k: last.get(k, nan) for k in ("mae", "r2", "rmse", "accuracy", "trend_slope",
                                              "trend_z")},
            "trend_threshold": float(trend_z),
            **{f"baseline_{k}": float(baseline.get(k, nan)) for k in ("r2", "rmse", "accuracy")}}
