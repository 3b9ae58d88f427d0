"""Where a model's reference profile comes from: its configured reference file, or the
promoted version's profile in the model store (a path in the files store, or the
retrain's run artifact `runs:/<run_id>/reference_profile.bin` in MLflow). Blocking
reads: call through `asyncio.to_thread` from async code."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from detectors.errors import DetectorError
from schemas.errors import UsageError

if TYPE_CHECKING:  # the statistics load when a reference is read
    from detectors import DetectorConfig, ReferenceProfile
    from schemas.settings import ModelSettings


class ReferenceUnavailable(Exception):
    """A reference that cannot be read or profiled."""


def profile_from_settings(model: ModelSettings, config: DetectorConfig) -> ReferenceProfile:
    from detectors import ReferenceProfile
    from schemas.tables import read_table

    try:
        frame = read_table(model.reference_path)
        return ReferenceProfile.from_frame(
            frame,
            feature_columns=model.feature_columns,
            prediction_column=model.prediction_column if model.prediction_column in frame else None,
            actual_column=model.actual_column if model.actual_column in frame else None,
            baseline=model.baseline or None,
            config=config,
            score_column=model.score_column,
        )
    except (UsageError, DetectorError) as error:
        raise ReferenceUnavailable(f"reference {model.reference_path}: {error}") from error


def store_path(store_root: Path, relative_path: str) -> Path:
    """The file inside the model store that a `retrain-events` message names. The path
    comes from a topic, so it is confined to the store: absolute paths and paths that
    leave it (`..`, symbolic links) are refused."""
    root = store_root.resolve()
    path = (root / relative_path).resolve()
    if Path(relative_path).is_absolute() or not path.is_relative_to(root):
        raise ReferenceUnavailable(f"promoted reference profile {relative_path!r} is outside the model store")
    return path


# The only MLflow artifacts a promotion may name: a retrain run's profile.
MLFLOW_PROFILE = re.compile(r"^runs:/[0-9a-f]{32}/reference_profile\.bin$")


def profile_from_store(store_root: Path, reference: str, *, tracking_uri: str | None = None) -> ReferenceProfile:
    """The profile a promotion names, from either backend of the model store (`tracking_uri`:
    the MLflow backend's, for a runs:/ reference)."""
    from detectors import ReferenceProfile

    where = reference
    try:
        if reference.startswith("runs:/"):
            data = _mlflow_artifact(tracking_uri, reference)
        else:
            path = store_path(store_root, reference)
            where = str(path)
            data = path.read_bytes()
        return ReferenceProfile.from_bytes(data)
    except (OSError, DetectorError) as error:
        raise ReferenceUnavailable(f"promoted reference profile {where}: {error}") from error


def _mlflow_artifact(tracking_uri: str | None, uri: str) -> bytes:
    if not MLFLOW_PROFILE.match(uri):
        raise ReferenceUnavailable(f"promoted reference profile {uri!r} is not a retrain run's profile")
    if tracking_uri is None:
        raise ReferenceUnavailable(f"promoted reference profile {uri} is in MLflow, and no tracking URI is given")
    try:
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException
    except ImportError as error:
        raise ReferenceUnavailable(f"{uri} is in MLflow: install driftline[mlflow]") from error
    folder = tempfile.mkdtemp(prefix="driftline-profile-")
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder,
                                                        tracking_uri=tracking_uri)).read_bytes()
    except MlflowException as error:
        raise ReferenceUnavailable(f"promoted reference profile {uri}: {error}") from error
    finally:
        shutil.rmtree(folder, ignore_errors=True)
