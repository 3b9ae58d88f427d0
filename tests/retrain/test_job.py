"""A trigger processed again after a crash reuses the version it produced. No services."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from detectors import DetectorConfig
from retrain.job import RetrainJob
from retrain.model_store import ARTIFACT, FileModelStore
from retrain.outcome import Trigger
from retrain.preparation import clean, records_to_frame, split_at_change
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
    recent = records_to_frame(labelled_records(MODEL, regression_frame(150, seed=4, drifted=True)), FEATURES, "actual")
    cleaned = clean(regression_frame(500, seed=1), recent, feature_columns=FEATURES, target="actual", task="regression")
    _, prepared = split_at_change(cleaned, feature_columns=FEATURES, target="actual", holdout_fraction=0.2,
                                  change_point=None, concept=False, keep_history=True,
                                  old_concept_share=0.0, min_rows=1)
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
