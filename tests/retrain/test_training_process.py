"""Training in a separate process: commands without a shell, crashes, timeouts. No services."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import joblib
import pytest

from schemas.tables import write_table
from retrain.training_process import (
    TrainingFiles,
    TrainingProcess,
    new_scratch_folder,
    remove_stale_scratch,
    scratch_root,
    training_argv,
)
from schemas.settings import ModelSettings
from tests.retrain.synthetic import regression_frame
from tests.retrain.trainers import PROBE_ENV

SCRIPT = str(Path(__file__).with_name("train_script.py"))
ECHO = str(Path(__file__).with_name("echo_args.py"))


def files_with_data(tmp_path: Path) -> TrainingFiles:
    files = TrainingFiles(tmp_path, "parquet")
    write_table(regression_frame(200, seed=1), files.data)
    return files


def test_a_configured_command_gets_its_placeholders_and_no_shell(tmp_path: Path) -> None:
    files = files_with_data(tmp_path)
    model = ModelSettings(
        reference_path=tmp_path, train_command=[sys.executable, SCRIPT, "{data}", "{output}", "{target}"]
    )
    argv = training_argv(model, files, seed=0)
    assert argv == [sys.executable, SCRIPT, str(files.data), str(files.output), "actual"]
    result = TrainingProcess(argv, files, timeout_seconds=60).wait(poll_seconds=0.05)
    assert result.ok, result.reason
    assert joblib.load(files.output).predict(regression_frame(5, seed=2)[["x1", "x2"]]).shape == (5,)


def test_shell_syntax_in_a_command_is_an_argument_not_a_command(tmp_path: Path) -> None:
    files = files_with_data(tmp_path)
    marker = tmp_path / "a-shell-ran-this"
    hostile = f"; touch {marker}; $(touch {marker}) `touch {marker}` && touch {marker} | touch {marker}"
    model = ModelSettings(reference_path=tmp_path, train_command=[sys.executable, ECHO, "{output}", hostile, "*"])
    result = TrainingProcess(training_argv(model, files, seed=0), files, timeout_seconds=60).wait(poll_seconds=0.05)
    assert result.ok, result.reason
    # the command got its arguments verbatim (no word splitting, globbing or substitution)
    assert json.loads(files.output.read_text()) == [str(files.output), hostile, "*"]
    assert not marker.exists(), "a shell ran the command's arguments"


def test_the_trainer_runs_at_a_lower_priority_with_limited_threads(tmp_path: Path, monkeypatch) -> None:
    files = files_with_data(tmp_path)
    seen_file = tmp_path / "seen.json"
    monkeypatch.setenv(PROBE_ENV, str(seen_file))
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # the settings win over the retrainer's environment
    model = ModelSettings(reference_path=tmp_path, trainer="tests.retrain.trainers:probe")
    process = TrainingProcess(training_argv(model, files, seed=0), files, timeout_seconds=120, threads=1, nice=5)
    result = process.wait(poll_seconds=0.05)
    assert result.ok, result.reason
    seen = json.loads(seen_file.read_text())
    assert seen["nice"] == min(19, os.nice(0) + 5)
    assert seen["env"] == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert seen["pools"] == [1]


def test_the_launcher_writes_the_digest_of_a_successful_training_only(tmp_path: Path) -> None:
    files = files_with_data(tmp_path)
    model = ModelSettings(reference_path=tmp_path, train_command=[sys.executable, SCRIPT, "{data}", "{output}", "{target}"])
    assert TrainingProcess(training_argv(model, files, seed=0), files, timeout_seconds=60).wait(0.05).ok
    assert files.artifact_sha256() == hashlib.sha256(files.output.read_bytes()).hexdigest()

    broken = TrainingFiles(tmp_path / "broken", "parquet")
    broken.folder.mkdir()
    write = f"open({str(broken.output)!r}, 'w').write('half'); raise SystemExit(4)"
    result = TrainingProcess([sys.executable, "-c", write], broken, timeout_seconds=60).wait(0.05)
    assert not result.ok and result.reason.startswith("trainer exited with status 4")
    assert broken.output.exists() and broken.artifact_sha256() is None


def test_a_crashing_trainer_is_a_failure_with_its_last_words(tmp_path: Path) -> None:
    files = files_with_data(tmp_path)
    model = ModelSettings(reference_path=tmp_path, trainer="tests.retrain.trainers:failing")
    result = TrainingProcess(training_argv(model, files, seed=0), files, timeout_seconds=60).wait(poll_seconds=0.05)
    assert not result.ok
    assert result.reason.startswith("trainer exited with status 1: RuntimeError: trainer exploded on purpose")


def test_a_hanging_trainer_is_killed_at_the_timeout(tmp_path: Path) -> None:
    files = files_with_data(tmp_path)
    process = TrainingProcess([sys.executable, "-c", "import time; time.sleep(600)"], files, timeout_seconds=0.5)
    result = process.wait(poll_seconds=0.05)
    assert not result.ok and result.reason == "training timed out after 0.5 s"
    assert process.poll() is not None


# A retrainer's stand-in: starts a training that would run for ten minutes, says where
# it is, and waits to be killed.
_PARENT = """
import os, sys, time
from pathlib import Path
from retrain.training_process import TrainingFiles, TrainingProcess, new_scratch_folder
work_dir, pid_file = Path(sys.argv[1]), sys.argv[2]
folder = new_scratch_folder(work_dir, "m")
trainer = [sys.executable, "-c", f"import os, time; open({pid_file!r}, 'w').write(str(os.getpid())); time.sleep(600)"]
process = TrainingProcess(trainer, TrainingFiles(folder, "parquet"), timeout_seconds=600)
print(process.pid, folder, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting for its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _wait_for(condition, seconds: float, what: str) -> None:
    """Polls a process's state (an event outside this process) until the deadline."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG are Linux's")
def test_a_killed_retrainer_takes_its_training_along_and_its_folder_is_removed_at_the_next_start(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "trainer.pid"
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path), str(pid_file)],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    launcher, folder = parent.stdout.readline().split()
    _wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60, "the trainer started")
    trainer = int(pid_file.read_text())
    assert _running(int(launcher)) and _running(trainer)
    live = new_scratch_folder(tmp_path, "mine")  # this process's: it stays

    parent.kill()  # SIGKILL: no clean-up of its own
    parent.wait()
    _wait_for(lambda: not _running(int(launcher)) and not _running(trainer), 30,
              "the launcher and the trainer outlived their retrainer")

    assert Path(folder).is_dir()
    assert remove_stale_scratch(tmp_path) == [Path(folder)]
    assert not Path(folder).exists() and live.is_dir()
    (scratch_root(tmp_path) / "not-ours").mkdir()
    assert remove_stale_scratch(tmp_path) == []
