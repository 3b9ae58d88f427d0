"""Where a model's reference profile comes from: its configured reference file, or the
promoted version's profile in the model store. Blocking file reads: call through
`asyncio.to_thread` from async code."""

from __future__ import annotations

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


def profile_from_store(store_root: Path, relative_path: str) -> ReferenceProfile:
    from detectors import ReferenceProfile

    path = store_path(store_root, relative_path)
    try:
        return ReferenceProfile.from_bytes(path.read_bytes())
    except (OSError, DetectorError) as error:
        raise ReferenceUnavailable(f"promoted reference profile {path}: {error}") from error
