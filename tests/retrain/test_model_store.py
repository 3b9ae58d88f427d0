"""The files backend of the model store: the pointer swap. No services.
The contract both backends keep is test_model_store_contract.py."""

from __future__ import annotations

import os
from pathlib import Path

import joblib
import pytest

from retrain.model_store import POINTER, FileModelStore


class Constant:
    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, frame):
        return [self.value] * len(frame)


def add(store: FileModelStore, tmp_path: Path, value: float, trigger_id: str) -> str:
    artifact = tmp_path / f"artifact-{value}.joblib"
    joblib.dump(Constant(value), artifact)
    version = store.add_version("m", artifact, {"trigger_id": trigger_id})
    store.write_profile("m", version, b"profile")
    return version


def test_promotion_swaps_the_pointer_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileModelStore(tmp_path / "store", keep_versions=5)
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


def test_the_mlflow_store_without_its_extra_is_one_clear_error(monkeypatch, tmp_path) -> None:
    import sys

    import pytest

    from retrain.errors import ModelStoreError
    from retrain.model_store import open_model_store
    from schemas.settings import Settings

    monkeypatch.setitem(sys.modules, "retrain.mlflow_store", None)  # as if mlflow were not installed
    with pytest.raises(ModelStoreError, match=r"pip install 'driftline\[mlflow\]'"):
        open_model_store(Settings(model_store="mlflow", model_store_path=tmp_path))
