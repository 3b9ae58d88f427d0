"""The repository's connection handling, against the real PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from retrain.repository import RetrainEventRepository

pytestmark = pytest.mark.services


def test_a_connection_whose_set_up_fails_is_closed_not_leaked(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[psycopg.Connection] = []
    real_connect = psycopg.connect

    def connect(*args, **kwargs):
        connection = real_connect(*args, **kwargs)
        opened.append(connection)
        real_execute = connection.execute

        def execute(query, *rest, **kw):
            if "TIME ZONE" in str(query):
                raise psycopg.errors.InvalidParameterValue("injected: the session cannot be set up")
            return real_execute(query, *rest, **kw)

        connection.execute = execute
        return connection

    monkeypatch.setattr(psycopg, "connect", connect)
    repository = RetrainEventRepository(postgres_dsn, "public", connect_timeout_seconds=5)
    for _ in range(2):
        with pytest.raises(psycopg.Error, match="injected"):
            repository.find("t-none")
    assert len(opened) == 2 and all(connection.closed for connection in opened)
