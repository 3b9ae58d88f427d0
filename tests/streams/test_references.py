"""A reference profile named by a `retrain-events` message is read only from the model store:
a path inside the files store, or a retrain run's profile in MLflow (a real local MLflow)."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from detectors import ReferenceProfile
from retrain.model_store import open_model_store
from schemas.settings import MlflowSettings, Settings
from streams.references import ReferenceUnavailable, profile_from_store, store_path


def test_a_path_inside_the_store_is_read(tmp_path: Path):
    assert store_path(tmp_path, "m1/3/reference.profile") == (tmp_path / "m1/3/reference.profile").resolve()


@pytest.mark.parametrize("named", ["/etc/passwd", "../outside.profile", "m1/../../outside.profile", "link/x"])
def test_a_path_leaving_the_store_is_refused(tmp_path: Path, named: str):
    store = tmp_path / "store"
    store.mkdir()
    (store / "link").symlink_to(tmp_path)
    with pytest.raises(ReferenceUnavailable, match="outside the model store"):
        store_path(store, named)


def test_a_profile_in_mlflow_is_read_and_only_a_run_profile_is(tmp_path: Path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    store = open_model_store(Settings(model_store="mlflow", mlflow=MlflowSettings(tracking_uri=uri)))
    frame = pd.DataFrame({"x": np.random.default_rng(0).normal(size=300)})
    profile = ReferenceProfile.from_frame(frame, feature_columns=["x"])
    joblib.dump(0, tmp_path / "model.joblib")
    version = store.add_version("m", tmp_path / "model.joblib", {"trigger_id": "t"})
    store.write_profile("m", version, profile.to_bytes())
    reference = store.reference_profile_path("m", version)
    assert reference.startswith("runs:/")
    read = profile_from_store(tmp_path / "unused", reference, tracking_uri=uri)
    assert read.fingerprint == profile.fingerprint
    run_id = reference.split("/")[1]
    for named in (f"runs:/{run_id}/model/model.joblib", f"runs:/{run_id}/../reference_profile.bin"):
        with pytest.raises(ReferenceUnavailable, match="not a retrain run's profile"):
            profile_from_store(tmp_path, named, tracking_uri=uri)
    with pytest.raises(ReferenceUnavailable, match="promoted reference profile"):
        profile_from_store(tmp_path, f"runs:/{'0' * 32}/reference_profile.bin", tracking_uri=uri)
