"""The false-alarm rate and the meaning of confidence, measured where they are measurable.

The README promises one `target_arl` per model: with a small target (20,000 events) a
million stationary events must give about 1,000,000 / 20,000 alarms, under independence and
under serial dependence. The calibration is a little conservative (fewer alarms than the
target allows, more so under dependence), so the bounds are wide, but a 10x miscalibration
either way breaks them: at target_arl 2,000 these streams give about 300 alarms, at
200,000 about 8.

A decision's confidence is exp(-lambda), lambda being how often per `target_arl` horizon a
statistic that extreme occurs without a change; so a false alarm with confidence >= c may
occur at most -ln(c) times per horizon."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.signal import lfilter

from detectors import Decision, DetectorConfig, ModelMonitor, ReferenceProfile

TARGET_ARL = 20_000
EVENTS = 1_000_000
HORIZONS = EVENTS / TARGET_ARL  # 50 per stream
REFERENCE_ROWS = 20_000
COLUMNS = [f"x{j}" for j in range(5)]


def stationary(seed: int, phi: float) -> np.ndarray:
    """Standard normal columns, AR(1) with coefficient `phi`, started stationary."""
    e = np.random.default_rng(seed).normal(size=(REFERENCE_ROWS + EVENTS, len(COLUMNS)))
    if phi:
        e[1:] *= np.sqrt(1 - phi * phi)
        e = lfilter([1.0], [1.0, -phi], e, axis=0)
    return e


def alarms(x: np.ndarray, config: DetectorConfig) -> list[Decision]:
    profile = ReferenceProfile.from_frame(pd.DataFrame(x[:REFERENCE_ROWS], columns=COLUMNS), config=config)
    monitor = ModelMonitor(profile, config)
    stream = x[REFERENCE_ROWS:]
    return [d for i in range(0, len(stream), 10_000) for d in monitor.update_features(stream[i:i + 10_000])]


@pytest.fixture(scope="module")
def false_alarms() -> dict[float, list[Decision]]:
    config = DetectorConfig(target_arl=TARGET_ARL)
    return {phi: alarms(stationary(1, phi), config) for phi in (0.0, 0.5)}


def test_alarms_on_a_million_stationary_events_match_the_target_rate(false_alarms) -> None:
    counts = {phi: len(decisions) for phi, decisions in false_alarms.items()}  # 26 and 9 today
    assert all(count <= HORIZONS * 1.2 for count in counts.values()), counts
    assert sum(counts.values()) >= 2 * HORIZONS / 8, counts


@pytest.mark.parametrize("confidence", [0.6, 0.8, 0.9])
def test_a_false_alarm_this_confident_is_as_rare_as_its_confidence_says(false_alarms, confidence) -> None:
    confidences = [d.confidence for decisions in false_alarms.values() for d in decisions]
    allowed = 2 * HORIZONS * -math.log(confidence)  # 51, 22 and 10.5 over the two streams
    assert sum(c >= confidence for c in confidences) <= 1.2 * allowed, sorted(confidences)


def test_the_promised_default_is_one_false_alarm_in_ten_million_events() -> None:
    assert DetectorConfig().target_arl == 10_000_000
