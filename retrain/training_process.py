"""Runs one training in its own process, with a timeout, without blocking the caller.

The argument list comes only from configuration: the built-in or named Python trainer
through `retrain.train_job`, or the model's `train_command` with its placeholders
replaced by this run's own file paths. Nothing from a message reaches it, and it is
never run through a shell.

It runs under `retrain.launch`, at a lower scheduling priority (`trainer_nice`) and with
the OpenMP/BLAS thread pools limited to `trainer_threads`, so that a training does not
starve the monitor on the same cores; the launcher writes the artifact's SHA-256, which
the model store checks before the retrainer ever unpickles it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from retrain.launch import digest_path
from schemas.logs import redact_text
from schemas.settings import ModelSettings

FAILURE_DETAIL_CHARS = 500  # of the trainer's output kept as the failure reason
# The thread-pool sizes of OpenMP (scikit-learn's gradient boosting), OpenBLAS, MKL,
# numexpr and Apple's Accelerate, set for the training from `trainer_threads`.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


@dataclass(frozen=True)
class TrainingFiles:
    """The files of one training run, inside its own scratch folder."""

    folder: Path
    data_format: str

    @property
    def data(self) -> Path:
        return self.folder / f"train.{self.data_format}"

    @property
    def output(self) -> Path:
        return self.folder / "model.joblib"

    @property
    def log(self) -> Path:
        return self.folder / "trainer.log"

    @property
    def digest(self) -> Path:
        """The artifact's SHA-256 (hex), written by the launcher once the trainer succeeded."""
        return digest_path(self.output)

    def artifact_sha256(self) -> str | None:
        return self.digest.read_text().strip() if self.digest.is_file() else None


@dataclass(frozen=True)
class TrainingResult:
    ok: bool
    seconds: float
    reason: str = ""


def training_argv(model: ModelSettings, files: TrainingFiles, seed: int) -> list[str]:
    if model.train_command:
        placeholders = {
            "{data}": str(files.data),
            "{output}": str(files.output),
            "{target}": model.actual_column,
            "{task}": model.task,
        }
        argv = []
        for argument in model.train_command:
            for placeholder, value in placeholders.items():
                argument = argument.replace(placeholder, value)
            argv.append(argument)
        return argv
    argv = [sys.executable, "-m", "retrain.train_job", "--data", str(files.data), "--output", str(files.output)]
    argv += ["--target", model.actual_column, "--task", model.task, "--seed", str(seed)]
    if model.trainer:
        argv += ["--trainer", model.trainer]
    return argv


def launch_argv(argv: list[str], files: TrainingFiles, nice: int) -> list[str]:
    """`argv` under `retrain.launch`: niceness, the artifact's digest, orphan check."""
    return [sys.executable, "-m", "retrain.launch", "--nice", str(nice), "--output", str(files.output), "--", *argv]


def training_env(threads: int) -> dict[str, str]:
    return {**os.environ, **{name: str(threads) for name in THREAD_VARIABLES}}


class FinishedTraining:
    """A training whose artifact (and digest) is already in its files: a fit reused
    from `retrain.job.FittedModels`, with the interface of `TrainingProcess`."""

    pid = None

    def __init__(self, files: TrainingFiles) -> None:
        self.files = files

    def poll(self) -> TrainingResult:
        return TrainingResult(True, 0.0)

    def kill(self) -> None:
        pass


class TrainingProcess:
    """A started training; `poll()` returns None while it runs, then its result."""

    def __init__(
        self, argv: list[str], files: TrainingFiles, timeout_seconds: float, threads: int = 1, nice: int = 0
    ) -> None:
        self.files = files
        self.timeout_seconds = timeout_seconds
        self.started = time.monotonic()
        with open(files.log, "wb") as log:
            # Its own process group, so that a timeout also kills what the trainer started.
            self._process = subprocess.Popen(
                launch_argv(argv, files, nice),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=training_env(threads),
            )

    @property
    def pid(self) -> int:
        return self._process.pid

    def poll(self) -> TrainingResult | None:
        returncode = self._process.poll()
        elapsed = time.monotonic() - self.started
        if returncode is None:
            if elapsed < self.timeout_seconds:
                return None
            self.kill()
            return TrainingResult(False, elapsed, f"training timed out after {self.timeout_seconds:g} s")
        if returncode != 0:
            return TrainingResult(False, elapsed, f"trainer exited with status {returncode}: {self._output_tail()}")
        if not self.files.output.is_file():
            return TrainingResult(False, elapsed, f"trainer wrote no model to {self.files.output.name}")
        if self.files.artifact_sha256() is None:
            return TrainingResult(False, elapsed, f"no digest of {self.files.output.name} was written")
        return TrainingResult(True, elapsed)

    def wait(self, poll_seconds: float) -> TrainingResult:
        while (result := self.poll()) is None:
            time.sleep(poll_seconds)
        return result

    def kill(self) -> None:
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process.wait()

    def _output_tail(self) -> str:
        text = self.files.log.read_text(errors="replace").strip()
        lines = [line for line in text.splitlines() if line.strip()]
        return redact_text((lines[-1] if lines else "no output")[-FAILURE_DETAIL_CHARS:])
