"""Under CI=true an unreachable service ends the run at once, naming it and how to start
it; it is never skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("service", "variable", "address", "script"),
    [
        ("kafka", "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1", "infra/kafka/kafka.sh start"),
        ("postgres", "DRIFTLINE_POSTGRES__DSN", "postgresql://x:y@127.0.0.1:1/z", "infra/postgres/postgres.sh start"),
    ],
)
def test_unreachable_service_fails_the_run(service: str, variable: str, address: str, script: str) -> None:
    target = {
        "kafka": "tests/services/test_kafka_roundtrip.py::test_confluent_kafka_roundtrip",
        "postgres": "tests/services/test_postgres_schema.py::test_migrations_apply_once",
    }[service]
    env = {**os.environ, "CI": "true", variable: address}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", target],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert f"{service} is not reachable" in output and script in output
    assert "skipped" not in output
    assert "y@" not in output  # the password of the DSN is not printed
