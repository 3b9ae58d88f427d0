"""Secrets never reach the logs: not under a secret's key, not nested, not in a traceback."""

from __future__ import annotations

import json

from schemas.logs import configure_logging, get_logger

PASSWORD = "s3cr3t-pa55"
URL = f"postgresql://driftline:{PASSWORD}@db:5432/driftline"


def test_secrets_are_redacted_at_any_depth_and_in_tracebacks(capsys):
    configure_logging("INFO")
    log = get_logger("test")
    log.info("flat", dsn=URL, sasl_password=PASSWORD, note=f"see {URL}")
    log.info("nested", settings={"postgres": {"dsn": URL}, "brokers": [URL]})
    try:
        raise ConnectionError(f"cannot connect to {URL}")
    except ConnectionError as error:
        log.error("failed", exc_info=error)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["flat", "nested", "failed"]
    assert "ConnectionError" in lines[2]["exception"]
    for line in lines:
        assert PASSWORD not in json.dumps(line)
