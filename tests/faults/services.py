"""Fault-injection tools of tests/faults: private brokers, worker and retrainer
subprocesses, and readers that synchronise on high watermarks and committed offsets.

A private Kafka broker runs from the project's own `infra/kafka/kafka.sh` with its own
ports and state folder, so a test may stop it without touching the shared broker that
other tests use at the same time."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from bench import harness as h

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


class Procs:
    """Subprocesses of one test (workers, retrainers); killed at the end whatever happened."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[subprocess.Popen] = []

    def worker(self, config: Path, **env: str) -> subprocess.Popen:
        log = self.directory / f"worker-{len(self.procs)}.log"
        return self._add(h.start_worker(config, log, **env), log)

    def retrainer(self, config: Path, **env: str) -> subprocess.Popen:
        log = self.directory / f"retrainer-{len(self.procs)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "--config", str(config), "retrainer", "--no-metrics"],
            cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, **env})
        return self._add(proc, log)

    def _add(self, proc: subprocess.Popen, log: Path) -> subprocess.Popen:
        proc.log = log  # type: ignore[attr-defined]
        proc.killed = False  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def alive(self) -> None:
        for proc in self.procs:
            if proc.killed:  # type: ignore[attr-defined]
                continue
            if proc.poll() is not None:
                tail = proc.log.read_text(errors="replace")[-4000:]  # type: ignore[attr-defined]
                raise AssertionError(f"{proc.log.name} exited with {proc.returncode}:\n{tail}")  # type: ignore[attr-defined]

    def kill9(self, proc: subprocess.Popen) -> None:
        proc.killed = True  # type: ignore[attr-defined]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def wait_until(condition: Callable[[], object], deadline_seconds: float, what: str,
               alive: Callable[[], None] | None = None, *, every: float = 0.2) -> object:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if alive:
            alive()
        time.sleep(every)
    raise AssertionError(f"{what}: not reached in {deadline_seconds}s")


def _consumer(bootstrap: str, **extra: object) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"faults-reader-{time.time_ns()}",
                     "enable.auto.commit": False, **extra})


def _ends(consumer: Consumer, topic: str, timeout: float = 10) -> dict[int, int]:
    ends = {}
    for p in consumer.list_topics(topic, timeout=timeout).topics[topic].partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
        if high > low:
            ends[p] = high
    return ends


def read_to_end(bootstrap: str, topic: str, deadline_seconds: float = 60.0) -> list:
    """Every record of `topic` up to the high watermarks it has when called."""
    consumer = _consumer(bootstrap, **{"enable.partition.eof": True})
    try:
        deadline = time.monotonic() + deadline_seconds
        while True:
            try:
                ends = _ends(consumer, topic)
                break
            except KafkaException as error:  # a topic just created has no leader yet
                if not _transient(error.args[0]) or time.monotonic() > deadline:
                    raise
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        messages = []
        while ends:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic} not read to its high watermarks in {deadline_seconds}s")
            for message in consumer.consume(10_000, timeout=1.0):
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"reading {topic}: {error}")
                if error is None:
                    messages.append(message)
                if message.offset() is not None and message.offset() >= ends.get(message.partition(), 0) - 1:
                    ends.pop(message.partition(), None)
        return messages
    finally:
        consumer.close()


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = _consumer(bootstrap)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The group's committed offset per partition (-1: none)."""
    consumer = _consumer(bootstrap, **{"group.id": group})
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                offsets = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
                return {tp.partition: tp.offset if tp.offset >= 0 else -1 for tp in offsets}
            except KafkaException as error:  # a broker just started: its coordinator is loading
                if not _transient(error.args[0]) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()


_TRANSIENT = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
              KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
              KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION}


def _transient(error: KafkaError) -> bool:
    return error.retriable() or error.code() in _TRANSIENT


def read_states(bootstrap: str, app_id: str) -> dict:
    """The latest saved state per model, from the monitor's state topic (to its end)."""
    import msgspec

    from schemas.settings import MonitorSettings
    from streams.model_state import ModelState

    decoder = msgspec.msgpack.Decoder(ModelState)
    topic = MonitorSettings(app_id=app_id).state_topic
    states = {}
    try:
        messages = read_to_end(bootstrap, topic)
    except KafkaException:
        return {}  # not created yet
    for message in messages:
        if message.value():
            states[message.key().decode()] = decoder.decode(message.value())
    return states


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


def with_inputs(config: Path, app: str, inputs: str) -> Path:
    """Points a run's config at shared input topics, keeping its own outputs."""
    text = config.read_text()
    for role in ("features", "predictions", "actuals", "labelled"):
        text = text.replace(f'{role}_topic = "{app}.{role}"', f'{role}_topic = "{inputs}.{role}"')
    config.write_text(text)
    return config


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
