"""`model_retraining_events` in PostgreSQL: the consumer's only SQL.

Every statement is parameterised; the schema comes from settings and is set as the
connection's search_path. Timestamps are stored in UTC. A lost connection is reopened on
the next call; the caller retries with backoff (see `retrain.backoff`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from retrain.outcome import METRIC_COLUMNS, WINDOW_COLUMNS

COLUMNS = (
    "trigger_id",
    "model_id",
    "model_version",
    "trigger_type",
    "severity",
    "drift_type",
    "trigger_reason",
    "trigger_metrics",
    "execution_attempted",
    "execution_status",
    "execution_successful",
    "execution_metrics",
    "retraining_model_version",
    *METRIC_COLUMNS,
    "triggered_at",
    "execution_completed_at",
    *WINDOW_COLUMNS,
)
JSON_COLUMNS = {"trigger_metrics", "execution_metrics", *WINDOW_COLUMNS}

INSERT = sql.SQL("INSERT INTO model_retraining_events ({}) VALUES ({}) ON CONFLICT (trigger_id) DO NOTHING").format(
    sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), sql.SQL(", ").join(sql.Placeholder(c) for c in COLUMNS)
)
FIND = "SELECT * FROM model_retraining_events WHERE trigger_id = %s"
COUNT_START = """
INSERT INTO retrain_trigger_starts (trigger_id, model_id, starts, last_started_at)
VALUES (%s, %s, 1, now() AT TIME ZONE 'UTC')
ON CONFLICT (trigger_id) DO UPDATE
    SET starts = retrain_trigger_starts.starts + 1, last_started_at = EXCLUDED.last_started_at
RETURNING starts
"""
FORGET_STARTS = "DELETE FROM retrain_trigger_starts WHERE trigger_id = %s"
LAST_ATTEMPT = "SELECT max(triggered_at) FROM model_retraining_events WHERE model_id = %s AND execution_attempted"


class RetrainEventRepository:
    def __init__(self, dsn: str, schema: str, connect_timeout_seconds: int) -> None:
        self._dsn = dsn
        self._schema = schema
        self._connect_timeout = connect_timeout_seconds
        self._connection: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        if self._connection is None or self._connection.closed:
            connection = psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=self._connect_timeout, row_factory=dict_row
            )
            try:
                connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema)))
                connection.execute("SET TIME ZONE 'UTC'")
            except BaseException:
                connection.close()  # not kept, so closed here: nothing else would
                raise
            self._connection = connection
        return self._connection

    def _execute(self, query: Any, params: Any) -> psycopg.Cursor:
        try:
            return self._connect().execute(query, params)
        except psycopg.Error:
            self.close()  # a broken connection is reopened on the next call
            raise

    def find(self, trigger_id: str) -> dict[str, Any] | None:
        return self._execute(FIND, (trigger_id,)).fetchone()

    def last_attempt_at(self, model_id: str) -> dt.datetime | None:
        """When the model's last attempted retrain was triggered (UTC), for the cooldown."""
        moment = self._execute(LAST_ATTEMPT, (model_id,)).fetchone()["max"]
        return moment.replace(tzinfo=dt.timezone.utc) if moment else None

    def count_start(self, trigger_id: str, model_id: str) -> int:
        """Records that the trigger's handling begins; returns how many times it has."""
        return self._execute(COUNT_START, (trigger_id, model_id)).fetchone()["starts"]

    def forget_starts(self, trigger_id: str) -> None:
        self._execute(FORGET_STARTS, (trigger_id,))

    def insert(self, row: dict[str, Any]) -> bool:
        """Writes the row once; False when the trigger was already recorded."""
        params = {c: Jsonb(row[c]) if c in JSON_COLUMNS else row[c] for c in COLUMNS}
        return self._execute(INSERT, params).rowcount == 1

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
