"""The design's batch entry points: the Python API and `driftline retrain`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrain import RetrainingExecutor
from retrain.executor import STEPS
from retrain.model_store import FileModelStore
from tests.conftest import ROOT
from tests.retrain.conftest import MODEL, Harness
from tests.retrain.synthetic import regression_frame

pytestmark = pytest.mark.services


def test_full_pipeline_detects_prepares_trains_validates_and_logs(harness: Harness, training_csv: Path) -> None:
    settings = harness.settings()
    lines: list[str] = []
    executor = RetrainingExecutor(project_root=".", settings=settings, report=lambda step: lines.append(step.line()))
    result = executor.execute_full_retraining_pipeline(
        reference_data=pd.read_csv(training_csv),
        recent_data=regression_frame(400, seed=12, drifted=True),
        current_metrics={"r2": 0.5, "rmse": 2.0},
    )
    assert [line.split(":")[0] for line in lines] == [f"{n}. ✓ {step}" for n, step in enumerate(STEPS, 1)]
    assert result.logged and result.outcome.outcome == "promoted"
    [row] = harness.rows()
    assert row["model_id"] == MODEL and row["execution_successful"] is True
    assert row["retraining_model_version"] == "2" == FileModelStore(settings.model_store_path, 5).versions(MODEL)[-1]


def test_no_drift_stops_after_detection_and_logs_nothing(harness: Harness, training_csv: Path) -> None:
    lines: list[str] = []
    executor = RetrainingExecutor(
        project_root=".", settings=harness.settings(), report=lambda step: lines.append(step.line())
    )
    result = executor.execute_full_retraining_pipeline(
        reference_data=pd.read_csv(training_csv), recent_data=regression_frame(400, seed=13)
    )
    assert lines[0].startswith("1. ✓ Detecting drift/degradation: no retraining needed")
    assert lines[1:] == [f"{n}. – {step}: not run" for n, step in enumerate(STEPS, 1)][1:]
    assert result.succeeded and harness.rows() == []


def test_cli_prints_the_five_steps_and_one_line_when_postgres_is_unreachable(harness: Harness, tmp_path: Path) -> None:
    recent = tmp_path / "recent.csv"
    regression_frame(400, seed=14, drifted=True).to_csv(recent, index=False)
    settings = harness.settings()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DRIFTLINE_POSTGRES__DSN": "postgresql://driftline:driftline@127.0.0.1:1/driftline",
        "DRIFTLINE_MODEL_STORE_PATH": str(settings.model_store_path),
        "DRIFTLINE_MODELS": f'{{"{MODEL}": {{"reference_path": "{harness.training_csv}"}}}}',
    }
    argv = [
        sys.executable,
        "-m",
        "streams.cli",
        "retrain",
        "--reference-data",
        str(harness.training_csv),
        "--recent-data",
        str(recent),
        "--log-file",
        str(tmp_path / "retraining_executor.log"),
    ]
    result = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert [line[:4] for line in lines] == ["1. ✓", "2. ✓", "3. ✓", "4. ✓", "5. ✗"], result.stdout + result.stderr
    assert lines[4].startswith("5. ✗ Logging results: PostgreSQL unreachable, row not written (")
    assert "driftline:driftline@" not in result.stdout + result.stderr
    assert result.returncode == 1


def _retrain(harness: Harness, cwd: Path, *args: str, dsn: str | None = None) -> subprocess.CompletedProcess[str]:
    settings = harness.settings()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DRIFTLINE_POSTGRES__DSN": dsn or harness.dsn,
        "DRIFTLINE_POSTGRES__DB_SCHEMA": harness.schema,
        "DRIFTLINE_MODEL_STORE_PATH": str(settings.model_store_path),
        "DRIFTLINE_RETRAIN__WORK_DIR": str(harness.work),
    }
    env.pop("DRIFTLINE_MODELS", None)
    return subprocess.run([sys.executable, "-m", "streams.cli", "retrain", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=180)


def _design_files(root: Path, target: str = "price") -> None:
    """The design's layout: data/trainset/train.csv and data/recent_data.csv, target `price`."""
    (root / "data/trainset").mkdir(parents=True)
    regression_frame(2000, seed=1).rename(columns={"actual": target}).to_csv(root / "data/trainset/train.csv", index=False)
    regression_frame(400, seed=15, drifted=True).rename(columns={"actual": target}).to_csv(
        root / "data/recent_data.csv", index=False)


def test_cli_retrains_on_a_named_target_and_writes_the_designs_log_file(harness: Harness, tmp_path: Path) -> None:
    _design_files(tmp_path)
    result = _retrain(harness, tmp_path, "--reference-data", "data/trainset/train.csv",
                      "--recent-data", "data/recent_data.csv", "--target-column", "price")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line[:4] for line in result.stdout.splitlines()] == ["1. ✓", "2. ✓", "3. ✓", "4. ✓", "5. ✓"]
    log = (tmp_path / "retraining_executor.log").read_text(encoding="utf-8").splitlines()
    steps = [line for line in log if "retrain.executor: " in line and ". " in line.split(": ", 1)[1][:3]]
    assert [line.split("retrain.executor: ", 1)[1] for line in steps] == result.stdout.splitlines()
    assert any("retraining_pipeline_finished" in line and "outcome=" in line for line in log)
    assert not any(line.startswith("{") for line in log)  # plain text, not the JSON of stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [e["step"] for e in events if e["event"] == "retraining_step"] == [1, 2, 3, 4, 5]
    [row] = harness.rows()
    assert row["execution_successful"] is True and row["model_id"] == "default"


@pytest.mark.parametrize(
    ("arguments", "needles"),
    [
        ([], ["--reference-data data/trainset/train.csv: no target column 'actual'", "--target-column"]),
        (["--target-column", "price", "--r2", "0.5"], ["--r2 is the model's current R2", "--baseline-r2"]),
        (["--target-column", "price", "--log-file", "no/such/dir/x.log"], ["--log-file no/such/dir/x.log: cannot write"]),
    ],
)
def test_cli_bad_input_is_one_line_naming_the_option(
    harness: Harness, tmp_path: Path, arguments: list[str], needles: list[str]
) -> None:
    _design_files(tmp_path)
    result = _retrain(harness, tmp_path, "--reference-data", "data/trainset/train.csv",
                      "--recent-data", "data/recent_data.csv", *arguments)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert all(needle in line for needle in needles), line
    assert harness.rows() == []


def test_recent_data_without_the_target_names_the_option(harness: Harness, tmp_path: Path) -> None:
    _design_files(tmp_path)
    pd.read_csv(tmp_path / "data/recent_data.csv").drop(columns="price").to_csv(tmp_path / "features.csv", index=False)
    result = _retrain(harness, tmp_path, "--reference-data", "data/trainset/train.csv",
                      "--recent-data", "features.csv", "--target-column", "price")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--recent-data features.csv: no target column 'price'" in result.stderr
    assert "--recent-actuals" in result.stderr


def test_outliers_alone_retrain_under_the_default_policy(harness: Harness, training_csv: Path) -> None:
    settings = harness.settings()
    assert settings.retrain.min_severity == "MEDIUM"  # the default policy
    reference = pd.read_csv(training_csv)
    recent = regression_frame(400, seed=16)
    rng = np.random.default_rng(16)
    rows = rng.choice(len(recent), size=32, replace=False)  # 8 % beyond |z| > 3 in x2 only
    recent.loc[rows, "x2"] = rng.choice([-1, 1], size=32) * rng.uniform(3.5, 5.0, size=32)
    lines: list[str] = []
    executor = RetrainingExecutor(project_root=".", settings=settings, report=lambda step: lines.append(step.line()))
    result = executor.execute_full_retraining_pipeline(reference_data=reference, recent_data=recent)
    assert result.trigger.metrics["data_drift"]["outlier_columns"] == ["x2"]
    assert [t.value for t in result.trigger.drift_types] == ["outliers"]
    assert result.trigger.severity == "MEDIUM"
    assert lines[0].startswith("1. ✓ Detecting drift/degradation: MEDIUM"), lines
    assert lines[2].startswith("3. ✓"), lines
    [row] = harness.rows()
    assert row["execution_attempted"] is True and row["trigger_type"] == "outliers"


def test_current_metrics_are_compared_with_the_serving_versions_record(harness: Harness, training_csv: Path) -> None:
    settings = harness.settings()
    executor = RetrainingExecutor(project_root=".", settings=settings)
    recorded = executor.baseline()
    assert "rmse" in recorded and recorded["rmse"] > 0  # the store's validation metrics of version 1
    trigger = executor.detect(pd.read_csv(training_csv), regression_frame(400, seed=13),
                              current_metrics={"rmse": recorded["rmse"] * 3})
    performance = trigger.metrics["performance"]
    assert performance["baseline_source"] == "configured" and performance["degraded"] == ["rmse"]
    assert trigger.triggered
    given = executor.detect(pd.read_csv(training_csv), regression_frame(400, seed=13),
                            current_metrics={"rmse": 1.0}, baseline_metrics={"rmse": 1.0})
    assert given.metrics["performance"]["degraded"] == [] and not given.triggered


def test_a_worse_challenger_is_rejected_logged_and_the_champion_still_serves(
    harness: Harness, training_csv: Path
) -> None:
    settings = harness.settings(model={"trainer": "tests.retrain.trainers:constant"})
    executor = RetrainingExecutor(project_root=".", settings=settings)
    result = executor.execute_full_retraining_pipeline(
        reference_data=pd.read_csv(training_csv), recent_data=regression_frame(400, seed=12, drifted=True),
        current_metrics={"r2": 0.5, "rmse": 2.0},
    )
    assert result.logged and result.outcome.outcome == "rejected"
    [row] = harness.rows()
    assert row["execution_metrics"]["outcome"] == "rejected" and row["retraining_model_version"] == "2"
    assert FileModelStore(settings.model_store_path, 5).current_version(MODEL) == "1"
