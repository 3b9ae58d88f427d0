"""Table I/O for every part: the tables and arrays the batch commands take, the training
data the retrainer reads and writes, with one clear error per problem.

CSV and Parquet are told apart by extension (`.parquet`, `.pq`; anything else is CSV).
Every failure is a `TableError` (a `UsageError`) naming the file and what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from schemas.errors import TableError

PARQUET_SUFFIXES = {".parquet", ".pq"}


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise TableError(f"{path}: no such file")
    if not path.is_file():
        raise TableError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise TableError(f"{path}: the file is empty")
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV or Parquet file as a frame with at least one row and one column."""
    path = _existing(path)
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path)
    except PermissionError:
        raise TableError(f"{path}: permission denied") from None
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        kind = "Parquet" if path.suffix.lower() in PARQUET_SUFFIXES else "CSV"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TableError(f"{path}: not a readable {kind} file ({first_line})") from None
    if frame.empty:
        raise TableError(f"{path}: no data rows")
    return frame


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def read_array(path: str | Path) -> np.ndarray:
    """A one-dimensional `.npy` array (predictions or actuals)."""
    path = _existing(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise TableError(f"{path}: not a readable .npy array ({exc})") from None
    if array.ndim != 1 or array.size == 0:
        raise TableError(f"{path}: expected a non-empty one-dimensional array, got shape {array.shape}")
    return array


def require_same_columns(
    reference: pd.DataFrame, reference_path: str | Path, other: pd.DataFrame, other_path: str | Path,
    columns: list[str],
) -> None:
    """Each of `columns` must be in both frames."""
    for column in columns:
        for frame, here, there in ((reference, reference_path, other_path), (other, other_path, reference_path)):
            if column not in frame.columns:
                raise TableError(f"{here}: column {column!r} is in {there} but not in {here}")
