"""Training in a separate process: commands without a shell, crashes, timeouts. No services."""

from __future__ import annotations

import sys
from pathlib import Path

import joblib

from schemas.tables import write_table
from retrain.training_process import TrainingFiles, TrainingProcess, training_argv
from schemas.settings import ModelSettings
from tests.retrain.synthetic import regression_frame

SCRIPT = str(Path(__file__).with_name("train_script.py"))


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
    argv = [sys.executable, "-c", "import sys; sys.exit(0)", "; touch {output}"]
    result = TrainingProcess(argv, files, timeout_seconds=60).wait(poll_seconds=0.05)
    assert not result.ok and result.reason == "trainer wrote no model to model.joblib"


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
