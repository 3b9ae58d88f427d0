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
import re
import shutil
import signal
import subprocess
import sys
import tempfile
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


SCRATCH_PARENT = "driftline-training"  # under `retrain.work_dir` (default: the system's temp dir)
# A run's folder: `<owner pid>.<owner start time>-<model>-<random>`; the start time tells
# a dead owner from a new process that got its pid again.
_OWNED = re.compile(r"^(\d+)\.(\d+)-")


def scratch_root(work_dir: Path | None) -> Path:
    return Path(work_dir or tempfile.gettempdir()) / SCRATCH_PARENT


def new_scratch_folder(work_dir: Path | None, model_id: str) -> Path:
    """A fresh folder for one training run, named after this process."""
    root = scratch_root(work_dir)
    root.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    return Path(tempfile.mkdtemp(prefix=f"{pid}.{_start_time(pid)}-{model_id}-", dir=root))


def remove_stale_scratch(work_dir: Path | None) -> list[Path]:
    """Removes the run folders whose owner process is dead (a retrainer killed during
    a training); a running owner's folders, and anything not named like ours, stay."""
    root = scratch_root(work_dir)
    removed = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        owner = _OWNED.match(folder.name)
        if owner is None or not folder.is_dir() or _start_time(int(owner[1])) == int(owner[2]):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (Linux's /proc), 0 without
    /proc (the pid alone then tells); -1 if no process has that pid."""
    if not Path("/proc/self/stat").is_file():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return -1
        except PermissionError:
            pass
        return 0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return -1
    # The command name may hold spaces and parentheses: fields count from the last ')'.
    return int(stat[stat.rindex(")") + 2:].split()[19])


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
    """`argv` under `retrain.launch`: niceness, the artifact's digest, death with this process."""
    return [sys.executable, "-m", "retrain.launch", "--nice", str(nice), "--output", str(files.output),
            "--parent", str(os.getpid()), "--", *argv]


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
