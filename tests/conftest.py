"""Fixtures for tests that need the real Kafka broker and PostgreSQL.

Locally, a service that is not running is started with the project's own scripts. Under
CI=true a service that cannot be reached stops the run at once, naming the service and
how to start it: it is never skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from schemas.migrate import apply_migrations
from schemas.logs import redact_text
from schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "infra"))
from probe import wait_until_ready  # noqa: E402

SERVICES = {
    "kafka": ROOT / "infra/kafka/kafka.sh",
    "postgres": ROOT / "infra/postgres/postgres.sh",
}


def _ensure_running(service: str, address: str) -> None:
    if wait_until_ready(service, address, timeout=3) is None:
        return
    script = SERVICES[service]
    shown = redact_text(address)
    if os.environ.get("CI") == "true":
        pytest.exit(
            f"{service} is not reachable at {shown}; start it with "
            f"`{script.relative_to(ROOT)} start` (or `make up`)",
            returncode=3,
        )
    subprocess.run([str(script), "start"], check=True, cwd=ROOT)
    error = wait_until_ready(service, address, timeout=60)
    if error is not None:
        pytest.exit(f"{service} did not start at {shown}: {redact_text(error)}", returncode=3)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.load()


@pytest.fixture(scope="session")
def kafka_bootstrap(settings: Settings) -> str:
    _ensure_running("kafka", settings.kafka.bootstrap_servers)
    return settings.kafka.bootstrap_servers


@pytest.fixture(scope="session")
def postgres_dsn(settings: Settings) -> str:
    dsn = settings.postgres.dsn.get_secret_value()
    _ensure_running("postgres", dsn)
    return dsn


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses: for topics, consumer groups, app ids and schemas."""
    stem = "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:30]
    return f"t_{stem}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def db_schema(postgres_dsn: str, unique_name: str) -> Iterator[str]:
    """A fresh schema with the migrations applied, dropped after the test."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        apply_migrations(conn, unique_name)
    yield unique_name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(unique_name)))


@pytest.fixture
def db(postgres_dsn: str, db_schema: str) -> Iterator[psycopg.Connection]:
    """A connection whose search_path is the test's own schema."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(db_schema)))
        yield conn
