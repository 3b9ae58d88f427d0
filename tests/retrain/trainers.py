"""Trainers named in the tests' settings (`module:function`), run by `retrain.train_job`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from retrain import builtin_trainer

MARKER_ENV = "DRIFTLINE_TEST_TRAINING_MARKER"  # a file the gated trainer creates when it starts
RELEASE_ENV = "DRIFTLINE_TEST_TRAINING_RELEASE"  # the gated trainer finishes once this file exists
FAIL_ONCE_ENV = "DRIFTLINE_TEST_TRAINING_FAIL_ONCE"  # if this file exists: removed, and the training fails
PROBE_ENV = "DRIFTLINE_TEST_TRAINING_PROBE"  # where the probing trainer writes what it sees
RELEASE_POLL_SECONDS = 0.02


def failing(frame: pd.DataFrame, target: str):
    raise RuntimeError("trainer exploded on purpose")


def gated(frame: pd.DataFrame, target: str):
    """Marks its start (MARKER_ENV, plus a numbered copy per training), then trains once
    the test releases it: the test decides when a training ends, no sleep guesses it."""
    marker = Path(os.environ[MARKER_ENV])
    marker.touch()
    number = len(list(marker.parent.glob(f"{marker.name}.*"))) + 1
    marker.with_name(f"{marker.name}.{number}").touch()
    release = Path(os.environ[RELEASE_ENV])
    while not release.exists():
        time.sleep(RELEASE_POLL_SECONDS)
    fail_once = os.environ.get(FAIL_ONCE_ENV)
    if fail_once and Path(fail_once).exists():
        Path(fail_once).unlink()
        raise RuntimeError("gated trainer failed on purpose")
    return builtin_trainer.train(frame, target, task="regression", seed=0)


def probe(frame: pd.DataFrame, target: str):
    """Writes its niceness, the thread-pool variables it was started with and the threads
    OpenMP/BLAS actually use (threadpoolctl), then trains."""
    import json

    from threadpoolctl import threadpool_info

    seen = {
        "nice": os.nice(0),
        "env": {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    }
    model = builtin_trainer.train(frame, target, task="regression", seed=0)
    seen["pools"] = sorted({pool["num_threads"] for pool in threadpool_info()})
    Path(os.environ[PROBE_ENV]).write_text(json.dumps(seen))
    return model


def constant(frame: pd.DataFrame, target: str):
    """A challenger far worse than any champion: it predicts one value, whatever the inputs."""
    from sklearn.dummy import DummyRegressor

    return DummyRegressor(strategy="constant", constant=1e3).fit(frame.drop(columns=[target]), frame[target])
