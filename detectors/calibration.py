"""Thresholds derived from the reference data for a target false-alarm run length.

The whole model gets ``target_arl`` events between false alarms on average. The budget
is split evenly over the ``n_tests`` one-sided tests (mean up and down, variance,
outliers and KS per numeric column; chi-square per categorical column; concept and
performance on labelled events): false-alarm rates add, so each test gets a mean run
length of ``target_arl * n_tests``.

* Mean and concept CUSUMs run on normal scores and use the log-likelihood-ratio form
  with the exact reference cumulant (``drift = log E0 exp(delta * z)``) and Siegmund's
  run-length approximation ``ARL ~ exp(h + 1.166 delta) / (delta^2 / 2)`` for the
  threshold ``h`` (checked against simulation in the tests).
* A second pair of mean CUSUMs for large shifts (``config.mean_shift_large``) is
  calibrated the same way; each gets ``config.mean_large_weight`` of one test's share
  of the budget (a run length ``target_arl * n_tests / weight``), so that the design
  shift's tests lose little: ``n_tests`` counts them as ``2 * weight`` tests per column.
* Variance and outlier CUSUMs use the Wald-type approximation ``ARL ~ exp(h) / I0``
  with ``I0`` the Kullback-Leibler information per event under no change (the in-control
  drift of the log-likelihood ratio); the overshoot past ``h``, ignored here, only
  lengthens the run (Siegmund 1985: for the Gaussian mean it is the ``exp(1.166 delta)``
  of the formula above), so this is conservative, and sharper than Ville's bound
  ``ARL >= exp(h)`` by the factor ``1 / I0`` (about 10 for the variance, 15 for the
  outlier test). That holds for independent events; on a dependent stream (below)
  the block approximation's error grows with the dependence (measured: a variance
  test on an AR(1) phi = 0.8 stream fired 100 times too often with the full
  sharpening), so the sharpening fades as ``I0 ** (1 / tau)``: full for independent
  events, nearly Ville's bound for strongly dependent ones.
* Windowed tests (KS, chi-square) evaluated every ``stride`` events get a per-test
  level ``stride / ARL`` (a union bound over evaluations; overlap makes it safe).
* The error trend (slope of the last ``trend_windows`` block MAEs, a z-test with the
  baseline error variance) is checked once per ``concept_window`` labelled events and
  gets the level ``concept_window / ARL`` the same way.

Serial dependence. Each series has a long-run variance factor ``tau``
(:mod:`detectors.dependence`; 1 for independent events): a sum of ``n`` dependent
increments varies like ``n * tau`` independent ones. In the diffusion approximation a
CUSUM whose increments are divided by ``tau`` runs on ``tau``-event blocks that behave
like independent events with the original LLR form, so every CUSUM gets increments
``/ tau`` and the threshold of a run length ``ARL / tau`` (in blocks); the overshoot
term of Siegmund's formula shrinks to ``1.166 delta / tau`` (observation every event is
finer than every block: a smaller correction is the conservative side). A window of
``n`` events has ``n / tau`` effective events (KS), a chi-square statistic is ``tau``
times a chi-square variable. The labelled tests scale their standard errors by
``sqrt(tau)``. With ``tau = 1`` everything is the independent calibration.

A finite (and dependent) reference is itself an estimate: the stream's mean score
differs from the reference's by about ``se = sqrt(tau / m)`` (``m`` reference values),
a permanent small shift that would shorten the run length exponentially. The in-control
drift of the mean, variance and concept CUSUMs is therefore raised by
``config.reference_margin`` times ``sqrt((tau - 1) / m)``: the standard error that the
dependence adds to that of an independent reference of the same size (the "guaranteed
performance" design of Jones, Champ & Rigdon, applied to the excess only, so that the
independent calibration, whose residual risk was accepted before, is unchanged); the
outlier rate ``p0`` is an upper confidence bound with the effective size ``m / tau``.

Confidence. For a test whose whole-model horizon is ``target_arl`` events, let
``lambda`` be the expected number of times, within one horizon, that *some* test of the
model reaches a statistic as extreme as the observed one on a stationary stream with the
same dependence: ``exp(h - S)`` for a CUSUM at ``S`` past its threshold ``h`` (its run
length to ``S`` grows like ``exp(S)``), ``p / alpha`` for a windowed test with p-value
``p`` and level ``alpha``, all scaled so that ``lambda = 1`` at the threshold. The
confidence ``exp(-lambda)`` is then (Poisson clumping) 1 - the probability that a
stationary stream reaches a statistic this extreme within one horizon: about 0.37 just
at a threshold, 0.95 at ``S = h + 3``. See :func:`confidence`.

Everything is closed-form per column, hence deterministic and milliseconds for 50
columns; results are cached per profile fingerprint and configuration.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import kstwo, norm

from .config import DetectorConfig
from .profile import ReferenceProfile
from .ranks import RankTransform

SIEGMUND_RHO = 1.166  # 2 * 0.583, the Gaussian overshoot constant


def siegmund_threshold(arl: float, delta: float) -> float:
    """LLR threshold of a one-sided Gaussian CUSUM for a mean run length ``arl``."""
    return max(float(np.log(arl * delta * delta / 2.0) - SIEGMUND_RHO * delta), 1.0)


def siegmund_arl(h: float, delta: float) -> float:
    """Inverse of :func:`siegmund_threshold` (for checks against simulation)."""
    return float(np.exp(h + SIEGMUND_RHO * delta) / (delta * delta / 2.0))


def dependent_threshold(arl: float, delta: float, tau) -> np.ndarray:
    """Threshold of a Gaussian LLR CUSUM whose increments are divided by ``tau``, for
    a mean run length ``arl`` on a stream with long-run variance factor ``tau``;
    :func:`siegmund_threshold` when ``tau == 1``.

    >>> float(dependent_threshold(1e8, 0.3, 1.0)) == siegmund_threshold(1e8, 0.3)
    True
    >>> round(float(dependent_threshold(1e8, 0.3, 3.0)), 2)
    14.1
    """
    tau = np.maximum(np.asarray(tau, dtype=np.float64), 1.0)
    h = np.log(arl * delta * delta / (2.0 * tau)) - SIEGMUND_RHO * delta / tau
    return np.maximum(h, 1.0)


def confidence(lam) -> np.ndarray:
    """``exp(-lambda)``: see the module docstring. ``lambda`` = expected number of
    whole-model exceedances of the observed extremity per ``target_arl`` horizon."""
    return np.exp(-np.asarray(lam, dtype=np.float64))


def cusum_lambda(s, h) -> np.ndarray:
    """``lambda`` of a CUSUM at statistic ``s`` with threshold ``h`` (1 at ``h``)."""
    return np.exp(np.minimum(np.asarray(h, np.float64) - np.asarray(s, np.float64), 700))


@dataclass(frozen=True)
class Calibration:
    """Per-column thresholds of every streaming signal (plain numpy arrays)."""

    n_tests: float
    arl_test: float
    mean_scale: float
    mean_drift_up: np.ndarray
    mean_drift_down: np.ndarray
    mean_h: float
    var_scale: float
    var_drift: np.ndarray
    var_h: float
    out_p0: np.ndarray
    out_p1: np.ndarray
    out_h: float
    ks_alpha: float
    cat_alpha: float
    concept_scale: float
    concept_h: float
    perf_z: float
    trend_z: float = float("inf")  # states saved before the trend test: disabled
    # serial dependence (states saved before it: independent, no margin)
    mean_tau: np.ndarray | float = 1.0
    var_tau: np.ndarray | float = 1.0
    out_tau: np.ndarray | float = 1.0
    ks_tau: np.ndarray | float = 1.0
    cat_tau: np.ndarray | float = 1.0
    err_tau: float = 1.0  # NaN: learnt from the labelled stream
    lag1: np.ndarray | float = 0.0
    # "reference": estimated from the time-ordered reference; "warmup": learnt from
    # the stream's first ``dependence_warmup`` events; "pending": warm-up under way;
    # "none": assumed independent (older states)
    dependence_source: str = "none"
    # the large-shift mean CUSUMs (states saved before them: none, scale 0)
    mean_scale_large: float = 0.0
    mean_drift_up_large: np.ndarray | float = 0.0
    mean_drift_down_large: np.ndarray | float = 0.0
    mean_h_large: np.ndarray | float = float("inf")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def dependence(self, numeric: list[str], categorical: list[str],
                   errors: float) -> dict:
        """The serial dependence calibrated to, by column.

        ``source``: "reference" (estimated from the time-ordered reference),
        "warmup" (learnt from the stream's first ``config.dependence_warmup`` events),
        "pending" (warm-up under way: factors are 1 until it ends) or "none" (a state
        saved before dependence was estimated: independence assumed). ``columns`` maps
        every numeric column to its long-run variance factors (1 = independent; the
        effective sample size of ``n`` events is ``n / factor``): ``factor`` of the
        normal scores (mean CUSUMs), ``variance_factor`` (of their squares),
        ``ks_factor``, ``outlier_factor``, and ``lag1`` (lag-1 autocorrelation); every
        categorical column to ``{"factor": ...}`` (chi-square window). ``errors`` is
        the error series' factor (NaN until known), given by the caller.
        """
        def col(v, c):
            return np.broadcast_to(np.asarray(v, dtype=np.float64), (c,))

        c = len(numeric)
        mean, var, ks, out, lag = (col(v, c) for v in (self.mean_tau, self.var_tau,
                                                        self.ks_tau, self.out_tau, self.lag1))
        cols: dict[str, dict[str, float]] = {
            name: {"factor": float(mean[j]), "variance_factor": float(var[j]),
                   "ks_factor": float(ks[j]), "outlier_factor": float(out[j]),
                   "lag1": float(lag[j])}
            for j, name in enumerate(numeric)}
        cat = col(self.cat_tau, len(categorical))
        for j, name in enumerate(categorical):
            cols[name] = {"factor": float(cat[j])}
        return {"source": self.dependence_source, "columns": cols, "errors": float(errors)}


def count_tests(n_numeric: int, n_categorical: int, large: float = 0.0,
                estimated: bool = False, *, prediction: bool = False,
                multivariate: bool = False) -> float:
    """Mean up/down, variance, outliers and KS per numeric column (plus the large-shift
    pair, each of weight ``large``), chi-square per categorical one, the labelled
    concept CUSUM, performance and trend tests, the estimated-performance test when
    the model has an estimator, the prediction's four CUSUMs and the multivariate one;
    data quality: missing per column, stuck per numeric one, unseen levels per
    categorical one."""
    return (5 + 2 * large) * n_numeric + n_categorical + 3 + int(estimated) \
        + 4 * prediction + multivariate + 2 * (n_numeric + n_categorical)


def dependence_of(profile: ReferenceProfile) -> dict | None:
    """The profile's dependence factors, or None when they must be learnt (a
    shuffled or short reference, or a profile saved before they existed)."""
    return profile.dependence


def needs_warmup(dependence: dict | None, n_numeric: int) -> bool:
    """Whether some feature factor is unknown (NaN) or the whole record is missing."""
    if dependence is None:
        return True
    vals = [np.asarray(dependence[k], dtype=np.float64) for k in ("mean", "var", "ks", "out")]
    cats = np.array(list(dependence.get("categorical", {}).values()), dtype=np.float64)
    return any(np.isnan(v).any() for v in vals) or bool(np.isnan(cats).any())


def calibrate(profile: ReferenceProfile, config: DetectorConfig,
              transforms: list[RankTransform] | None = None,
              dependence: dict | None = None, source: str | None = None) -> Calibration:
    """Derive all thresholds for ``profile`` (see the module docstring).

    ``dependence`` (default: the profile's) holds the factors ``mean``, ``var``,
    ``out``, ``ks``, ``lag1`` per numeric column, ``categorical`` per categorical
    column and ``errors``; unknown ones (NaN, or no record) are taken as 1 and the
    calibration's ``dependence_source`` is "pending" (the monitor then learns them in
    its warm-up and calibrates again).
    """
    transforms = transforms or [RankTransform(s) for s in profile.samples]
    nnum = len(profile.numeric_columns)
    large = config.mean_shift_large > 0
    n_tests = count_tests(nnum, len(profile.categorical_columns),
                          config.mean_large_weight if large else 0.0,
                          profile.estimator is not None,
                          prediction=profile.prediction is not None,
                          multivariate=profile.joint is not None)
    arl = config.target_arl * n_tests
    given = dependence if dependence is not None else dependence_of(profile)
    pending = needs_warmup(given, nnum)
    dep = given or {}

    def factor(key, n):
        v = np.asarray(dep.get(key, np.ones(n)), dtype=np.float64).reshape(-1)
        v = v if len(v) == n else np.ones(n)
        return np.where(np.isfinite(v), np.maximum(v, 1.0), 1.0)

    t_mean, t_var, t_out, t_ks = (factor(k, nnum) for k in ("mean", "var", "out", "ks"))
    lag1 = np.nan_to_num(np.asarray(dep.get("lag1", np.zeros(nnum)), np.float64)
                         .reshape(-1)) if dep else np.zeros(nnum)
    cat = dep.get("categorical", {})
    t_cat = np.array([max(float(cat.get(c, 1.0)), 1.0) if np.isfinite(cat.get(c, 1.0))
                      else 1.0 for c in profile.categorical_columns])
    e = dep.get("errors", float("nan")) if dep else 1.0
    t_err = float(max(e, 1.0)) if np.isfinite(e) else float("nan")
    if given is None:
        t_err = float("nan")
    k = config.reference_margin
    m = np.array([len(s) for s in profile.samples], dtype=np.float64)
    delta = config.mean_shift
    theta = 0.5 * (1.0 - 1.0 / config.variance_ratio)
    # in-control drifts raised by the margin for the reference's own error
    se_mean = np.sqrt((t_mean - 1.0) / np.maximum(m, 1))
    up = np.array([t.cgf(delta) for t in transforms]) + k * delta * se_mean
    down = np.array([t.cgf(-delta) for t in transforms]) + k * delta * se_mean
    dl = config.mean_shift_large
    up_l = np.array([t.cgf(dl) for t in transforms]) + k * dl * se_mean if large \
        else np.zeros(nnum)
    down_l = np.array([t.cgf(-dl) for t in transforms]) + k * dl * se_mean if large \
        else np.zeros(nnum)
    z4 = np.array([float(t.slot_prob @ t.score**4) for t in transforms])
    se_var = np.sqrt(np.maximum(z4 - 1.0, 0.0) * (t_var - 1.0) / np.maximum(m, 1))
    cgf_var = np.array([t.cgf(theta, power=2) for t in transforms])
    var = cgf_var + k * theta * se_var
    # reference outlier share, raised to an upper confidence bound so that sampling
    # error in a finite (dependent) reference does not turn into false alarms
    p0 = []
    for s, mu, sd, tau in zip(profile.samples, profile.means, profile.stds, t_out):
        lim = config.z_score_threshold * sd if sd > 0 else 0.0
        cnt, n = float(np.count_nonzero(np.abs(s - mu) > lim)), len(s)
        p = (cnt + 1.0) / (n + 2.0)
        p0.append(min(p + 3.0 * np.sqrt(p * (1 - p) * tau / n), 0.5))
    p0 = np.array(p0)
    p1 = np.maximum(config.outlier_alt_rate, np.minimum(2.0 * p0, 0.9))
    # Kullback-Leibler information per event under no change (see the docstring):
    # the in-control drift of the variance LLR ``theta z^2 - cgf``, of the outliers'
    i_var = np.maximum(cgf_var - theta * np.array([float(t.slot_prob @ t.score**2)
                                                   for t in transforms]), 1e-12)
    i_out = np.maximum(p0 * np.log(p0 / p1) + (1 - p0) * np.log((1 - p0) / (1 - p1)),
                       1e-12)
    if source is None:
        source = "pending" if pending else "reference"
    return Calibration(
        n_tests=n_tests, arl_test=arl,
        mean_scale=delta, mean_drift_up=up, mean_drift_down=down,
        mean_h=dependent_threshold(arl, delta, t_mean),
        var_scale=theta, var_drift=var,
        var_h=np.maximum(np.log(arl / t_var) + np.log(i_var) / t_var, 1.0),
        out_p0=p0, out_p1=p1,
        out_h=np.maximum(np.log(arl / t_out) + np.log(i_out) / t_out, 1.0),
        ks_alpha=config.ks_stride / arl, cat_alpha=config.categorical_stride / arl,
        concept_scale=config.concept_shift,
        concept_h=siegmund_threshold(arl, config.concept_shift),
        perf_z=float(norm.isf(1.0 / arl)),
        trend_z=float(norm.isf(config.concept_window / arl)),
        mean_tau=t_mean, var_tau=t_var, out_tau=t_out, ks_tau=t_ks, cat_tau=t_cat,
        err_tau=t_err, lag1=lag1, dependence_source=source,
        mean_scale_large=float(dl) if large else 0.0, mean_drift_up_large=up_l,
        mean_drift_down_large=down_l,
        mean_h_large=dependent_threshold(arl / config.mean_large_weight, dl, t_mean) if large
        else np.full(nnum, np.inf))


def ks_effective_size(m: int, n: int, tau: float = 1.0) -> float:
    """Effective ``m n / (m + n)`` of a two-sample KS test of ``m`` reference and ``n``
    window values, both with long-run variance factor ``tau``."""
    return float(np.round(m * n / (m + n) / max(tau, 1.0)))


def ks_critical(alpha: float, m: int, n: int, tau: float = 1.0) -> float:
    """KS statistic at which scipy's asymptotic p-value equals ``alpha``."""
    return _kstwo_isf(alpha, max(ks_effective_size(m, n, tau), 1.0))


@lru_cache(maxsize=65536)
def _kstwo_isf(alpha: float, size: float) -> float:
    """``kstwo.isf``, once per level and effective size in a process: each inversion
    costs most of a millisecond, and every model's window, while it fills or holds
    missing values, asks for one per column and window size (snapshots too)."""
    return float(kstwo.isf(alpha, size))


def ks_lambda(d: float, m: int, n: int, tau: float, alpha: float) -> float:
    """``lambda`` (see :func:`confidence`) of a KS statistic ``d``."""
    p = float(kstwo.sf(d, max(ks_effective_size(m, n, tau), 1.0)))
    return p / alpha


class CalibrationCache:
    """Small in-memory cache of calibrations keyed by profile fingerprint and config."""

    def __init__(self, maxsize: int = 64) -> None:
        self.maxsize = maxsize
        self._items: dict[tuple, Calibration] = {}

    def get(self, profile: ReferenceProfile, config: DetectorConfig,
            transforms: list[RankTransform] | None = None) -> Calibration:
        key = (profile.fingerprint, tuple(sorted(config.to_dict().items())))
        if key not in self._items:
            if len(self._items) >= self.maxsize:
                self._items.pop(next(iter(self._items)))
            self._items[key] = calibrate(profile, config, transforms)
        return self._items[key]


DEFAULT_CACHE = CalibrationCache()
