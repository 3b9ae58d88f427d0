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
* Variance and outlier CUSUMs use Ville's bound ``ARL >= exp(h)`` (conservative).
* Windowed tests (KS, chi-square) evaluated every ``stride`` events get a per-test
  level ``stride / ARL`` (a union bound over evaluations; overlap makes it safe).
* The error trend (slope of the last ``trend_windows`` block MAEs, a z-test with the
  baseline error variance) is checked once per ``concept_window`` labelled events and
  gets the level ``concept_window / ARL`` the same way.

Everything is closed-form per column, hence deterministic and milliseconds for 50
columns; results are cached per profile fingerprint and configuration.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Calibration:
    """Per-column thresholds of every streaming signal (plain numpy arrays)."""

    n_tests: int
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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def count_tests(n_numeric: int, n_categorical: int) -> int:
    """Mean up/down, variance, outliers and KS per numeric column, chi-square per
    categorical one, and the labelled concept CUSUM, performance and trend tests."""
    return 5 * n_numeric + n_categorical + 3


def calibrate(profile: ReferenceProfile, config: DetectorConfig,
              transforms: list[RankTransform] | None = None) -> Calibration:
    """Derive all thresholds for ``profile`` (see the module docstring)."""
    transforms = transforms or [RankTransform(s) for s in profile.samples]
    n_tests = count_tests(len(profile.numeric_columns), len(profile.categorical_columns))
    arl = config.target_arl * n_tests
    delta = config.mean_shift
    theta = 0.5 * (1.0 - 1.0 / config.variance_ratio)
    up = np.array([t.cgf(delta) for t in transforms])
    down = np.array([t.cgf(-delta) for t in transforms])
    var = np.array([t.cgf(theta, power=2) for t in transforms])
    # reference outlier share, raised to an upper confidence bound so that sampling
    # error in a finite reference does not turn into false alarms
    p0 = []
    for s, mu, sd in zip(profile.samples, profile.means, profile.stds):
        lim = config.z_score_threshold * sd if sd > 0 else 0.0
        k, m = float(np.count_nonzero(np.abs(s - mu) > lim)), len(s)
        p = (k + 1.0) / (m + 2.0)
        p0.append(min(p + 3.0 * np.sqrt(p * (1 - p) / m), 0.5))
    p0 = np.array(p0)
    p1 = np.maximum(config.outlier_alt_rate, np.minimum(2.0 * p0, 0.9))
    return Calibration(
        n_tests=n_tests, arl_test=arl,
        mean_scale=delta, mean_drift_up=up, mean_drift_down=down,
        mean_h=siegmund_threshold(arl, delta),
        var_scale=theta, var_drift=var, var_h=float(np.log(arl)),
        out_p0=p0, out_p1=p1, out_h=float(np.log(arl)),
        ks_alpha=config.ks_stride / arl, cat_alpha=config.ks_stride / arl,
        concept_scale=config.concept_shift,
        concept_h=siegmund_threshold(arl, config.concept_shift),
        perf_z=float(norm.isf(1.0 / arl)),
        trend_z=float(norm.isf(config.concept_window / arl)))


def ks_critical(alpha: float, m: int, n: int) -> float:
    """KS statistic at which scipy's asymptotic p-value equals ``alpha``."""
    return float(kstwo.isf(alpha, np.round(m * n / (m + n))))


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
