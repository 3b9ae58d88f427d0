"""Readiness probes for the local services, used by the start scripts and the tests.

    python infra/probe.py kafka 127.0.0.1:9092 [--timeout S]
    python infra/probe.py postgres postgresql://... [--timeout S]

Exit status 0 when the service answers, 1 (with the reason on stderr) when it does not.
"""

from __future__ import annotations

import argparse
import sys
import time


def kafka_ready(bootstrap: str, timeout: float) -> str | None:
    from confluent_kafka.admin import AdminClient

    # log_level 0: a broker that is still starting is the expected case, not worth a line.
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000, "log_level": 0})
    try:
        admin.list_topics(timeout=timeout)
    except Exception as exc:  # KafkaException carries the broker's reason
        return str(exc)
    return None


def postgres_ready(dsn: str, timeout: float) -> str | None:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=max(1, int(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip()
    return None


PROBES = {"kafka": kafka_ready, "postgres": postgres_ready}


def wait_until_ready(service: str, address: str, timeout: float) -> str | None:
    """Retries the probe until it answers or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        error = PROBES[service](address, max(1.0, min(5.0, remaining)))
        if error is None or remaining <= 0:
            return error
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("service", choices=sorted(PROBES))
    parser.add_argument("address")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    error = wait_until_ready(args.service, args.address, args.timeout)
    if error is not None:
        from schemas.logs import redact_text

        shown = redact_text(f"{args.address}: {error}")
        print(f"{args.service} at {shown} is not ready", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
