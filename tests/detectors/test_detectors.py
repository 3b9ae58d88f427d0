"""Tests of the detectors package (fast; soak measurements live in the bench)."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from detectors import (AutomaticRetrainingOrchestrator, ConceptDriftDetector,
                       DataDriftDetector, DetectorConfig, DetectorError, ModelMonitor,
                       ReferenceProfile, RetrainingTrigger, calibrate,
                       format_decision_banner)
from detectors.calibration import ks_critical, siegmund_arl
from detectors.cusum import CUSUM
from detectors.ks_window import KSWindow, ks_pvalue

values = st.lists(st.one_of(st.integers(-3, 3).map(float),
                            st.floats(-5, 5, allow_nan=False), st.just(float("nan"))),
                  min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(ref=values, stream=values, window=st.integers(1, 20), stride=st.integers(1, 7))
def test_ks_window_equals_scipy(ref, stream, window, stride):
    ref = np.array(ref)
    ref = ref[~np.isnan(ref)]
    if ref.size == 0:
        return
    ks = KSWindow([ref], window=window, stride=stride)
    x = np.array(stream)[:, None]
    idx, d, n, missing = ks.update_many(x)
    for i, dd, nn, mm in zip(idx, d[:, 0], n[:, 0], missing[:, 0]):
        w = x[max(0, i - window + 1):i + 1, 0]
        assert mm == np.isnan(w).sum()
        w = w[~np.isnan(w)]
        assert nn == len(w)
        if len(w) == 0:
            assert np.isnan(dd)
            continue
        r = stats.ks_2samp(ref, w, method="asymp")
        assert abs(r.statistic - dd) < 1e-12
        mine = ks_pvalue(np.array([dd]), np.array([ref.size]), np.array([nn]))[0]
        assert np.isclose(mine, r.pvalue, rtol=0, atol=1e-12, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(alpha=st.sampled_from([1e-6, 2.5e-5, 0.01]), m=st.integers(1, 20_000),
       sizes=st.lists(st.integers(1, 1000), min_size=1, max_size=4), tau=st.floats(0.5, 4.0))
def test_ks_critical_is_scipys_inversion_for_every_size(alpha, m, sizes, tau):
    # Cached per level and effective size: asked again, in any order, the same values.
    for n in [*sizes, *sizes[::-1]]:
        effective = max(float(np.round(m * n / (m + n) / max(tau, 1.0))), 1.0)
        assert ks_critical(alpha, m, n, tau) == float(stats.kstwo.isf(alpha, effective))


def test_ks_constant_column():
    ks = KSWindow([np.zeros(50)], window=10, stride=5)
    _, d, _, _ = ks.update_many(np.r_[np.zeros(5), np.ones(5)][:, None])
    assert d[:, 0].tolist() == [0.0, 0.5]


def _ref(n=5000, cols=4, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, cols)), columns=[f"x{i}" for i in range(cols)])


def test_empty_reference_error():
    with pytest.raises(DetectorError, match="empty"):
        ReferenceProfile.from_frame(pd.DataFrame())
    with pytest.raises(ValueError):
        ReferenceProfile.from_frame(pd.DataFrame({"a": [np.nan, np.nan]}))


def test_config_rejects_unknown_keys():
    with pytest.raises(DetectorError, match="unknown"):
        DetectorConfig.from_mapping({"ks_windw": 3})


def test_profile_roundtrip_and_fingerprint():
    p = ReferenceProfile.from_frame(_ref())
    q = ReferenceProfile.from_bytes(p.to_bytes())
    assert q.fingerprint == p.fingerprint == ReferenceProfile.from_frame(_ref()).fingerprint
    assert ReferenceProfile.from_frame(_ref(seed=1)).fingerprint != p.fingerprint


def test_calibration_deterministic():
    p = ReferenceProfile.from_frame(_ref())
    a, b = calibrate(p, DetectorConfig()), calibrate(p, DetectorConfig())
    assert np.array_equal(a.mean_h, b.mean_h) and np.array_equal(a.mean_drift_up, b.mean_drift_up)


def test_siegmund_threshold_against_simulation():
    # mean run length of a CUSUM with the analytic threshold, at a small target
    rng = np.random.default_rng(0)
    delta, h = 0.5, 3.0
    runs = []
    det = CUSUM([delta], [delta**2 / 2], [h])
    for _ in range(300):
        det._reset()
        t = 0
        while True:
            path = det.update_many(rng.normal(size=(2000, 1)))
            hit = np.nonzero(path[:, 0] > h)[0]
            if hit.size:
                runs.append(t + hit[0] + 1)
                break
            t += 2000
    assert 0.7 < np.mean(runs) / siegmund_arl(h, delta) < 1.4


def test_one_event_and_no_decision_before_min_samples():
    mon = ModelMonitor(ReferenceProfile.from_frame(_ref()), DetectorConfig(gather_events=0))
    assert mon.update_features(np.full((1, 4), 50.0)) == []
    assert mon.update_features(np.full((98, 4), 50.0)) == []
    assert mon.events_seen == 99
    d = mon.update_features(np.full((5, 4), 50.0))
    assert d and d[0].offset == 99
    # by default the decision waits gather_events (10) after the first signal
    mon = ModelMonitor(ReferenceProfile.from_frame(_ref()))
    assert mon.update_features(np.full((105, 4), 50.0)) == []
    d = mon.update_features(np.full((10, 4), 50.0))
    assert d and d[0].offset == 109 and d[0].severity == "CRITICAL"


def test_shift_detected_in_right_columns_and_stationary_quiet():
    rng = np.random.default_rng(5)
    mon = ModelMonitor(ReferenceProfile.from_frame(_ref(20000, 10)))
    assert mon.update_features(rng.normal(size=(100_000, 10))) == []
    x = rng.normal(size=(3000, 10))
    x[:, [2, 7]] += 1.0
    d = mon.update_features(x)
    assert d and d[0].offset - 100_000 < 150
    assert set(d[0].columns) <= {"x2", "x7"} and d[0].trigger_types == ["data_drift"]


def test_save_restore_continues_exactly():
    rng = np.random.default_rng(2)
    ref = _ref(3000, 3)
    ref["cat"] = rng.choice(["a", "b"], size=3000)
    a = ModelMonitor(ReferenceProfile.from_frame(ref))
    x = rng.normal(size=(6000, 3)); x[3000:, 0] += 0.8; x[100:200, 1] = np.nan
    cats = {"cat": rng.choice(["a", "b", "c"], size=6000)}
    a.update_features(x[:2500], {"cat": cats["cat"][:2500]})
    a.update_labelled(rng.normal(size=700), rng.normal(size=700))
    b = ModelMonitor.from_bytes(a.to_bytes())
    da = a.update_features(x[2500:], {"cat": cats["cat"][2500:]})
    db = b.update_features(x[2500:], {"cat": cats["cat"][2500:]})
    assert da and _same(da, db)
    p, y = rng.normal(size=900), rng.normal(size=900) * 2
    assert _same(a.update_labelled(p, y), b.update_labelled(p, y))
    assert json.dumps(a.snapshot()) == json.dumps(b.snapshot())


def _same(da, db):  # NaN-aware equality of decision lists
    return json.dumps([d.to_dict() for d in da]) == json.dumps([d.to_dict() for d in db])


def test_labelled_error_rise_fires_concept_or_performance():
    rng = np.random.default_rng(3)
    mon = ModelMonitor(ReferenceProfile.from_frame(_ref()))
    act = rng.normal(size=6000)
    pred = act + rng.normal(scale=0.5, size=6000)
    pred[3000:] = act[3000:] + rng.normal(scale=1.0, size=3000)
    d = mon.update_labelled(pred, act)
    assert d and 3000 <= d[0].offset < 3400


def test_design_api_semantics():
    ref = _ref(1000, 3)
    cur = _ref(500, 3, seed=9)
    cur["x1"] += 1.0
    drift, m = DataDriftDetector(threshold=0.05).detect_distribution_shift(ref, cur)
    assert drift and m["drifted_columns"] == ["x1"]
    r = stats.ks_2samp(ref["x1"], cur["x1"], method="asymp")
    assert m["columns"]["x1"]["ks_statistic"] == pytest.approx(r.statistic)
    assert m["columns"]["x1"]["p_value"] == pytest.approx(r.pvalue)
    rng = np.random.default_rng(0)
    a = rng.normal(size=400)
    p = a + np.r_[rng.normal(scale=0.2, size=300), rng.normal(scale=1, size=100)]
    assert ConceptDriftDetector(window_size=100).detect_prediction_error_drift(p, a)[0]
    t = AutomaticRetrainingOrchestrator(baseline={"r2": 0.8}).should_retrain(ref, cur, p, a)
    # the current R2 of p vs a is about 0.72, against the baseline's 0.8
    assert t.triggered and t.reason == ("Multiple triggers detected: data_drift, "
                                        "concept_drift, performance_degradation")
    t = AutomaticRetrainingOrchestrator().should_retrain(ref, cur, p, a)
    assert t.reason == "Multiple triggers detected: data_drift, concept_drift"
    banner = format_decision_banner(RetrainingTrigger(True, "x", "HIGH", 0.8245))
    assert "RETRAINING DECISION: YES" in banner and "Confidence: 82.45%" in banner
    few = AutomaticRetrainingOrchestrator().should_retrain(ref, cur.iloc[:50])
    assert not few.triggered
