"""A trigger processed again after a crash reuses the version it produced. No services."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from detectors import DetectorConfig, ReferenceProfile
from retrain.job import RetrainJob, reference_profile
from retrain.model_store import ARTIFACT, PROFILE, FileModelStore
from retrain.outcome import Trigger
from retrain.preparation import PreparedData, clean, records_to_frame, split_at_change
from schemas.settings import ModelSettings, RetrainSettings
from tests.retrain.conftest import MODEL
from tests.retrain.synthetic import labelled_records, regression_frame

FEATURES = ["x1", "x2"]


def test_a_stored_undecided_version_is_validated_not_retrained_and_promoted_once(
    store_template: Path, training_csv: Path, tmp_path: Path
) -> None:
    store = FileModelStore(tmp_path / "store", keep_versions=5)
    shutil.copytree(store_template, store.root)
    # The crash: version 2 was stored for the trigger, then the retrainer died.
    store.add_version(MODEL, store.version_dir(MODEL, "1") / ARTIFACT, {"trigger_id": "t-crash"})
    prepared = _prepared()
    trigger = Trigger("t-crash", MODEL, "1", ["data_drift"], "HIGH", "drift", {}, dt.datetime.now(dt.timezone.utc))
    model = ModelSettings(reference_path=training_csv, trainer="tests.retrain.trainers:failing")  # would fail if run

    outcomes = []
    for _ in range(2):  # and once more, as after a second crash before the commit
        job = RetrainJob(trigger, model, RetrainSettings(), store, prepared, DetectorConfig())
        job.start()
        outcomes.append(job.wait(poll_seconds=0.01))

    assert [(o.outcome, o.previous_version, o.new_version) for o in outcomes] == [("promoted", "1", "2")] * 2
    assert store.versions(MODEL) == ["1", "2"] and store.current_version(MODEL) == "2"
    assert store.metadata(MODEL, "2")["decision"] == "promoted"


def _prepared():
    recent = records_to_frame(labelled_records(MODEL, regression_frame(150, seed=4, drifted=True)), FEATURES, "actual")
    cleaned = clean(regression_frame(500, seed=1), recent, feature_columns=FEATURES, target="actual", task="regression")
    return split_at_change(cleaned, feature_columns=FEATURES, target="actual", holdout_fraction=0.2,
                           change_point=None, concept=False, keep_history=True,
                           old_concept_share=0.0, min_rows=1)[1]


def _run(store: FileModelStore, model: ModelSettings, retrain: RetrainSettings, trigger_id: str):
    trigger = Trigger(trigger_id, MODEL, "1", ["data_drift"], "HIGH", "drift", {}, dt.datetime.now(dt.timezone.utc))
    job = RetrainJob(trigger, model, retrain, store, _prepared(), DetectorConfig())
    job.start()
    return job.wait(poll_seconds=0.01)


def _constant_challengers(store_template: Path, training_csv: Path, tmp_path: Path, keep_versions: int):
    """A store whose version 1 serves, and a model whose retrains predict a constant."""
    store = FileModelStore(tmp_path / "store", keep_versions=keep_versions)
    shutil.copytree(store_template, store.root)
    return store, ModelSettings(reference_path=training_csv, trainer="tests.retrain.trainers:constant")


def test_a_worse_challenger_is_rejected_and_the_champion_still_serves(
    store_template: Path, training_csv: Path, tmp_path: Path
) -> None:
    store, model = _constant_challengers(store_template, training_csv, tmp_path, keep_versions=5)
    outcome = _run(store, model, RetrainSettings(), "t-worse")
    assert (outcome.outcome, outcome.previous_version, outcome.new_version) == ("rejected", "1", "2")
    assert outcome.reason.startswith("rejected: rmse")
    assert outcome.new_metrics["rmse"] > 10 * outcome.current_metrics["rmse"]
    assert store.current_version(MODEL) == "1" and store.metadata(MODEL, "2")["decision"] == "rejected"


def test_a_champion_that_cannot_score_fails_the_retrain_unless_promotion_over_it_is_set(
    store_template: Path, training_csv: Path, tmp_path: Path
) -> None:
    import joblib
    from sklearn.linear_model import LinearRegression

    store = FileModelStore(tmp_path / "store", keep_versions=5)
    shutil.copytree(store_template, store.root)
    other_columns = tmp_path / "other.joblib"  # a champion trained on columns the data lacks
    joblib.dump(LinearRegression().fit(pd.DataFrame({"z": [0.0, 1.0]}), [0.0, 1.0]), other_columns)
    version = store.add_version(MODEL, other_columns, {"trigger_id": "manual"})
    shutil.copy(store.version_dir(MODEL, "1") / PROFILE, store.version_dir(MODEL, version) / PROFILE)
    store.promote(MODEL, version)
    model = ModelSettings(reference_path=training_csv)

    failed = _run(store, model, RetrainSettings(), "t-broken")
    assert (failed.outcome, failed.previous_version, failed.new_version) == ("failed", "2", "3")
    assert "current version 2 cannot score the holdout" in failed.reason
    assert "promote_over_unscorable_model" in failed.reason
    assert store.current_version(MODEL) == "2" and store.metadata(MODEL, "3")["decision"] == "failed"

    promoted = _run(store, model, RetrainSettings(promote_over_unscorable_model=True), "t-over")
    assert (promoted.outcome, promoted.previous_version, promoted.new_version) == ("promoted", "2", "4")
    assert store.current_version(MODEL) == "4"


def test_rejected_versions_are_pruned_after_every_decision(
    store_template: Path, training_csv: Path, tmp_path: Path
) -> None:
    store, model = _constant_challengers(store_template, training_csv, tmp_path, keep_versions=2)
    for k in range(4):
        assert _run(store, model, RetrainSettings(), f"t-worse-{k}").outcome == "rejected"
    assert store.versions(MODEL) == ["1", "4", "5"]  # the two newest, and the current one
    assert store.current_version(MODEL) == "1"


def test_a_promoted_classifier_with_a_score_column_keeps_its_accuracy_estimated_before_labels(tmp_path: Path) -> None:
    """The promoted profile carries the new model's holdout probabilities, so CBPE goes on
    after a promotion; without a score_column the profile has no estimator, as before."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 2))
    frame = pd.DataFrame(x, columns=FEATURES).assign(actual=(rng.random(3000) < 1 / (1 + np.exp(-2 * x[:, 0]))) * 1)
    prepared = PreparedData(frame.iloc[:2000], frame.iloc[2000:].reset_index(drop=True), FEATURES, "actual")
    fitted = LogisticRegression().fit(prepared.train[FEATURES], prepared.train["actual"])
    predictions = fitted.predict(prepared.holdout_features)
    accuracy = float(np.mean(predictions == prepared.holdout["actual"]))

    def profile(score_column: str | None) -> ReferenceProfile:
        model = ModelSettings(reference_path=tmp_path / "unused.csv", task="classification", score_column=score_column)
        return ReferenceProfile.from_bytes(
            reference_profile(prepared, model, DetectorConfig(), fitted, predictions, {"accuracy": accuracy}))

    estimator = profile("score").estimator
    assert estimator["kind"] == "cbpe"
    assert abs(estimator["reference_estimate"] - accuracy) < 0.03
    assert profile(None).estimator is None
