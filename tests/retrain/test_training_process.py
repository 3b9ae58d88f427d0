"""Training in a separate process: commands without a shell, crashes, timeouts. No services."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import joblib

from schemas.tables import write_table
from retrain.training_process import TrainingFiles, TrainingProcess, training_argv
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
