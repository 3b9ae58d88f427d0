"""The performance estimated without labels, as pure code: CBPE against the realized
accuracy, the calibration check and fix against sklearn's calibration curve, DLE
against its own training error, the tree arrays against sklearn, the profile's
estimator record, and the monitor's estimated_performance signal and expected impact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.ensemble import HistGradientBoostingRegressor

from detectors import DetectorConfig, ModelMonitor, ReferenceProfile
from detectors.cbpe import CalibrationMap, hosmer_lemeshow, predicted_class_probability
from detectors.dle import FIT_PARAMS, MIN_FIT_ROWS, LossModel, fit_loss_model


def calibrated(rng, n, spread=2.5):
    """Inputs, calibrated positive-class probabilities, predictions and labels."""
    x = rng.normal(size=(n, 3))
    p = 1 / (1 + np.exp(-(spread * x[:, 0] + 0.5 * x[:, 1])))
    return x, p, (p > 0.5).astype(int), (rng.random(n) < p).astype(int)


def frame(x, p, pred, y):
    return pd.DataFrame(x, columns=["a", "b", "c"]).assign(prediction=pred, actual=y, score=p)


@pytest.mark.parametrize("seed", range(5))
def test_cbpe_estimate_matches_realized_accuracy_of_calibrated_scores(seed: int) -> None:
    rng = np.random.default_rng(seed)
    _, p, pred, y = calibrated(rng, 50_000, spread=rng.uniform(0.5, 4))
    q = predicted_class_probability(list(pred), list(p), 1)
    # the mean of 50,000 Bernoulli(q): its standard error is below 0.0023
    assert abs(q.mean() - (pred == y).mean()) < 0.008


def test_calibration_check_passes_calibrated_and_fixes_miscalibrated_scores() -> None:
    rng = np.random.default_rng(7)
    q = rng.uniform(0.5, 1.0, 40_000)
    fine = CalibrationMap.fit(q, rng.random(len(q)) < q)
    assert not fine.recalibrated and fine.hl_pvalue > 0.01
    truth = q ** 4  # overconfident scores
    right = rng.random(len(q)) < truth
    fixed = CalibrationMap.fit(q, right)
    assert fixed.recalibrated and fixed.hl_pvalue < 1e-6
    # against sklearn's reliability diagram on fresh outcomes: the raw scores are far
    # off the diagonal, the calibrated ones on it
    fresh = rng.random(len(q)) < truth
    raw_true, raw_pred = calibration_curve(fresh, q, n_bins=10, strategy="quantile")
    cal_true, cal_pred = calibration_curve(fresh, fixed.apply(q), n_bins=10, strategy="quantile")
    assert np.max(np.abs(raw_true - raw_pred)) > 0.2
    assert np.max(np.abs(cal_true - cal_pred)) < 0.03
    assert abs(fixed.apply(q).mean() - fresh.mean()) < 0.01


def test_hosmer_lemeshow_ece_is_the_reliability_gap() -> None:
    rng = np.random.default_rng(3)
    q = rng.uniform(0, 1, 20_000)
    right = rng.random(len(q)) < np.clip(q + 0.1, 0, 1)
    _, p_value, ece = hosmer_lemeshow(q, right)
    frac, mean = calibration_curve(right, q, n_bins=10, strategy="quantile")
    assert p_value < 1e-6
    assert ece == pytest.approx(np.mean(np.abs(frac - mean)), abs=1e-9)


def test_tree_arrays_predict_as_sklearn() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5000, 4))
    x[rng.random(x.shape) < 0.05] = np.nan
    y = np.abs(rng.normal(size=5000)) * (1 + np.nan_to_num(x[:, 0]) ** 2)
    est = HistGradientBoostingRegressor(random_state=0, **FIT_PARAMS).fit(x, y)
    got = LossModel.from_sklearn(est).predict(x)
    np.testing.assert_allclose(got, np.maximum(est.predict(x), 0), atol=1e-9)
    again = LossModel.from_dict(LossModel.from_sklearn(est).to_dict()).predict(x)
    np.testing.assert_array_equal(again, got)


def test_dle_held_out_estimates_do_not_see_their_own_training_error() -> None:
    """On pure noise the |error| is unpredictable: the in-sample fit looks better than
    it is (it learns the noise), the held-out estimates do not."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6000, 5))
    err = np.abs(rng.normal(size=6000))
    model, held_out = fit_loss_model(x, err)
    cut = len(x) - len(held_out)
    in_sample = np.mean((model.predict(x[:cut]) - err[:cut]) ** 2)
    out = np.mean((held_out - err[cut:]) ** 2)
    fresh_x, fresh = rng.normal(size=(6000, 5)), np.abs(rng.normal(size=6000))
    on_new = np.mean((model.predict(fresh_x) - fresh) ** 2)
    assert in_sample < on_new * 0.97  # the full fit flatters itself on its rows
    assert abs(out - on_new) < abs(in_sample - on_new)  # held out tells the truth
    # where the error depends on the inputs, the estimate follows it
    err2 = np.abs(rng.normal(size=6000)) * (0.3 + np.abs(x[:, 0]))
    _, held2 = fit_loss_model(x, err2)
    assert np.corrcoef(held2, err2[-len(held2):])[0, 1] > 0.3


def test_profile_keeps_the_estimator_and_old_profiles_still_read() -> None:
    rng = np.random.default_rng(2)
    ref = frame(*calibrated(rng, 5000))
    plain = ReferenceProfile.from_frame(ref, prediction_column="prediction", actual_column="actual")
    scored = ReferenceProfile.from_frame(ref, prediction_column="prediction", actual_column="actual",
                                         score_column="score")
    assert plain.estimator is None and "score" not in scored.numeric_columns
    assert scored.estimator["kind"] == "cbpe" and scored.estimator["format"] == 1
    assert scored.fingerprint != plain.fingerprint
    back = ReferenceProfile.from_bytes(scored.to_bytes())
    assert back.fingerprint == scored.fingerprint and back.estimator["kind"] == "cbpe"
    # a profile without an estimator keeps the bytes and fingerprint it always had
    assert ReferenceProfile.from_bytes(plain.to_bytes()).fingerprint == plain.fingerprint
    assert b"estimator" not in plain.to_bytes()


def test_a_regression_reference_too_short_for_a_loss_model_gets_none_instead_of_an_error() -> None:
    """A retrained model's profile has labels on its holdout only: too few for DLE must
    leave the profile without an estimate, not fail the promotion."""
    rng = np.random.default_rng(3)
    config = DetectorConfig(loss_estimator=True)

    def profile(labelled: int) -> ReferenceProfile:
        x = rng.normal(size=(1000, 2))
        y = x.sum(axis=1) + rng.normal(size=1000) * (0.3 + 0.6 * np.abs(x[:, 0]))
        ref = pd.DataFrame(x, columns=["a", "b"]).assign(prediction=x.sum(axis=1), actual=y)
        ref.loc[: len(ref) - labelled - 1, "prediction"] = np.nan  # only the newest rows labelled
        return ReferenceProfile.from_frame(ref, prediction_column="prediction", actual_column="actual", config=config)

    assert profile(MIN_FIT_ROWS - 1).estimator is None
    assert profile(MIN_FIT_ROWS).estimator["kind"] == "dle"


def _monitor(seed=0, n=20_000):
    rng = np.random.default_rng(seed)
    prof = ReferenceProfile.from_frame(frame(*calibrated(rng, n)), prediction_column="prediction",
                                       actual_column="actual", score_column="score")
    return ModelMonitor(prof, DetectorConfig(), "classification"), rng


def test_harmful_shift_fires_estimated_performance_before_any_label() -> None:
    mon, rng = _monitor()
    x, p, pred, _ = calibrated(rng, 30_000)
    x2, p2, pred2, _ = calibrated(rng, 30_000, spread=2.5 * 0.5)  # crowds the boundary
    dec = mon.update_features(np.r_[x, x2], None, np.r_[pred, pred2], np.r_[p, p2])
    assert all(d.offset >= 30_000 for d in dec)
    first = dec[0]
    assert first.offset - 30_000 < 1500
    assert "estimated_performance_degradation" in first.trigger_types
    assert first.severity in ("HIGH", "CRITICAL")
    assert first.expected_impact["metric"] == "accuracy" and first.expected_impact["change"] < -0.05
    snap = mon.snapshot()
    assert snap["estimated_accuracy"] < snap["reference_estimated_accuracy"] - 0.05


def test_harmless_drift_is_low_and_says_why() -> None:
    mon, rng = _monitor(1)
    x, p, pred, _ = calibrated(rng, 20_000)
    x[10_000:, 2] += 1.5  # a column the model does not use
    dec = mon.update_features(x, None, pred, p)
    assert dec and all(d.severity == "LOW" for d in dec)
    assert all("no harmful expected impact" in d.reason for d in dec)
    # the same drift without scores: the design's rule, as before (not LOW)
    mon2, _ = _monitor(1)
    plain = mon2.update_features(x)
    assert plain and plain[0].expected_impact is None and plain[0].severity != "LOW"


def test_batches_and_restored_state_do_not_change_decisions() -> None:
    mon, rng = _monitor(2)
    x, p, pred, _ = calibrated(rng, 12_000)
    x2, p2, pred2, _ = calibrated(rng, 12_000, spread=1.0)
    x, p, pred = np.r_[x, x2], np.r_[p, p2], np.r_[pred, pred2]
    whole = [(d.offset, d.severity, d.expected_impact) for d in mon.update_features(x, None, pred, p)]
    mon2, _ = _monitor(2)
    parts = []
    for s in range(0, 777 * 17, 777):  # past the first decision
        parts += mon2.update_features(x[s:s + 777], None, pred[s:s + 777], p[s:s + 777])
    mon3 = ModelMonitor.from_state(mon2.profile, mon2.state_to_bytes())
    for s in range(777 * 17, len(x), 1000):
        parts += mon3.update_features(x[s:s + 1000], None, pred[s:s + 1000], p[s:s + 1000])
    assert whole and [(d.offset, d.severity, d.expected_impact) for d in parts] == whole
