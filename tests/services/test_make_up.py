"""A second `make up` leaves the running services alone."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.services


def status() -> str:
    return subprocess.run(
        ["make", "-s", "status"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def test_second_make_up_is_a_no_op(kafka_bootstrap: str, postgres_dsn: str) -> None:
    before = status()
    assert before.count("running") == 2, before
    result = subprocess.run(["make", "up"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "already running" in result.stderr
    assert "formatted" not in result.stderr and "initialised" not in result.stderr
    assert status() == before  # same pids, same ports
