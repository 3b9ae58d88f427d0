"""Reading and writing data tables (CSV or Parquet, chosen by the file suffix)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from retrain.errors import DataPreparationError

PARQUET_SUFFIXES = (".parquet", ".pq")


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataPreparationError(f"data file {path} does not exist")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return pd.read_parquet(path)
    return pd.read_csv(path)


def write_table(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix.lower() in PARQUET_SUFFIXES:
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
