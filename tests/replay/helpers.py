"""Rows, topics and commands of the replay tests: a stream of features and labelled
records with a covariate shift and a change of concept, produced with chosen Kafka
timestamps, and `driftline` as a user runs it."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from bench import harness as h

ROOT = h.ROOT
BACKTEST_FIELDS = ("offset", "source", "trigger_types", "severity", "confidence", "columns", "reason",
                   "root_cause")
# Small windows and a short cooldown: several triggers per model in a few thousand events.
DETECTORS = {"cooldown": 800, "ks_window": 500, "ks_stride": 250}


def rows(n: int, *, shift_at: int, concept_at: int, seed: int) -> pd.DataFrame:
    """The reference's columns (`harness.write_reference`); from `shift_at` f3 moves by
    1.5 sd, from `concept_at` the actual is no longer 2 * f0 (the prediction still is)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, len(h.COLUMNS))), columns=h.COLUMNS)
    frame.loc[shift_at:, "f3"] += 1.5
    frame["prediction"] = frame["f0"] * 2
    actual = frame["f0"] * 2 + rng.normal(scale=0.1, size=n)
    actual[concept_at:] = frame["f0"][concept_at:] * 1.2 + rng.normal(scale=0.3, size=n - concept_at)
    frame["actual"] = actual
    return frame


def feature_message(model: str, i: int, row: pd.Series, version: str = "1") -> bytes:
    return json.dumps({
        "model_id": model, "model_version": version, "event_id": f"{model}-{i}",
        "timestamp": (h.START + dt.timedelta(milliseconds=i)).isoformat(),
        "features": {c: float(row[c]) for c in h.COLUMNS},
    }).encode()


def labelled_message(model: str, i: int, row: pd.Series, version: str = "1") -> bytes:
    at = h.START + dt.timedelta(milliseconds=i)
    return json.dumps({
        "model_id": model, "model_version": version, "event_id": f"{model}-{i}",
        "timestamp": at.isoformat(), "actual_timestamp": (at + dt.timedelta(seconds=5)).isoformat(),
        "prediction": float(row["prediction"]), "actual": float(row["actual"]),
    }).encode()


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[str, bytes, int | None]]) -> int:
    """(key, value, Kafka timestamp in ms or None for now), in order; waits for every ack."""
    return h.produce(bootstrap, topic, messages)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def driftline(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
