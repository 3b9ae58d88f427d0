"""Serial dependence: the long-run variance factor, the calibration that
uses it, the warm-up that learns it, and its place in the saved state."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.signal import lfilter

from detectors import DetectorConfig, ModelMonitor, ReferenceProfile
from detectors.dependence import long_run_factor


def _ar(seed, n, cols, phi):
    e = np.random.default_rng(seed).normal(size=(n, cols))
    e[1:] *= np.sqrt(1 - phi * phi)
    return lfilter([1.0], [1.0, -phi], e, axis=0)


def _names(c):
    return [f"x{j}" for j in range(c)]


@pytest.mark.parametrize("phi", [0.0, 0.3, 0.5, 0.8])
def test_long_run_factor_of_ar1_is_one_plus_phi_over_one_minus_phi(phi):
    tau, rho = long_run_factor(_ar(int(phi * 10), 40_000, 3, phi))
    np.testing.assert_allclose(tau, (1 + phi) / (1 - phi), rtol=0.1)
    np.testing.assert_allclose(rho, phi, atol=0.03)


def test_long_run_factor_of_a_moving_sum_is_at_least_its_true_value():
    e = np.random.default_rng(3).normal(size=40_003)
    x = e[3:] + e[2:-1] + e[1:-2] + e[:-3]  # MA(3), tau = 4 (overestimated: safe)
    assert 3.6 < long_run_factor(x)[0] < 8.0


def _ar_setup(phi=0.5, n=60_000, seed=0, cols=4):
    x = _ar(seed, 5_000 + n, cols, phi)
    x[:, 1] = np.exp(x[:, 1])  # a skewed marginal
    x[:, 2] = np.floor(2 * x[:, 2])  # ties
    ref = pd.DataFrame(x[:5_000], columns=_names(cols))
    return ref, x[5_000:]


def _count(profile, x, cfg=DetectorConfig()):
    mon = ModelMonitor(profile, cfg)
    return sum(len(mon.update_features(x[s:s + 5000])) for s in range(0, len(x), 5000)), mon


def test_dependent_stream_is_quiet_and_would_not_be_without_the_factors():
    ref, x = _ar_setup()
    p = ReferenceProfile.from_frame(ref)
    fired, mon = _count(p, x)
    assert fired == 0
    dep = mon.dependence
    assert dep["source"] == "reference"
    assert all(2.4 < dep["columns"][c]["factor"] < 3.6 for c in _names(4))
    snap = mon.snapshot()["columns"]["x0"]
    assert snap["dependence_factor"] == dep["columns"]["x0"]["factor"]
    # the same profile with the factors taken as 1 (the independent calibration)
    ones = {**p.dependence, **{k: np.ones(4) for k in ("mean", "var", "ks", "out")}}
    naive = ReferenceProfile(p.numeric_columns, p.categorical_columns, p.samples, p.means,
                             p.stds, p.categories, p.baseline, p.errors, p.task,
                             ones)._with_fingerprint()
    assert _count(naive, x)[0] >= 3


def test_a_shift_on_a_dependent_stream_is_found():
    ref, x = _ar_setup(n=8_000, seed=2)
    x[3000:, 0] += 0.7
    dec = ModelMonitor(ReferenceProfile.from_frame(ref)).update_features(x)
    assert dec and 3000 <= dec[0].offset <= 4500 and "x0" in dec[0].columns


def _periodic(seed, n, period=1000, amplitude=1.0, cols=4, wavy=(0, 1)):
    """Independent columns, those in ``wavy`` with a sinusoidal mean (a time-of-day
    pattern) whose period a 20,000-row reference covers many times."""
    x = np.random.default_rng(seed).normal(size=(20_000 + n, cols))
    x[:, list(wavy)] += amplitude * np.sin(2 * np.pi * np.arange(len(x)) / period)[:, None]
    ref = pd.DataFrame(x[:20_000], columns=_names(cols))
    return ReferenceProfile.from_frame(ref), x[20_000:]


def test_a_periodic_mean_that_the_reference_covers_is_not_drift():
    p, x = _periodic(5, 200_000)
    fired, mon = _count(p, x)
    assert fired == 0
    factors = [mon.dependence["columns"][c]["factor"] for c in _names(4)]
    assert min(factors[:2]) > 20 and max(factors[2:]) < 1.5  # only the wavy columns widen


@pytest.mark.parametrize("column, shift, within", [(0, 2.0, 300), (3, 0.5, 600)])
def test_a_shift_beside_or_on_a_periodic_pattern_is_found(column, shift, within):
    p, x = _periodic(6, 40_000)
    x[20_000:, column] += shift
    fired = ModelMonitor(p).update_features(x)
    assert fired and 20_000 <= fired[0].offset <= 20_000 + within
    assert f"x{column}" in fired[0].columns


def test_shuffled_reference_learns_the_dependence_in_the_warm_up():
    ref, x = _ar_setup(seed=1)
    cfg = DetectorConfig(reference_order="shuffled", dependence_warmup=2000)
    p = ReferenceProfile.from_frame(ref, config=cfg)
    assert p.dependence is None
    mon = ModelMonitor(p, cfg)
    assert mon.dependence["source"] == "pending" and mon.snapshot()["dependence_pending"] == 1
    assert mon.update_features(x[:1999]) == []
    assert mon.dependence["source"] == "pending"
    fired = mon.update_features(x[1999:2500])  # the warm-up ends inside this batch
    assert mon.dependence["source"] == "warmup" and mon.snapshot()["dependence_pending"] == 0
    assert all(2.0 < mon.dependence["columns"][c]["factor"] < 4.5 for c in _names(4))
    for s in range(2500, len(x), 5000):
        fired += mon.update_features(x[s:s + 5000])
    assert fired == []


@pytest.mark.parametrize("stop", [700, 2000, 2600])
def test_warm_up_survives_save_and_restore(stop):
    ref, x = _ar_setup(n=6_000, seed=4)
    x[4000:, 3] += 1.0
    cfg = DetectorConfig(reference_order="shuffled", dependence_warmup=2000)
    p = ReferenceProfile.from_frame(ref, config=cfg)
    a = ModelMonitor(p, cfg)
    a.update_features(x[:stop])
    b = ModelMonitor.from_state(p, a.state_to_bytes())
    c = ModelMonitor.from_bytes(a.to_bytes())
    outs = [json.dumps([d.to_dict() for s in range(stop, len(x), 999)
                        for d in m.update_features(x[s:s + 999])]) for m in (a, b, c)]
    assert outs[0] == outs[1] == outs[2] and json.loads(outs[0])
    assert json.dumps(a.snapshot()) == json.dumps(b.snapshot())
    assert a.state_to_bytes() == b.state_to_bytes()


def test_labelled_dependence_from_reference_errors_and_from_the_stream():
    rng = np.random.default_rng(5)
    n = 5_000
    err = _ar(6, 2 * n, 1, 0.6)[:, 0]
    act = rng.normal(size=2 * n)
    ref = pd.DataFrame({"a": rng.normal(size=n), "p": act[:n] + err[:n], "y": act[:n]})
    p = ReferenceProfile.from_frame(ref, prediction_column="p", actual_column="y")
    assert 1.5 < p.dependence["errors"] < 4.0
    mon = ModelMonitor(p)
    assert mon.dependence["errors"] == p.dependence["errors"]
    assert mon.update_labelled(act[n:] + err[n:], act[n:]) == []
    # no reference errors: learnt from the baseline's own (time-ordered) errors
    q = ReferenceProfile.from_frame(ref[["a"]])
    mon = ModelMonitor(q)
    assert np.isnan(mon.dependence["errors"])
    mon.update_labelled(act[n:n + 600] + err[n:n + 600], act[n:n + 600])
    assert mon.dependence["errors"] > 1.2
