"""Kafka records in, validated messages and numpy columns out, bad records set aside.

Decoding is msgspec's (C, one pass, validating); the per-column conversion to numpy is
one list comprehension and one `np.array` per column per model, so the Python work per
event is a few attribute reads, not a loop over its fields.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import msgspec
import numpy as np

from schemas.messages import DeadLetter, SchemaError, decode

M = TypeVar("M", bound=msgspec.Struct)


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record, as the agents hand it over."""

    topic: str
    partition: int
    offset: int
    value: bytes


@dataclass(slots=True)
class Decoded(Generic[M]):
    valid: list[tuple[Record, M]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)

    def reject(self, record: Record, error: SchemaError) -> None:
        self.dead.append(
            DeadLetter.for_failure(
                error,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                original=record.value,
            )
        )


def decode_records(message_type: type[M], records: Iterable[Record]) -> Decoded[M]:
    out: Decoded[M] = Decoded()
    for record in records:
        try:
            out.valid.append((record, decode(message_type, record.value)))
        except SchemaError as error:
            out.reject(record, error)
    return out


def numeric_matrix(
    rows: Sequence[dict[str, object]], columns: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(n, len(columns)) float64 with NaN for missing values, and a boolean mask of the
    rows holding a string where the column is numeric (those rows are not usable)."""
    matrix = np.empty((len(rows), len(columns)), dtype=np.float64)
    bad = np.zeros(len(rows), dtype=bool)
    for j, name in enumerate(columns):
        values = [row.get(name) for row in rows]
        if str in set(map(type, values)):
            is_text = np.fromiter((type(v) is str for v in values), dtype=bool, count=len(values))
            bad |= is_text
            values = [None if text else v for v, text in zip(values, is_text)]
        # None becomes NaN: missing values are counted by the detectors, not guessed.
        matrix[:, j] = np.array(values, dtype=np.float64)
    return matrix, bad


def categorical_columns(
    rows: Sequence[dict[str, object]], columns: Sequence[str]
) -> dict[str, np.ndarray]:
    return {
        name: np.array([None if (v := row.get(name)) is None else str(v) for row in rows], dtype=object)
        for name in columns
    }


def label_values(labels: Sequence[object]) -> np.ndarray:
    """Regression targets as floats; class labels that are strings become stable numeric
    codes (CRC-32), so equality, all that accuracy needs, is preserved."""
    if str not in set(map(type, labels)):
        return np.array(labels, dtype=np.float64)
    return np.array(
        [float(zlib.crc32(v.encode())) if isinstance(v, str) else v for v in labels],
        dtype=np.float64,
    )
