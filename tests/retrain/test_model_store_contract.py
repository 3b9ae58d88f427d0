"""The model store's contract, the same tests on both backends: the files store, and
MLflow's registry on a real local MLflow (a sqlite:/// store and artifacts in a tmp
folder, no server). Atomic promotion, idempotent redelivery, the digest check, rollback
(by hand, and the retrainer's on a promotion_regression trigger)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import joblib
import pytest

from detectors import DetectorConfig
from retrain.errors import ModelStoreError
from retrain.job import RetrainJob
from retrain.model_store import ARTIFACT, FileModelStore, ModelStore, open_model_store
from retrain.outcome import Trigger
from retrain.preparation import PreparedData, clean, records_to_frame, split_at_change
from retrain.rollback import roll_back
from schemas.settings import MlflowSettings, ModelSettings, RetrainSettings, Settings
from tests.retrain.conftest import MODEL
from tests.retrain.synthetic import labelled_records, regression_frame

FEATURES = ["x1", "x2"]


class Constant:
    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, frame):
        return [self.value] * len(frame)


def _files(tmp_path: Path) -> tuple[ModelStore, Callable[[str, bytes], None]]:
    store = open_model_store(Settings(model_store_path=tmp_path / "store"))

    def tamper(version: str, data: bytes) -> None:
        (store.version_dir(MODEL, version) / ARTIFACT).write_bytes(data)

    return store, tamper


def _mlflow(tmp_path: Path) -> tuple[ModelStore, Callable[[str, bytes], None]]:
    settings = Settings(model_store="mlflow", mlflow=MlflowSettings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"))
    store = open_model_store(settings)

    def tamper(version: str, data: bytes) -> None:
        run_id = store.metadata(MODEL, version)["run_id"]
        [path] = (tmp_path / "mlflow-artifacts").glob(f"**/{run_id}/artifacts/model/{ARTIFACT}")
        path.write_bytes(data)

    return store, tamper


@pytest.fixture(params=["files", "mlflow"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ModelStore, Callable[[str, bytes], None]]:
    return {"files": _files, "mlflow": _mlflow}[request.param](tmp_path)


@pytest.fixture
def store(backend) -> ModelStore:
    return backend[0]


def add(store: ModelStore, tmp_path: Path, value: float, trigger_id: str, *, profile: bool = True) -> str:
    artifact = tmp_path / f"artifact-{value}.joblib"
    joblib.dump(Constant(value), artifact)
    version = store.add_version(MODEL, artifact, {"trigger_id": trigger_id, "data_counts": {"training_rows": 3}})
    if profile:
        store.write_profile(MODEL, version, b"profile")
    return version


def test_versions_promote_and_roll_back(store: ModelStore, tmp_path: Path) -> None:
    v1 = add(store, tmp_path, 1.0, "t1")
    assert store.current_version(MODEL) is None  # a candidate is not current
    store.promote(MODEL, v1)
    v2 = add(store, tmp_path, 2.0, "t2")
    assert store.current_version(MODEL) == "1"
    store.promote(MODEL, v2)
    assert (v1, v2, store.current_version(MODEL), store.versions(MODEL)) == ("1", "2", "2", ["1", "2"])
    assert store.models() == [MODEL]
    metadata = store.metadata(MODEL, v2)
    assert (metadata["parent_version"], metadata["version"], metadata["data_counts"]) == ("1", "2", {"training_rows": 3})
    assert "promoted_at" in metadata
    assert store.load_model(MODEL).value == 2.0
    assert store.rollback(MODEL) == "1" and store.load_model(MODEL).value == 1.0
    assert store.current_version(MODEL) == "1"
    assert store.rollback(MODEL, "2") == "2" and store.current_version(MODEL) == "2"
    assert store.reference_profile_path(MODEL, "2") != store.reference_profile_path(MODEL, "1")


def test_only_the_newest_versions_are_kept_but_never_the_current_one(store: ModelStore, tmp_path: Path) -> None:
    store.keep_versions = 2
    store.promote(MODEL, add(store, tmp_path, 1.0, "t1"))
    for value in (2.0, 3.0, 4.0):
        add(store, tmp_path, value, f"t{value}")
    assert store.prune(MODEL) == ["2"]
    assert store.versions(MODEL) == ["1", "3", "4"]
    assert store.find_by_trigger(MODEL, "t2.0") is None and store.load_model(MODEL).value == 1.0


def test_metadata_fields_are_added_and_kept(store: ModelStore, tmp_path: Path) -> None:
    version = add(store, tmp_path, 1.0, "t1")
    validation = {"new": {"rmse": 0.5}, "current": {"rmse": 0.7}, "improvements": {}, "reason": "better"}
    store.update_metadata(MODEL, version, decision="promoted", validation=validation)
    metadata = store.metadata(MODEL, version)
    assert (metadata["decision"], metadata["validation"], metadata["trigger_id"]) == ("promoted", validation, "t1")


def test_a_redelivered_trigger_finds_its_version(store: ModelStore, tmp_path: Path) -> None:
    add(store, tmp_path, 1.0, "t1")
    add(store, tmp_path, 2.0, "it's-t2")
    assert store.find_by_trigger(MODEL, "t1")["version"] == "1"
    assert store.find_by_trigger(MODEL, "it's-t2")["version"] == "2"
    assert store.find_by_trigger(MODEL, "t3") is None
    assert store.find_by_trigger("other", "t1") is None


def prepared_data() -> PreparedData:
    recent = records_to_frame(labelled_records(MODEL, regression_frame(150, seed=4, drifted=True)), FEATURES, "actual")
    cleaned = clean(regression_frame(500, seed=1), recent, feature_columns=FEATURES, target="actual", task="regression")
    _, prepared = split_at_change(cleaned, feature_columns=FEATURES, target="actual", holdout_fraction=0.2,
                                  change_point=None, concept=False, keep_history=True,
                                  old_concept_share=0.0, min_rows=1)
    return prepared


def handled_again(store: ModelStore, trigger: Trigger, training_csv: Path):
    """The outcome of `trigger` handled by a retrain job whose trainer would fail if run:
    the version the trigger stored before is reused."""
    model = ModelSettings(reference_path=training_csv, trainer="tests.retrain.trainers:failing")
    job = RetrainJob(trigger, model, RetrainSettings(promotion_margin=0.5), store, prepared_data(), DetectorConfig())
    job.start()
    return job.wait(poll_seconds=0.01)


def trigger(trigger_id: str, version: str, *types: str) -> Trigger:
    return Trigger(trigger_id, MODEL, version, list(types), "HIGH", "worse", {}, dt.datetime.now(dt.timezone.utc))


def test_a_crashed_retrain_redelivered_registers_once_and_promotes_once(
    store: ModelStore, tmp_path: Path, training_csv: Path
) -> None:
    store.promote(MODEL, add(store, tmp_path, 0.0, "init"))
    # The crash: version 2 was stored for the trigger, then the retrainer died.
    add(store, tmp_path, 0.0, "t-crash", profile=False)
    # and once more, as after a second crash before the commit
    outcomes = [handled_again(store, trigger("t-crash", "1", "data_drift"), training_csv) for _ in range(2)]
    assert [(o.outcome, o.previous_version, o.new_version) for o in outcomes] == [("promoted", "1", "2")] * 2
    assert store.versions(MODEL) == ["1", "2"] and store.current_version(MODEL) == "2"
    assert store.metadata(MODEL, "2")["decision"] == "promoted"


def test_promotion_is_one_step_and_a_failed_one_leaves_the_current_version(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.promote(MODEL, add(store, tmp_path, 1.0, "t1"))
    v2 = add(store, tmp_path, 2.0, "t2")
    without_profile = add(store, tmp_path, 3.0, "t3", profile=False)
    with pytest.raises(ModelStoreError, match="no reference profile"):
        store.promote(MODEL, without_profile)
    with pytest.raises(ModelStoreError, match="no version 9"):
        store.promote(MODEL, "9")

    def crash(*args, **kwargs):
        raise OSError("the switch failed")

    if isinstance(store, FileModelStore):  # the pointer is written elsewhere, then renamed over
        monkeypatch.setattr(os, "replace", crash)
    else:  # the alias moves in one registry update
        monkeypatch.setattr(store.client, "set_registered_model_alias", crash)
    with pytest.raises(OSError):
        store.promote(MODEL, v2)
    monkeypatch.undo()
    assert store.current_version(MODEL) == "1" and store.load_model(MODEL).value == 1.0
    store.promote(MODEL, v2)
    assert store.current_version(MODEL) == "2"


def test_an_artifact_changed_after_it_was_stored_is_not_unpickled(
    backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, tamper = backend
    version = add(store, tmp_path, 1.0, "t1")
    assert store.load_model(MODEL, version).value == 1.0
    tampered = tmp_path / "other.joblib"
    joblib.dump(Constant(666.0), tampered)
    tamper(version, tampered.read_bytes())
    loads = []
    monkeypatch.setattr(joblib, "load", lambda path: loads.append(path))
    with pytest.raises(ModelStoreError, match="SHA-256 differs"):
        store.load_model(MODEL, version)
    assert loads == [], "the changed artifact was unpickled"


def test_an_artifact_that_is_not_what_the_training_wrote_is_not_stored(store: ModelStore, tmp_path: Path) -> None:
    artifact = tmp_path / "a.joblib"
    joblib.dump(Constant(1.0), artifact)
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert store.metadata(MODEL, store.add_version(MODEL, artifact, {}, sha256=digest))["artifact_sha256"] == digest
    with pytest.raises(ModelStoreError, match="SHA-256 mismatch"):
        store.add_version(MODEL, artifact, {}, sha256="0" * 64)
    assert store.versions(MODEL) == ["1"]


def test_a_model_id_that_is_not_a_safe_name_is_refused(store: ModelStore) -> None:
    with pytest.raises(ModelStoreError, match="not a safe"):
        store.versions("../etc")


def test_a_regression_rolls_back_once_and_the_version_is_never_promoted_again_by_its_trigger(
    store: ModelStore, tmp_path: Path, training_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.promote(MODEL, add(store, tmp_path, 0.0, "init"))
    promoted = add(store, tmp_path, 0.0, "t-promote")
    store.update_metadata(MODEL, promoted, decision="promoted", validation={
        "new": {"rmse": 1.0}, "current": {"rmse": 1.1}, "improvements": {}, "reason": "promoted: better"})
    store.promote(MODEL, promoted)
    running = add(store, tmp_path, 0.0, "t-running")  # a retrain that began under the bad version
    regression = trigger("r-1", promoted, "promotion_regression")

    assert roll_back(store, regression, enabled=False).outcome == "skipped"
    assert store.current_version(MODEL) == promoted

    def crash(*args):
        raise OSError("the retrainer died")

    monkeypatch.setattr(store, "promote", crash)
    with pytest.raises(OSError):  # a crash after the version was marked, before the switch
        roll_back(store, regression, enabled=True)
    monkeypatch.undo()
    records = [roll_back(store, regression, enabled=True) for _ in range(2)]  # redelivered: the same outcome
    assert [(r.outcome, r.previous_version, r.new_version) for r in records] == [("rolled_back", promoted, "1")] * 2
    assert records[0].reference_profile == store.reference_profile_path(MODEL, "1")
    assert store.current_version(MODEL) == "1"
    metadata = store.metadata(MODEL, promoted)
    assert (metadata["decision"], metadata["rolled_back_by"]) == ("rolled_back", "r-1")

    later = roll_back(store, trigger("r-2", promoted, "promotion_regression"), enabled=True)
    assert later.outcome == "skipped" and "no longer current" in later.reason
    again = handled_again(store, trigger("t-promote", "1", "data_drift"), training_csv)
    assert again.outcome == "skipped" and "rolled back by r-1" in again.reason
    assert store.current_version(MODEL) == "1" and store.versions(MODEL) == ["1", promoted, running]

    store.promote(MODEL, running)  # its retrain ends after the rollback; then it regresses too
    assert store.metadata(MODEL, running)["parent_version"] == promoted
    past = roll_back(store, trigger("r-3", running, "promotion_regression"), enabled=True)
    assert (past.outcome, past.new_version) == ("rolled_back", "1")  # never back to a rolled-back version
