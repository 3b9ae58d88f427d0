"""`driftline backtest --score-column`: a binary classifier's scores make its performance
estimated without labels; a drift that hurts it fires `estimated_performance_degradation`
with an `expected_impact`, before any label; a bad column name is one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

CHANGE = 6000


def scored(rng: np.random.Generator, n: int, spread: float = 2.5) -> pd.DataFrame:
    x = rng.normal(size=(n, 3))
    p = 1 / (1 + np.exp(-(spread * x[:, 0] + 0.5 * x[:, 1])))
    return pd.DataFrame(x, columns=["a", "b", "c"]).assign(
        prediction=(p > 0.5).astype(int), actual=(rng.random(n) < p).astype(int), proba=p)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scores")
    rng = np.random.default_rng(11)
    scored(rng, 10_000).to_csv(root / "ref.csv", index=False)
    stream = pd.concat([scored(rng, CHANGE), scored(rng, 4000, spread=1.0)], ignore_index=True)
    stream["actual"] = np.nan  # no label arrives
    stream.to_csv(root / "stream.csv", index=False)
    return root


def backtest(files: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "backtest", "--reference", "ref.csv", "--stream", "stream.csv",
         "--output", "triggers.jsonl", "--task", "classification", *extra],
        cwd=files, capture_output=True, text=True, timeout=300)


def test_score_column_estimates_the_harm_before_labels(files: Path) -> None:
    result = backtest(files, "--score-column", "proba")
    assert result.returncode == 0, result.stderr
    triggers = [json.loads(line) for line in (files / "triggers.jsonl").read_text().splitlines()]
    assert triggers and all(t["offset"] >= CHANGE for t in triggers)
    first = triggers[0]
    assert "estimated_performance_degradation" in first["trigger_types"]
    assert first["severity"] in ("HIGH", "CRITICAL")
    impact = first["expected_impact"]
    assert impact["metric"] == "accuracy" and impact["change"] < -0.05
    assert all("proba" not in t["columns"] for t in triggers)  # the scores are no feature


def test_without_scores_nothing_is_estimated(files: Path) -> None:
    result = backtest(files)
    assert result.returncode == 0, result.stderr
    triggers = [json.loads(line) for line in (files / "triggers.jsonl").read_text().splitlines()]
    assert all("expected_impact" not in t for t in triggers)
    assert all("estimated_performance_degradation" not in t["trigger_types"] for t in triggers)


def test_unknown_score_column_is_one_clear_line(files: Path) -> None:
    result = backtest(files, "--score-column", "nope")
    assert result.returncode != 0
    assert "--score-column 'nope' is not a column of --reference" in result.stderr
    assert "Traceback" not in result.stderr


def check(files: Path, recent: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "check", "--reference-data", "ref.csv", "--recent-data", recent,
         "--json", *extra], cwd=files, capture_output=True, text=True, timeout=300)


def test_check_reports_the_expected_impact(files: Path) -> None:
    stream = pd.read_csv(files / "stream.csv").drop(columns="actual")
    stream.iloc[CHANGE:].to_csv(files / "hurt.csv", index=False)
    harmless = stream.iloc[:CHANGE].copy()
    harmless["c"] += 1.0  # a column the model does not use
    harmless.to_csv(files / "harmless.csv", index=False)
    hurt = check(files, "hurt.csv", "--score-column", "proba")
    assert hurt.returncode == 0, hurt.stderr
    doc = json.loads(hurt.stdout)
    assert doc["estimated_performance"]["change"] < -0.05 and doc["severity"] in ("HIGH", "CRITICAL")
    assert "estimated_performance_degradation" in doc["drift_types"]
    calm = json.loads(check(files, "harmless.csv", "--score-column", "proba").stdout)
    assert calm["triggered"] and calm["severity"] == "LOW"
    assert "no harmful expected impact" in calm["reason"]
    assert "proba" not in calm["data_drift"]["columns"]
