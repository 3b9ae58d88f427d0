"""Fault-injection tools of tests/faults: private brokers, worker and retrainer
subprocesses, and readers that synchronise on high watermarks and committed offsets.

A private Kafka broker runs from the project's own `infra/kafka/kafka.sh` with its own
ports and state folder, so a test may stop it without touching the shared broker that
other tests use at the same time."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from bench import harness as h
from bench.harness import committed, high_watermarks, read_states, read_to_end

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = ROOT / "infra/kafka/kafka.sh"


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free now (held open together while chosen)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class PrivateKafka:
    """A broker of its own (ports, state folder) that a test may stop and start."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port, self.controller_port = free_ports(2)
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "DRIFTLINE_KAFKA_PORT": str(self.port),
                "DRIFTLINE_KAFKA_CONTROLLER_PORT": str(self.controller_port),
                "DRIFTLINE_STATE_DIR": str(self.state_dir),
                "DRIFTLINE_KAFKA_HEAP": os.environ.get("DRIFTLINE_FAULTS_KAFKA_HEAP", "-Xms256m -Xmx768m"),
                "DRIFTLINE_PYTHON": sys.executable}

    def _run(self, action: str) -> None:
        result = subprocess.run([str(KAFKA_SH), action], cwd=ROOT, env=self._env(), capture_output=True,
                                text=True, timeout=180)
        if result.returncode != 0:
            raise RuntimeError(f"kafka.sh {action} (port {self.port}) failed:\n{result.stderr[-3000:]}")

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop")

    def pid(self) -> int | None:
        pidfile = self.state_dir / "kafka" / "kafka.pid"
        return int(pidfile.read_text()) if pidfile.exists() else None


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def events_seen(bootstrap: str, app_id: str) -> dict[str, int]:
    return {m: s.events_seen for m, s in read_states(bootstrap, app_id).items()}


def triggers(bootstrap: str, topic: str) -> dict[str, dict]:
    """The triggers of a requests topic by trigger_id, without the time they were
    published (a trigger published again after a crash carries the same id)."""
    out: dict[str, dict] = {}
    for message in read_to_end(bootstrap, topic):
        request = json.loads(message.value())
        request.pop("created_at", None)
        previous = out.setdefault(request["trigger_id"], request)
        assert previous == request, f"trigger {request['trigger_id']} published twice with different contents"
    return out


def produce_located(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]]
                    ) -> list[tuple[int, int]]:
    """(key, value) records, keys and values as bytes (None: none), in order; returns
    where each landed, (partition, offset), from the broker's acknowledgements."""
    producer = h.producer(bootstrap)
    located: list[tuple[int, int] | None] = []
    errors: list[str] = []

    def delivered(i: int):
        def report(error, message) -> None:
            if error is not None:
                errors.append(str(error))
            else:
                located[i] = (message.partition(), message.offset())
        return report

    for i, (key, value) in enumerate(messages):
        located.append(None)
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=delivered(i))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0 and not errors, errors[:5]
    assert all(where is not None for where in located)
    return located  # type: ignore[return-value]


def caught_up(bootstrap: str, group: str, topic: str) -> bool:
    """The group has committed every record of `topic` that exists now."""
    ends = high_watermarks(bootstrap, topic)
    done = committed(bootstrap, group, topic, ends)
    return all(done[p] >= end for p, end in ends.items() if end > 0)
