"""The model store: versions, atomic promotion, rollback, pruning. No services."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import joblib
import pytest

from retrain.errors import ModelStoreError
from retrain.model_store import ARTIFACT, POINTER, ModelStore


class Constant:
    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, frame):
        return [self.value] * len(frame)


def add(store: ModelStore, tmp_path: Path, value: float, trigger_id: str) -> str:
    artifact = tmp_path / f"artifact-{value}.joblib"
    joblib.dump(Constant(value), artifact)
    version = store.add_version("m", artifact, {"trigger_id": trigger_id})
    store.write_profile("m", version, b"profile")
    return version


def test_versions_promote_and_roll_back(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", keep_versions=5)
    v1 = add(store, tmp_path, 1.0, "t1")
    assert store.current_version("m") is None  # a candidate is not current
    store.promote("m", v1)
    v2 = add(store, tmp_path, 2.0, "t2")
    store.promote("m", v2)
    assert (v1, v2, store.current_version("m")) == ("1", "2", "2")
    assert store.metadata("m", v2)["parent_version"] == "1"
    assert store.load_model("m").value == 2.0
    assert store.rollback("m") == "1" and store.load_model("m").value == 1.0
    assert store.rollback("m", "2") == "2"
    assert store.find_by_trigger("m", "t1")["version"] == "1"
    assert store.reference_profile_path("m", "2") == "m/versions/2/reference_profile.bin"


def test_promotion_swaps_the_pointer_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ModelStore(tmp_path / "store", keep_versions=5)
    store.promote("m", add(store, tmp_path, 1.0, "t1"))
    v2 = add(store, tmp_path, 2.0, "t2")
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: replaced.append(Path(dst).name) or real_replace(src, dst))
    store.promote("m", v2)
    assert replaced[0] == POINTER  # the pointer is written elsewhere, then renamed over

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.promote("m", "1")
    assert store.current_version("m") == "2"  # a failed promotion leaves the old pointer


def test_only_the_newest_versions_are_kept_but_never_the_current_one(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", keep_versions=2)
    store.promote("m", add(store, tmp_path, 1.0, "t1"))
    for value in (2.0, 3.0, 4.0):
        add(store, tmp_path, value, f"t{value}")
    store.prune("m")
    assert store.versions("m") == ["1", "3", "4"]


def test_a_version_without_profile_cannot_be_promoted_and_unknown_versions_fail(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", keep_versions=2)
    artifact = tmp_path / "a.joblib"
    joblib.dump(Constant(1.0), artifact)
    version = store.add_version("m", artifact, {})
    with pytest.raises(ModelStoreError, match="no reference profile"):
        store.promote("m", version)
    with pytest.raises(ModelStoreError, match="no version 9"):
        store.promote("m", "9")
    with pytest.raises(ModelStoreError, match="not a safe folder name"):
        store.versions("../etc")


def test_an_artifact_changed_after_it_was_stored_is_not_unpickled(tmp_path: Path, monkeypatch) -> None:
    store = ModelStore(tmp_path / "store", keep_versions=5)
    version = add(store, tmp_path, 1.0, "t1")
    assert store.load_model("m", version).value == 1.0
    tampered = tmp_path / "other.joblib"
    joblib.dump(Constant(666.0), tampered)
    (store.version_dir("m", version) / ARTIFACT).write_bytes(tampered.read_bytes())
    loads = []
    monkeypatch.setattr(joblib, "load", lambda path: loads.append(path))
    with pytest.raises(ModelStoreError, match="SHA-256 differs"):
        store.load_model("m", version)
    assert loads == [], "the changed artifact was unpickled"


def test_an_artifact_that_is_not_what_the_training_wrote_is_not_stored(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", keep_versions=5)
    artifact = tmp_path / "a.joblib"
    joblib.dump(Constant(1.0), artifact)
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert store.metadata("m", store.add_version("m", artifact, {}, sha256=digest))["artifact_sha256"] == digest
    with pytest.raises(ModelStoreError, match="SHA-256 mismatch"):
        store.add_version("m", artifact, {}, sha256="0" * 64)
    assert store.versions("m") == ["1"]
