"""A model's runtime watches the promotion it re-baselined on: over the first
`watch_rows` labelled events a version worse than the champion it replaced fires one
`promotion_regression` trigger naming that version; a good one fires none; the watch
survives a save and restore. No services."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from detectors import DetectorConfig, ModelMonitor, ReferenceProfile
from schemas.messages import FeatureEvent, LabelledRecord, RetrainOutcome
from streams.decoding import Record
from streams.model_state import ModelRuntime, decode_state, promotion_watch
from streams.triggers import retrain_request

WATCH_ROWS = 200
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    rng = np.random.default_rng(0)
    x = rng.normal(size=2000)
    actual = 2 * x + rng.normal(scale=0.5, size=2000)
    frame = pd.DataFrame({"x": x, "prediction": 2 * x, "actual": actual})
    return ReferenceProfile.from_frame(frame, feature_columns=["x"], prediction_column="prediction",
                                       actual_column="actual")


def promotion(champion_mae: float, champion_rmse: float) -> RetrainOutcome:
    return RetrainOutcome(trigger_id="promo-1", model_id="m", outcome="promoted", previous_version="1",
                          new_version="2", reference_profile="m/versions/2/reference_profile.bin",
                          metrics={"retraining_rmse": 0.4, "champion_mae": champion_mae,
                                   "champion_rmse": champion_rmse, "champion_r2": 0.9},
                          completed_at=NOW)


def labelled(start: int, errors: np.ndarray, version: str = "2") -> list[tuple[Record, LabelledRecord]]:
    """Labelled events whose predictions `version` made."""
    return [(Record("labelled", 0, start + i, b"", None, b"m"),
             LabelledRecord(model_id="m", model_version=version, event_id=f"e{start + i}", timestamp=NOW,
                            prediction=0.0, actual=float(e), actual_timestamp=NOW))
            for i, e in enumerate(errors)]


def promoted_runtime(profile: ReferenceProfile, outcome: RetrainOutcome) -> ModelRuntime:
    config = DetectorConfig()
    runtime = ModelRuntime.fresh("m", "1", ModelMonitor(profile, config, "regression"),
                                 features_topic="features", labelled_topic="labelled")
    watch = promotion_watch(outcome, "regression", WATCH_ROWS, config)
    runtime.rebaseline(profile, outcome.new_version, outcome.trigger_id, outcome.reference_profile, watch)
    return runtime


def regression_firings(firings):
    return [f for f in firings if "promotion_regression" in f.decision.trigger_types]


def test_a_worse_promoted_version_fires_one_regression_naming_it(profile: ReferenceProfile):
    runtime = promoted_runtime(profile, promotion(champion_mae=0.4, champion_rmse=0.5))
    errors = np.full(WATCH_ROWS + 100, 0.6)  # +50 % MAE, +20 % RMSE
    fired, _ = runtime.apply_labelled(labelled(0, errors[:150]))
    assert regression_firings(fired) == []
    restored = ModelRuntime(runtime.state, runtime.monitor, features_topic="features", labelled_topic="labelled")
    restored.reset_to(runtime.to_bytes())  # the watch is saved with the state
    fired, _ = restored.apply_labelled(labelled(150, errors[150:]))
    [firing] = regression_firings(fired)
    assert firing.model_version == "2" and firing.at.offset == WATCH_ROWS - 1
    request = retrain_request(firing)
    assert request.decision.trigger_types == ["promotion_regression"] and request.model_version == "2"
    assert request.metrics["promotion_watch.live.mae"] == pytest.approx(0.6)
    assert request.metrics["promotion_watch.champion.mae"] == pytest.approx(0.4)
    assert restored.watch is None and decode_state(restored.to_bytes()).watch is None  # the watch is over
    fired, _ = restored.apply_labelled(labelled(300, errors[:100]))
    assert regression_firings(fired) == []  # one verdict per promotion


def test_a_good_promoted_version_fires_nothing(profile: ReferenceProfile):
    runtime = promoted_runtime(profile, promotion(champion_mae=0.6, champion_rmse=0.6))
    fired, _ = runtime.apply_labelled(labelled(0, np.full(WATCH_ROWS + 50, 0.6)))
    assert regression_firings(fired) == [] and runtime.watch is None


def test_a_promotion_without_the_champions_figures_is_not_watched(profile: ReferenceProfile):
    by_hand = RetrainOutcome(trigger_id="manual-promote-m-2-x", model_id="m", outcome="promoted",
                             new_version="2", reference_profile="m/versions/2/reference_profile.bin",
                             completed_at=NOW)
    assert promotion_watch(by_hand, "regression", WATCH_ROWS, DetectorConfig()) is None


def test_only_the_promoted_versions_own_predictions_judge_it(profile: ReferenceProfile):
    """Labels come late: the first labelled events after a promotion carry the replaced
    version's predictions (worse, after the change that made the retrain). They must not
    roll back a promoted version that does well on its own."""
    runtime = promoted_runtime(profile, promotion(champion_mae=0.4, champion_rmse=0.5))
    fired, _ = runtime.apply_labelled(labelled(0, np.full(500, 0.9), version="1"))
    assert regression_firings(fired) == [] and runtime.watch is not None  # not counted
    fired, _ = runtime.apply_labelled(labelled(500, np.full(WATCH_ROWS, 0.35)))
    assert regression_firings(fired) == [] and runtime.watch is None  # judged on its own: fine


def test_a_replaced_versions_late_labels_are_no_evidence_against_the_serving_one(profile: ReferenceProfile):
    """After a change the replaced version errs more, and its labels keep coming for as
    long as labels are late: fed to the serving version's concept tests they would pass
    for a change of its concept (a retrain for nothing). Its own labels are judged."""
    runtime = promoted_runtime(profile, promotion(champion_mae=5.0, champion_rmse=5.0))
    rng = np.random.default_rng(1)
    fired, _ = runtime.apply_labelled(labelled(0, rng.normal(scale=0.5, size=1000)))
    assert fired == []
    seen = runtime.monitor.labelled_seen
    fired, _ = runtime.apply_labelled(labelled(1000, np.full(2000, 3.0), version="1"))
    assert fired == [] and runtime.monitor.labelled_seen == seen
    fired, _ = runtime.apply_labelled(labelled(3000, np.full(2000, 3.0)))
    concept = [f for f in fired if "concept_drift" in f.decision.trigger_types]
    assert concept and concept[0].at.offset >= 3000 and concept[0].model_version == "2"


def test_a_version_rolled_back_to_is_judged_again(profile: ReferenceProfile):
    runtime = promoted_runtime(profile, promotion(champion_mae=0.4, champion_rmse=0.5))
    assert runtime.state.replaced_versions == ["1"]
    runtime.rebaseline(profile, "1", "rollback-1", "m/versions/1/reference_profile.bin")
    assert runtime.state.replaced_versions == ["2"]
    assert decode_state(runtime.to_bytes()).replaced_versions == ["2"]
    seen = runtime.monitor.labelled_seen
    runtime.apply_labelled(labelled(0, np.full(10, 0.3), version="1") + labelled(10, np.full(10, 0.3), version="7"))
    assert runtime.monitor.labelled_seen == seen + 20  # the serving version's, and one driftline never replaced


def test_the_services_name_for_the_first_version_is_replaced_too(profile: ReferenceProfile):
    """The monitor starts on the configured reference ("configured"), while the service
    names the version it serves "1": on a promotion both are replaced."""
    config = DetectorConfig()
    runtime = ModelRuntime.fresh("m", "configured", ModelMonitor(profile, config, "regression"),
                                 features_topic="features", labelled_topic="labelled")
    served = [(Record("features", 0, i, b"", None, b"m"),
               FeatureEvent(model_id="m", model_version="1", event_id=f"f{i}", timestamp=NOW, features={"x": 0.1}))
              for i in range(10)]
    runtime.apply_features(served)
    runtime.rebaseline(profile, "2", "promo-1", "m/versions/2/reference_profile.bin")
    assert runtime.state.replaced_versions == ["configured", "1"]
    seen = runtime.monitor.labelled_seen
    runtime.apply_labelled(labelled(0, np.full(10, 3.0), version="1"))
    assert runtime.monitor.labelled_seen == seen
