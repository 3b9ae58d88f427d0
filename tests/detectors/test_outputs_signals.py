"""``prediction_drift`` and ``multivariate`` as pure code: each fires on its change and
names it, stays silent on stationary streams (AR(1) included), continues exactly after
a save and restore; the reconstruction error is sklearn's PCA reconstruction error."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

from bench.detectors_bench import ar_mixed
from bench.output_targets import WEIGHTS, correlated, reference, run
from detectors import ModelMonitor, reconstruction
from detectors.dependence import normal_scores

REF = 5000


def _named(decisions, signal, after):
    return [(d.offset, sorted(r["column"] for r in d.root_cause if r["signal"] == signal))
            for d in decisions if d.offset >= after
            and any(r["signal"] == signal for r in d.root_cause)]


def test_multivariate_fires_on_a_correlation_flip_and_names_the_pair():
    rng = np.random.default_rng(1)
    x = np.r_[correlated(rng, REF + 10_000, 0.9), correlated(rng, 10_000, -0.9)]
    dec = run(ModelMonitor(reference(x[:REF])), x[REF:])
    assert not [d for d in dec if d.offset < 10_000]
    offset, cols = _named(dec, "multivariate", 10_000)[0]
    assert offset < 10_500 and cols == ["x3", "x7"]
    assert dec[0].trigger_types == ["data_drift"]


def test_prediction_drift_fires_when_the_spread_halves_inputs_unchanged():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(REF + 20_000, 10))
    pred = x @ WEIGHTS
    pred[REF + 10_000:] *= 0.5
    dec = run(ModelMonitor(reference(x[:REF], pred[:REF])), x[REF:], pred[REF:])
    assert not [d for d in dec if d.offset < 10_000]
    offset, cols = _named(dec, "prediction_drift", 10_000)[0]
    assert offset < 10_500 and cols == ["prediction"]
    assert "prediction_drift" in dec[0].trigger_types
    assert all(r["signal"] == "prediction_drift" for r in dec[0].root_cause)


@pytest.mark.parametrize("phi", [0.0, 0.8])
def test_both_are_silent_on_stationary_streams(phi):
    x = ar_mixed(np.random.default_rng(30 + int(10 * phi)), REF + 100_000, 10, phi)
    pred = np.nan_to_num((x - x[:REF].mean(0)) / x[:REF].std(0)) @ WEIGHTS
    mon = ModelMonitor(reference(x[:REF], pred[:REF]))
    assert mon.signals["multivariate"].columns and mon.signals["prediction_drift"].columns
    assert run(mon, x[REF:], pred[REF:]) == []


def test_events_without_a_prediction_leave_the_prediction_drift_unchanged():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(REF + 3000, 10))
    pred = x @ WEIGHTS
    prof = reference(x[:REF], pred[:REF])
    a, b = ModelMonitor(prof), ModelMonitor(prof)
    gaps = pred[REF:].astype(object)
    gaps[::3] = None
    keep = np.ones(3000, bool)
    keep[::3] = False
    assert a.update_features(x[REF:], None, gaps) == []
    assert b.update_features(x[REF:][keep], None, pred[REF:][keep]) == []
    sa, sb = a.signals["prediction_drift"].cusum, b.signals["prediction_drift"].cusum
    assert sa.s.any() and np.array_equal(sa.s, sb.s) and np.array_equal(sa.n, sb.n)
    assert a.update_features(x[REF:REF + 10]) == [] and np.array_equal(sa.s, sb.s)


def test_a_restored_monitor_continues_exactly():
    rng = np.random.default_rng(5)
    x = np.r_[correlated(rng, REF + 6000, 0.6), correlated(rng, 6000, 0.0)]
    pred = x @ WEIGHTS
    pred[REF + 6000:] *= 0.6
    prof = reference(x[:REF], pred[:REF])
    a = ModelMonitor(prof)
    run(a, x[REF:REF + 6200], pred[REF:REF + 6200])
    assert a.signals["multivariate"].cusum.s.any() and a.signals["prediction_drift"].cusum.s.any()
    b = ModelMonitor.from_state(prof, a.state_to_bytes())
    assert b.state_to_bytes() == a.state_to_bytes()
    rest = slice(REF + 6200, None)
    da, db = run(a, x[rest], pred[rest]), run(b, x[rest], pred[rest])
    assert da and json.dumps([d.to_dict() for d in da]) == json.dumps([d.to_dict() for d in db])


def test_the_reconstruction_error_is_sklearns():
    rng = np.random.default_rng(6)
    x = correlated(rng, 4000, 0.8)
    x[:, 5] = 0.5 * x[:, 1] + rng.normal(size=4000)
    z = np.column_stack([normal_scores(c) for c in x.T])
    n_fit = int(len(z) * (1 - reconstruction.HELD_OUT))
    z[:n_fit] -= z[:n_fit].mean(axis=0)  # sklearn centres on the fit rows' mean
    fit = reconstruction.fit(z)
    pca = PCA(n_components=reconstruction.SHARE, svd_solver="full").fit(z[:n_fit])
    held = z[n_fit:]
    expected = ((held - pca.inverse_transform(pca.transform(held))) ** 2).sum(axis=1)
    basis = fit["weights"] * fit["scale"]
    assert basis.shape[1] == z.shape[1] - pca.n_components_
    np.testing.assert_allclose(((held @ basis) ** 2).sum(axis=1), expected, rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_allclose(fit["errors"].mean(), 1.0, rtol=1e-12)
    # each column's residual share is its mean squared residual's share
    resid = held - pca.inverse_transform(pca.transform(held))
    p = held @ fit["weights"]
    np.testing.assert_allclose(reconstruction.residual_shares(p.T @ p, fit["weights"],
                                                              fit["scale"]),
                               (resid ** 2).sum(0) / (resid ** 2).sum(), rtol=1e-8)


def test_a_profile_without_predictions_or_a_second_column_has_no_such_tests():
    ref = pd.DataFrame({"a": np.random.default_rng(7).normal(size=2000)})
    mon = ModelMonitor(reference.__globals__["ReferenceProfile"].from_frame(ref))
    assert mon.signals["multivariate"].columns == []
    assert mon.signals["prediction_drift"].columns == []
    assert mon.update_features(np.zeros((5, 1)), None, np.zeros(5)) == []
