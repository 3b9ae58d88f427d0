"""Trainers named in the tests' settings (`module:function`), run by `retrain.train_job`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from retrain import builtin_trainer

MARKER_ENV = "DRIFTLINE_TEST_TRAINING_MARKER"  # a file the slow trainer creates when it starts
SECONDS_ENV = "DRIFTLINE_TEST_TRAINING_SECONDS"


def failing(frame: pd.DataFrame, target: str):
    raise RuntimeError("trainer exploded on purpose")


def slow(frame: pd.DataFrame, target: str):
    Path(os.environ[MARKER_ENV]).touch()
    time.sleep(float(os.environ[SECONDS_ENV]))
    return builtin_trainer.train(frame, target, task="regression", seed=0)
