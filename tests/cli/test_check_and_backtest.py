"""`driftline check` and `driftline backtest` as a user runs them: banner, JSON, triggers,
exit codes, and one clear line for every bad file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streams.workload import Workload

DRIFT_AT = 3000


def driftline(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("files")
    workload = Workload(seed=3)
    workload.frame(5000).to_csv(root / "ref.csv", index=False)
    stream = pd.concat(
        [workload.frame(DRIFT_AT, "stationary", seed=1), workload.frame(3000, "covariate", seed=2)],
        ignore_index=True,
    )
    stream.drop(columns="actual").to_csv(root / "recent.csv", index=False)
    stream.drop(columns="actual").to_parquet(root / "recent.parquet")
    stream.iloc[:DRIFT_AT].drop(columns="actual").to_csv(root / "same.csv", index=False)
    stream.to_parquet(root / "stream.parquet")
    rng = np.random.default_rng(0)
    np.save(root / "actuals.npy", stream["actual"].to_numpy())
    np.save(root / "predictions.npy", stream["actual"].to_numpy() + rng.normal(0, 0.3, len(stream)))
    (root / "empty.csv").write_text("")
    (root / "header_only.csv").write_text("x0,x1\n")
    (root / "garbage.parquet").write_bytes(b"not parquet at all")
    stream.drop(columns=["actual", "x5"]).to_csv(root / "missing_x5.csv", index=False)
    return root


def test_check_prints_the_design_banner(files: Path) -> None:
    result = driftline("check", "--reference-data", "ref.csv", "--recent-data", "recent.csv",
                       "--r2", "0.9", "--rmse", "0.35", "--baseline-r2", "0.9", "--baseline-rmse", "0.35", cwd=files)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == lines[2] == lines[-1] == "═" * 44
    assert lines[1] == "RETRAINING DECISION: YES"
    assert lines[3].startswith("Reason: ") and "x0" in lines[3] and "x1" in lines[3]
    assert lines[4] in {f"Severity: {s}" for s in ("LOW", "MEDIUM", "HIGH", "CRITICAL")}
    assert lines[5].startswith("Confidence: ") and lines[5].endswith("%")


def test_check_json_holds_the_decision_and_per_column_tests(files: Path) -> None:
    result = driftline("check", "--reference-data", "ref.csv", "--recent-data", "recent.parquet",
                       "--recent-predictions", "predictions.npy", "--recent-actuals", "actuals.npy",
                       "--json", cwd=files)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert {"triggered", "severity", "confidence", "reason", "root_cause"} <= set(document)
    assert document["triggered"] is True
    columns = document["data_drift"]["columns"]
    assert set(columns) == {f"x{i}" for i in range(6)}
    for name in ("x0", "x1"):
        assert columns[name]["ks_statistic"] > 0.1 and columns[name]["p_value"] < 1e-6
    assert {c["column"] for c in document["root_cause"] if c["column"]} >= {"x0", "x1"}
    # the reference's serial dependence per column (independent rows here)
    dependence = document["dependence"]
    assert dependence["source"] == "reference" and set(dependence["columns"]) == set(columns)
    for column in dependence["columns"].values():
        assert column["source"] == "reference" and column["rows"] == 5000
        assert 1.0 <= column["factor"] < 1.3
        assert column["effective_sample_size"] == pytest.approx(5000 / column["factor"])


def test_check_reports_a_serially_dependent_reference_column(files: Path) -> None:
    """x0 of the reference an AR(1) series (lag-1 correlation 0.9): its factor is about
    (1 + 0.9) / (1 - 0.9) = 19, so 5000 rows hold a few hundred rows' worth of evidence."""
    reference = pd.read_csv(files / "ref.csv")
    rng = np.random.default_rng(4)
    x = np.zeros(len(reference))
    for i in range(1, len(x)):
        x[i] = 0.9 * x[i - 1] + np.sqrt(1 - 0.9**2) * rng.normal()
    reference["x0"] = x
    reference.to_csv(files / "ref_ar.csv", index=False)
    result = driftline("check", "--reference-data", "ref_ar.csv", "--recent-data", "same.csv", "--json", cwd=files)
    assert result.returncode == 0, result.stderr
    columns = json.loads(result.stdout)["dependence"]["columns"]
    assert 8 < columns["x0"]["factor"] < 40 and columns["x0"]["lag1"] > 0.8
    assert columns["x0"]["effective_sample_size"] < 700 and columns["x1"]["factor"] < 1.3

    text = driftline("check", "--reference-data", "ref_ar.csv", "--recent-data", "same.csv", cwd=files).stdout
    [note] = [line for line in text.splitlines() if line.startswith("Serial dependence")]
    assert f"x0 {columns['x0']['factor']:.1f}" in note and "x1" not in note
    plain = driftline("check", "--reference-data", "ref.csv", "--recent-data", "same.csv", cwd=files).stdout
    assert "Serial dependence" not in plain  # independent columns: the banner alone

    (files / "shuffled.toml").write_text('[detectors]\nreference_order = "shuffled"\n')
    result = driftline("check", "--config", "shuffled.toml", "--reference-data", "ref_ar.csv", "--recent-data",
                       "same.csv", "--json", cwd=files)
    assert result.returncode == 0, result.stderr
    dependence = json.loads(result.stdout)["dependence"]
    assert dependence["source"] == "shuffled"  # the row order is not time: nothing estimated
    assert all(c["factor"] is None and c["effective_sample_size"] is None and c["source"] == "shuffled"
               for c in dependence["columns"].values())


def test_check_reports_the_prediction_drifting_with_inputs_unchanged(files: Path) -> None:
    """The model's output spread halves, no input moves: check says prediction drift, in
    the banner, in a line of its own and in --json; an unchanged prediction says nothing."""
    rng = np.random.default_rng(8)
    reference = pd.read_csv(files / "ref.csv")
    reference["prediction"] = reference["x0"] + reference["x1"] + rng.normal(0, 0.3, len(reference))
    reference.to_csv(files / "ref_pred.csv", index=False)
    same = pd.read_csv(files / "same.csv")
    same["prediction"] = same["x0"] + same["x1"] + rng.normal(0, 0.3, len(same))
    same.to_csv(files / "same_pred.csv", index=False)
    same.assign(prediction=0.5 * same["prediction"]).to_csv(files / "narrow_pred.csv", index=False)

    result = driftline("check", "--reference-data", "ref_pred.csv", "--recent-data", "narrow_pred.csv", "--json",
                       cwd=files)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["triggered"] and document["drift_types"] == ["prediction_drift"]
    drift = document["prediction_drift"]
    assert drift["drifted"] and drift["column"] == "prediction" and drift["p_value_adjusted"] < 1e-6
    assert drift["recent_std"] == pytest.approx(drift["reference_std"] / 2, rel=0.1)
    assert [c["signal"] for c in document["root_cause"]] == ["prediction_drift"]
    text = driftline("check", "--reference-data", "ref_pred.csv", "--recent-data", "narrow_pred.csv",
                     cwd=files).stdout
    assert "Prediction drift detected in columns: prediction" in text
    assert any(line.startswith("Prediction drift (prediction): drifted") for line in text.splitlines())
    calm = driftline("check", "--reference-data", "ref_pred.csv", "--recent-data", "same_pred.csv", cwd=files)
    assert "RETRAINING DECISION: NO" in calm.stdout and "Prediction drift (prediction): unchanged" in calm.stdout


def test_check_reports_a_broken_feed_in_the_banner_and_the_json(files: Path) -> None:
    """A feature 40 % empty, another stuck, a category never seen: each named with what
    broke, at least HIGH; the unchanged rows say nothing of data quality."""
    broken = pd.read_csv(files / "same.csv")
    rng = np.random.default_rng(4)
    broken.loc[rng.random(len(broken)) < 0.4, "x2"] = np.nan
    broken["x4"] = float(broken["x4"].median())
    broken.to_csv(files / "broken.csv", index=False)
    document = json.loads(driftline("check", "--reference-data", "ref.csv", "--recent-data", "broken.csv",
                                    "--json", cwd=files).stdout)
    assert document["triggered"] and document["severity"] in ("HIGH", "CRITICAL")
    assert "data_quality" in document["drift_types"]
    named = {(c["signal"], c["column"]) for c in document["root_cause"]}
    assert {("missing", "x2"), ("stuck", "x4")} <= named
    rates = document["data_quality"]["columns"]["x2"]
    assert rates["missing_reference"] == 0 and rates["missing_recent"] == pytest.approx(0.4, abs=0.03)
    text = driftline("check", "--reference-data", "ref.csv", "--recent-data", "broken.csv", cwd=files).stdout
    assert any(line.startswith("Data quality (x2): values missing: ") for line in text.splitlines())
    assert any(line.startswith("Data quality (x4): stuck: 100.0% of values repeat") for line in text.splitlines())
    calm = driftline("check", "--reference-data", "ref.csv", "--recent-data", "same.csv", "--json", cwd=files)
    assert json.loads(calm.stdout)["data_quality"]["signals"] == []


def test_check_without_drift_says_no(files: Path) -> None:
    result = driftline("check", "--reference-data", "ref.csv", "--recent-data", "same.csv", cwd=files)
    assert result.returncode == 0, result.stderr
    assert "RETRAINING DECISION: NO" in result.stdout


def test_backtest_writes_the_triggers_at_the_drift(files: Path) -> None:
    result = driftline("backtest", "--reference", "ref.csv", "--stream", "stream.parquet",
                       "--output", "triggers.jsonl", cwd=files)
    assert result.returncode == 0, result.stderr
    triggers = [json.loads(line) for line in (files / "triggers.jsonl").read_text().splitlines()]
    assert triggers, result.stdout
    first = triggers[0]
    assert DRIFT_AT <= first["offset"] < DRIFT_AT + 200
    assert {"offset", "trigger_types", "severity", "confidence", "columns", "reason"} <= set(first)
    assert set(first["columns"]) <= {"x0", "x1"}
    assert "trigger" in result.stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["check", "--reference-data", "nope.csv", "--recent-data", "recent.csv"], "nope.csv: no such file"),
        (["check", "--reference-data", "ref.csv", "--recent-data", "empty.csv"], "empty.csv: the file is empty"),
        (["check", "--reference-data", "ref.csv", "--recent-data", "header_only.csv"], "header_only.csv: no data rows"),
        (["check", "--reference-data", "ref.csv", "--recent-data", "garbage.parquet"], "garbage.parquet: not a readable Parquet file"),
        (["check", "--reference-data", "ref.csv", "--recent-data", "missing_x5.csv"], "column 'x5' is in ref.csv but not in missing_x5.csv"),
        (["check", "--reference-data", "ref.csv", "--recent-data", "recent.csv", "--recent-predictions", "predictions.npy"], "go together"),
        (["backtest", "--reference", "ref.csv", "--stream", "missing_x5.csv", "--output", "o.jsonl", "--feature-column", "x5"], "column 'x5'"),
        (["backtest", "--reference", "empty.csv", "--stream", "stream.parquet", "--output", "o.jsonl"], "empty.csv: the file is empty"),
    ],
)
def test_bad_input_gives_one_clear_line(files: Path, arguments: list[str], message: str) -> None:
    result = driftline(*arguments, cwd=files)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
