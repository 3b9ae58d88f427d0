"""Where a model's reference profile comes from: its configured reference file, or the
promoted version's profile in the model store. Blocking file reads: call through
`asyncio.to_thread` from async code."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from detectors import DetectorConfig, ReferenceProfile
from streams.settings import ModelSettings


class ReferenceUnavailable(Exception):
    """A reference that cannot be read or profiled."""


def read_frame(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".gz"):
        return pd.read_csv(path)
    raise ReferenceUnavailable(f"reference {path}: unknown format (use .csv or .parquet)")


def profile_from_settings(model: ModelSettings, config: DetectorConfig) -> ReferenceProfile:
    frame = read_frame(model.reference_path)
    return ReferenceProfile.from_frame(
        frame,
        feature_columns=model.feature_columns,
        prediction_column=model.prediction_column if model.prediction_column in frame else None,
        actual_column=model.actual_column if model.actual_column in frame else None,
        baseline=model.baseline or None,
        config=config,
    )


def profile_from_store(store_root: Path, relative_path: str) -> ReferenceProfile:
    path = Path(relative_path)
    if not path.is_absolute():
        path = store_root / path
    return ReferenceProfile.from_bytes(path.read_bytes())
