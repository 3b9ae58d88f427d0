"""docs/design-document.md's "From the design document": every command, Python block and query it
maps runs as written, on the design's file layout (data/trainset/train.csv,
data/recent_data.csv, the .npy files) with its target column `price`."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest

from tests.conftest import ROOT
from tests.retrain.synthetic import regression_frame

pytestmark = pytest.mark.services
SECTION = "## From the design document"


def section() -> str:
    text = (ROOT / "docs" / "design-document.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:] if end < 0 else text[start:end]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(), flags=re.DOTALL)


def commands() -> list[list[str]]:
    """Each `driftline ...` line of the section's bash blocks, continuations joined."""
    joined = "\n".join(blocks("bash")).replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip()]


def test_the_section_maps_the_designs_entry_points() -> None:
    text = section()
    for design in ("scripts/automatic_retraining.py", "scripts/retraining_executor.py", "RetrainingExecutor",
                   "AutomaticRetrainingOrchestrator", "airflow/dags/automatic_retraining_dag.py",
                   "retraining_executor.log", "db_utils.py"):
        assert design in text, design
    assert [c[:2] for c in commands()] == [["driftline", "db"], ["driftline", "check"], ["driftline", "retrain"]]
    assert len(blocks("python")) == 1 and len(blocks("sql")) == 1


@pytest.fixture
def design_layout(tmp_path: Path) -> Path:
    (tmp_path / "data/trainset").mkdir(parents=True)
    regression_frame(2000, seed=1).rename(columns={"actual": "price"}).to_csv(
        tmp_path / "data/trainset/train.csv", index=False)
    recent = regression_frame(400, seed=21, drifted=True)
    recent.rename(columns={"actual": "price"}).to_csv(tmp_path / "data/recent_data.csv", index=False)
    rng = np.random.default_rng(21)
    actuals = recent["actual"].to_numpy()
    predictions = actuals + rng.normal(0.0, 0.5, len(actuals))
    for prefix in ("", "recent_"):
        np.save(tmp_path / f"{prefix}predictions.npy", predictions)
        np.save(tmp_path / f"{prefix}actuals.npy", actuals)
    return tmp_path


def test_every_mapped_command_python_block_and_query_runs(
    design_layout: Path, postgres_dsn: str, db_schema: str, db: psycopg.Connection
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")},
        "PYTHONPATH": str(ROOT),
        "DRIFTLINE_POSTGRES__DSN": postgres_dsn,
        "DRIFTLINE_POSTGRES__DB_SCHEMA": db_schema,
        "DRIFTLINE_MODEL_STORE_PATH": str(design_layout / "store"),
    }
    outputs = {}
    for argv in commands():
        assert argv[0] == "driftline"
        done = subprocess.run([sys.executable, "-m", "streams.cli", *argv[1:]], cwd=design_layout, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stdout}\n{done.stderr}"
        outputs[argv[1]] = done.stdout
    assert "RETRAINING DECISION: YES" in outputs["check"]
    assert [line[:4] for line in outputs["retrain"].splitlines()] == ["1. ✓", "2. ✓", "3. ✓", "4. ✓", "5. ✓"]
    assert "5. ✓ Logging results" in (design_layout / "retraining_executor.log").read_text(encoding="utf-8")

    [code] = blocks("python")
    done = subprocess.run([sys.executable, "-c", code], cwd=design_layout, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Retraining needed!" in done.stdout and "5. ✓ Logging results" in done.stdout

    # two rows, one per retrain; the query counts every type each trigger had
    rows = db.execute("SELECT trigger_type, drift_type FROM model_retraining_events ORDER BY id").fetchall()
    assert len(rows) == 2
    [query] = blocks("sql")
    counts = {t: n for t, n, _ in db.execute(query).fetchall()}
    expected: dict[str, int] = {}
    for _, drift_type in rows:
        for kind in drift_type.split(","):
            expected[kind] = expected.get(kind, 0) + 1
    assert counts == expected and "data_drift" in counts
