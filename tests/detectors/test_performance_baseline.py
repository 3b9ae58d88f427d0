"""A baseline estimated from a small holdout is uncertain: the performance tests must
not read its sampling error as degradation on a stream that has not changed."""

import numpy as np
import pandas as pd

from detectors import DetectorConfig, ModelMonitor, ReferenceProfile


def heavy_tailed(n: int, rng: np.random.Generator) -> pd.DataFrame:
    actual = rng.normal(size=n) * 3
    prediction = actual + rng.standard_t(df=3, size=n) * 0.4  # heavy-tailed errors
    return pd.DataFrame({"x": rng.normal(size=n), "prediction": prediction, "actual": actual})


def test_no_performance_alarm_on_an_unchanged_stream_with_a_small_holdout() -> None:
    for seed in range(5):
        rng = np.random.default_rng(seed)
        holdout = heavy_tailed(800, rng)
        profile = ReferenceProfile.from_frame(holdout, prediction_column="prediction", actual_column="actual")
        monitor = ModelMonitor(profile, DetectorConfig())
        stream = heavy_tailed(30_000, rng)
        decisions = monitor.update_labelled(stream["prediction"].to_numpy(), stream["actual"].to_numpy())
        assert decisions == [], (seed, [d.reason for d in decisions])


def test_a_real_rise_of_the_error_is_still_found() -> None:
    rng = np.random.default_rng(9)
    profile = ReferenceProfile.from_frame(heavy_tailed(800, rng), prediction_column="prediction", actual_column="actual")
    monitor = ModelMonitor(profile, DetectorConfig())
    stream = heavy_tailed(6000, rng)
    stream.loc[3000:, "prediction"] += rng.normal(size=3000) * 1.5
    decisions = monitor.update_labelled(stream["prediction"].to_numpy(), stream["actual"].to_numpy())
    assert decisions and 3000 <= decisions[0].offset < 3600
