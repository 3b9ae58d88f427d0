"""One typed, frozen settings object for every detector threshold.

The defaults are the design document's thresholds (p < 0.05, |z| > 3, 5 % outliers,
15 % MAE rise, R2 drop 5 %, RMSE rise 10 %, accuracy drop 5 %, 100 minimum samples)
plus the streaming calibration target (a mean of 10,000,000 events between
false alarms for a whole model).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from .errors import ConfigError

MultipleTesting = Literal["holm", "bh", "none"]
ReferenceOrder = Literal["time", "shuffled"]


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of the reference profile, the streaming monitor and the batch API.

    Examples
    --------
    >>> cfg = DetectorConfig.from_mapping({"ks_window": 500})
    >>> cfg.ks_window, cfg.min_samples
    (500, 100)
    """

    # -- design-document thresholds (also the streaming effect-size floors) --
    min_samples: int = 100
    z_score_threshold: float = 3.0
    outlier_pct_threshold: float = 5.0
    error_threshold: float = 0.15
    r2_threshold: float = 0.05
    rmse_threshold: float = 0.10
    accuracy_threshold: float = 0.05
    data_drift_threshold: float = 0.05  # batch mode p-value
    multiple_testing: MultipleTesting = "holm"
    concept_window: int = 100  # design's window_size for the MAE comparison
    # -- streaming calibration --
    target_arl: float = 10_000_000.0  # mean events between false alarms, whole model
    ks_window: int = 1000
    ks_stride: int = 500  # the KS window is tested every ks_stride events
    # the chi-square window of a categorical column (its last categorical_window
    # events) is tested every categorical_stride events (its false-alarm budget accounts
    # for every test): a shorter, more often tested window than the KS one finds a
    # change of level frequencies sooner (total variation 0.08 of 5 levels: about
    # 700 events instead of 1,000, in the bench)
    categorical_window: int = 700
    categorical_stride: int = 100
    mean_shift: float = 0.3  # design shift (in sd) of the mean CUSUM
    # design shift of a second pair of mean CUSUMs (up and down) for large shifts,
    # which they find in about a third of the events the 0.3 sd pair needs (see
    # mean_large_weight for their share of the false-alarm budget); 0 disables them
    mean_shift_large: float = 1.0
    # the share of one test's false-alarm budget that each large-shift CUSUM gets
    mean_large_weight: float = 0.5
    variance_ratio: float = 2.0  # design variance ratio of the variance CUSUM
    outlier_alt_rate: float = 0.08  # design outlier rate of the outlier CUSUM
    concept_shift: float = 0.3  # design shift (in sd of error scores)
    concept_baseline_size: int = 500  # labelled events used as error baseline
    trend_windows: int = 10  # block MAEs (of concept_window events) in the trend slope
    performance_window: int = 1000
    reference_cap: int = 10_000  # max reference sample per numeric column
    cooldown: int = 1000  # events after a trigger during which none fires
    # events a feature decision waits after its first signal, naming every signal that
    # passes its own threshold meanwhile (two shifted columns seldom cross on the same
    # event); 0 decides at the first signal
    gather_events: int = 10
    persistence_n: int = 1  # a signal counts when alarmed in n of its last m checks
    persistence_m: int = 1  # (checks: every event, or every ks_stride for KS/chi2)
    # an outlier share above outlier_pct_threshold with the outlier test at least this
    # fraction of its way to its threshold makes a decision at least MEDIUM
    outlier_medium_fraction: float = 0.5
    strong_factor: float = 2.0  # strength >= this is a "strong" signal
    very_strong_factor: float = 4.0
    seed: int = 0
    # -- serial dependence (see detectors.dependence) --
    # "time": the reference rows are in event order (a training export), so each
    # series' dependence is estimated from it; "shuffled": it is not, and the
    # dependence is learnt from the first ``dependence_warmup`` events of the stream
    reference_order: ReferenceOrder = "time"
    # a time-ordered reference shorter than this (rows) is too short to estimate from:
    # the warm-up is used instead
    dependence_min_rows: int = 1000
    # events (and labelled events) of the warm-up; no decision fires during it
    dependence_warmup: int = 2000
    # in-control margin of the sequential tests, in standard errors of the reference's
    # own estimate (a finite, dependent reference is itself a noisy picture of "no
    # drift"; its error would otherwise act as a permanent small shift)
    reference_margin: float = 2.0
    # a regression model's profile gets a direct loss estimator (detectors.dle) when its
    # reference has predictions and actuals: its estimated MAE is then tested without
    # labels and gives drift its expected impact (off by default: fitting it takes
    # seconds per profile)
    loss_estimator: bool = False

    def __post_init__(self) -> None:
        positive = ("min_samples", "ks_window", "ks_stride", "concept_window",
                    "concept_baseline_size", "performance_window", "reference_cap",
                    "persistence_n", "persistence_m", "target_arl", "z_score_threshold",
                    "mean_shift", "concept_shift")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.cooldown < 0 or self.gather_events < 0:
            raise ConfigError("cooldown and gather_events must be >= 0")
        if not 0 < self.mean_large_weight <= 1:
            raise ConfigError("mean_large_weight must be in (0, 1]")
        if self.mean_shift_large < 0 or self.categorical_stride < 1 \
                or self.categorical_window < 1:
            raise ConfigError("mean_shift_large must be >= 0, categorical_window and "
                              "categorical_stride >= 1")
        if self.trend_windows < 3:
            raise ConfigError("trend_windows must be >= 3 (a slope needs a residual)")
        if self.persistence_n > self.persistence_m:
            raise ConfigError("persistence_n must be <= persistence_m")
        if self.reference_order not in ("time", "shuffled"):
            raise ConfigError("reference_order must be 'time' or 'shuffled'")
        if self.dependence_warmup < 200 or self.dependence_min_rows < 200:
            raise ConfigError("dependence_warmup and dependence_min_rows must be >= 200")
        if self.reference_margin < 0:
            raise ConfigError("reference_margin must be >= 0")
        if self.multiple_testing not in ("holm", "bh", "none"):
            raise ConfigError("multiple_testing must be 'holm', 'bh' or 'none'")
        if not 0 < self.data_drift_threshold < 1:
            raise ConfigError("data_drift_threshold must be in (0, 1)")
        if not 0 < self.outlier_alt_rate < 1 or self.variance_ratio <= 1:
            raise ConfigError("outlier_alt_rate must be in (0, 1), variance_ratio > 1")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "DetectorConfig":
        """Build from a plain mapping, rejecting unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown detector setting(s): {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
