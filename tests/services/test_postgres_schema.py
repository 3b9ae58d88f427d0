"""The migrations give the design document's table, and its four example queries run on
it unchanged."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from psycopg.types.json import Jsonb

from schemas.migrate import apply_migrations, available_migrations

pytestmark = pytest.mark.services

DESIGN_INDEXES = {
    "idx_retraining_severity",
    "idx_retraining_trigger_type",
    "idx_retraining_triggered_at",
    "idx_retraining_execution_successful",
}

# The design document's queries, character for character.
FIND_ALL = """SELECT * FROM model_retraining_events 
ORDER BY triggered_at DESC;"""
RECENT = """SELECT 
    triggered_at, 
    severity, 
    trigger_type,
    execution_successful,
    improvement_r2_percent
FROM model_retraining_events
WHERE triggered_at > NOW() - INTERVAL '7 days'
ORDER BY triggered_at DESC;"""
FREQUENCY = """SELECT 
    trigger_type,
    COUNT(*) as frequency,
    AVG(CAST(execution_successful AS INT)) * 100 as success_rate
FROM model_retraining_events
GROUP BY trigger_type;"""
IMPROVEMENT = """SELECT 
    triggered_at,
    improvement_r2_percent,
    improvement_rmse_percent,
    improvement_accuracy_percent
FROM model_retraining_events
WHERE execution_successful = TRUE
ORDER BY triggered_at DESC;"""

INSERT = """
INSERT INTO model_retraining_events (
    trigger_id, model_id, model_version, trigger_type, severity, drift_type,
    trigger_reason, trigger_metrics, execution_attempted, execution_successful,
    improvement_r2_percent, improvement_rmse_percent, improvement_accuracy_percent,
    triggered_at
) VALUES (%s, 'm1', 'v1', %s, %s, %s, 'reason', %s, TRUE, %s, %s, %s, %s, %s)
"""


def insert_rows(db: psycopg.Connection) -> None:
    now = dt.datetime.now()
    rows = [
        ("t-1", "data_drift", "HIGH", True, 4.0, 3.0, None, now - dt.timedelta(days=1)),
        ("t-2", "data_drift", "MEDIUM", False, None, None, None, now - dt.timedelta(days=2)),
        ("t-3", "concept_drift", "CRITICAL", True, 10.0, 8.0, 2.5, now - dt.timedelta(hours=1)),
        ("t-4", "concept_drift", "LOW", True, 1.0, 0.5, None, now - dt.timedelta(days=30)),
    ]
    for trigger_id, kind, severity, ok, r2, rmse, acc, at in rows:
        db.execute(INSERT, (trigger_id, kind, severity, kind, Jsonb({"ks": 0.2}), ok, r2, rmse, acc, at))


def test_migrations_create_the_design_table(db: psycopg.Connection, db_schema: str) -> None:
    indexes = {
        row[0]
        for row in db.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'model_retraining_events'",
            (db_schema,),
        )
    }
    assert DESIGN_INDEXES <= indexes
    versions = [row[0] for row in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m.version for m in available_migrations()]


def test_migrations_apply_once(db: psycopg.Connection, db_schema: str) -> None:
    assert apply_migrations(db, db_schema) == []


def test_design_queries_run_unchanged(db: psycopg.Connection) -> None:
    insert_rows(db)
    assert len(db.execute(FIND_ALL).fetchall()) == 4
    assert [row[0] for row in db.execute(FIND_ALL)] == [3, 1, 2, 4]  # ids, newest first

    recent = db.execute(RECENT).fetchall()
    assert [(r[1], r[2]) for r in recent] == [
        ("CRITICAL", "concept_drift"),
        ("HIGH", "data_drift"),
        ("MEDIUM", "data_drift"),
    ]

    frequency = {r[0]: (r[1], float(r[2])) for r in db.execute(FREQUENCY)}
    assert frequency == {"data_drift": (2, 50.0), "concept_drift": (2, 100.0)}

    improvement = db.execute(IMPROVEMENT).fetchall()
    assert [r[1:] for r in improvement] == [(10.0, 8.0, 2.5), (4.0, 3.0, None), (1.0, 0.5, None)]


def test_trigger_id_is_unique(db: psycopg.Connection) -> None:
    insert_rows(db)
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute(INSERT, ("t-1", "data_drift", "HIGH", "x", Jsonb({}), True, 0, 0, 0, dt.datetime.now()))
