"""N-of-M persistence in the monitor, the streaming error trend, and the batch API's
reading of ``metrics``."""

import numpy as np
import pandas as pd
import pytest

from detectors import AutomaticRetrainingOrchestrator, DetectorConfig, DetectorError, ModelMonitor, \
    ReferenceProfile


def _profile(cols=4, seed=0):
    rng = np.random.default_rng(seed)
    ref = pd.DataFrame(rng.normal(size=(5000, cols)), columns=[f"x{i}" for i in range(cols)])
    return ReferenceProfile.from_frame(ref)


def test_persistence_delays_a_sequential_signal_by_n_minus_1_checks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 4))
    x[1000:, 2] += 3.0  # the mean CUSUM passes its threshold and keeps rising
    plain = ModelMonitor(_profile()).update_features(x)
    held = ModelMonitor(_profile(), DetectorConfig(persistence_n=3, persistence_m=5)) \
        .update_features(x)
    assert plain[0].columns == held[0].columns == ["x2"]
    assert held[0].offset == plain[0].offset + 2


def test_persistence_counts_ks_checks_at_checkpoints():
    # with the sequential tests made blind, only the KS window can fire; 2 of 2 checks
    # means it fires one stride after the plain rule
    cfg = dict(mean_shift=0.3, ks_window=400, ks_stride=100, target_arl=1e4)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 4))
    # same mean and variance, other shape (two modes)
    x[1000:, 1] = rng.choice([-0.95, 0.95], 2000) + rng.normal(scale=0.3, size=2000)
    plain = ModelMonitor(_profile(), DetectorConfig(**cfg))
    held = ModelMonitor(_profile(), DetectorConfig(**cfg, persistence_n=2, persistence_m=2))
    for mon in (plain, held):
        mean = mon.signals["mean_shift"]
        for part in (mean.up, mean.down, mon.signals["variance"].cusum,
                     mon.signals["outlier_rate"].rate):
            part.threshold = np.full_like(part.threshold, np.inf)
    p = [d for d in plain.update_features(x) if "ks" in str(d.root_cause)]
    h = [d for d in held.update_features(x) if "ks" in str(d.root_cause)]
    assert p and h and h[0].offset == p[0].offset + 100


def _labels(n, ramp_from=None, seed=0):
    rng = np.random.default_rng(seed)
    act = rng.normal(size=n)
    scale = np.full(n, 0.5)
    if ramp_from is not None:
        scale[ramp_from:] = 0.5 * (1 + np.linspace(0, 1.0, n - ramp_from))
    return act + rng.normal(size=n) * scale, act


def test_streaming_trend_fires_on_a_ramp_and_is_in_the_snapshot():
    pred, act = _labels(13_000, ramp_from=3000)
    cfg = DetectorConfig(concept_window=200, trend_windows=10)
    mon = ModelMonitor(_profile(), cfg)
    mon.update_labelled(pred[:3000], act[:3000])  # 500 baseline + 10 blocks of 200
    snap = mon.snapshot()
    assert np.isfinite(snap["trend_slope"]) and abs(snap["trend_z"]) < snap["trend_threshold"]
    # with the other labelled signals blind, the trend alone finds the ramp
    mon.labelled.h = mon.labelled.z = np.inf
    fired = mon.update_labelled(pred[3000:], act[3000:])
    assert fired and fired[0].root_cause[0]["signal"] == "trend"
    assert fired[0].trigger_types == ["concept_drift"] and fired[0].offset > 3000


def test_streaming_trend_quiet_on_stationary_errors():
    pred, act = _labels(300_000, seed=3)
    mon = ModelMonitor(_profile())
    assert mon.update_labelled(pred, act) == []
    assert np.isfinite(mon.snapshot()["trend_z"])


def _frames():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=1000)})
    cur = pd.DataFrame({"x": rng.normal(size=400)})
    act = rng.normal(size=400)
    pred = act + rng.normal(scale=0.6, size=400)  # R2 about 0.64, RMSE about 0.6
    return ref, cur, pred, act


def test_given_metrics_are_current_and_compared_with_the_baseline():
    ref, cur, pred, act = _frames()
    t = AutomaticRetrainingOrchestrator(baseline={"r2": 0.85, "rmse": 0.35}).should_retrain(
        ref, cur, pred, act, {"r2": 0.6})
    perf = t.metrics["performance"]
    assert perf["current_metrics"]["r2"] == 0.6  # given values win over computed ones
    assert perf["current_metrics"]["rmse"] == pytest.approx(np.sqrt(np.mean((act - pred) ** 2)))
    assert "r2" in perf["degraded"] and t.triggered


def test_metrics_are_current_when_a_baseline_is_configured():
    ref, cur, pred, act = _frames()
    orch = AutomaticRetrainingOrchestrator(baseline={"r2": 0.85, "rmse": 0.35})
    t = orch.should_retrain(ref, cur, pred, act, {"r2": 0.84, "rmse": 0.36})
    perf = t.metrics["performance"]
    assert perf["mode"] == "baseline_configured" and perf["degraded"] == []
    t = orch.should_retrain(ref, cur, None, None, {"r2": 0.70})
    assert t.metrics["performance"]["degraded"] == ["r2"] and t.triggered
    ref.attrs["baseline"] = {"accuracy": 0.9}
    t = AutomaticRetrainingOrchestrator().should_retrain(ref, cur, None, None,
                                                         {"accuracy": 0.8})
    assert t.metrics["performance"]["degraded"] == ["accuracy"]


def test_a_current_metric_without_a_baseline_is_an_error_naming_the_baseline():
    ref, cur, _, _ = _frames()
    with pytest.raises(DetectorError, match="baseline"):
        AutomaticRetrainingOrchestrator().should_retrain(ref, cur, None, None, {"r2": 0.1})
