"""The real-broker harness shared by the benches and the tests: reference files, config
files, workers as subprocesses, producing and reading topics with deadlines."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.settings import MonitorSettings

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [f"f{i}" for i in range(10)]
PARTITIONS = 4
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def write_reference(path: Path, *, rows: int = 3000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(COLUMNS))), columns=COLUMNS)
    frame["actual"] = frame["f0"] * 2 + rng.normal(scale=0.1, size=rows)
    frame["prediction"] = frame["f0"] * 2
    frame.to_csv(path, index=False)
    return path


def topics_for(name: str) -> dict[str, str]:
    roles = ("features", "predictions", "actuals", "labelled", "retrain_requests",
             "retrain_events", "dead_letter")
    return {f"{role}_topic": f"{name}.{role}" for role in roles}


def write_config(directory: Path, bootstrap: str, name: str, models: Iterable[str],
                 reference: Path, **monitor: object) -> Path:
    topics = topics_for(name)
    lines = ["[kafka]", f'bootstrap_servers = "{bootstrap}"']
    lines += [f'{k} = "{v}"' for k, v in topics.items()]
    detector = monitor.pop("detector", {"cooldown": 1_000_000, "ks_window": 500, "ks_stride": 250})
    monitor = {"app_id": name, "data_dir": str(directory / "state"), "metrics_port": 0,
               "partitions": PARTITIONS, **monitor}
    lines += ["", "[monitor]"]
    for key, value in monitor.items():
        lines.append(f"{key} = {json.dumps(value)}")
    lines += ["", "[detectors]"] + [f"{k} = {json.dumps(v)}" for k, v in detector.items()]
    for model in models:
        lines += ["", f'[models."{model}"]', f'reference_path = "{reference}"']
    path = directory / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def create_topics(bootstrap: str, name: str) -> dict[str, str]:
    topics = topics_for(name)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=PARTITIONS, replication_factor=1) for t in topics.values()])
    for future in futures.values():
        future.result(timeout=30)
    return topics


def start_worker(config: Path, log: Path, *, module: str = "streams.cli", **env: str) -> subprocess.Popen:
    """`driftline worker` (or a test module wrapping its command line) as a subprocess;
    named after its log in its consumer groups (workers of one group on this host must
    not share a name; a restart with the same log comes back as the same member)."""
    return subprocess.Popen(
        [sys.executable, "-m", module, "--config", str(config), "worker"],
        cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )


def producer(bootstrap: str, partitioner: str = "murmur2_random") -> Producer:
    # murmur2: the Java client's (and aiokafka's) partitioner, so every topic puts a
    # model in the same partition number.
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                     "linger.ms": 5, "partitioner": partitioner})


def feature_event(model: str, seq: int, values: np.ndarray, *, version: str = "1") -> bytes:
    return json.dumps({
        "schema_version": 1, "model_id": model, "model_version": version,
        "event_id": f"{model}-{seq}", "timestamp": (START + dt.timedelta(milliseconds=seq)).isoformat(),
        "features": {c: float(v) for c, v in zip(COLUMNS, values)},
    }).encode()


def feature_stream(models: list[str], per_model: int, *, drift_after: int | None = None,
                   drift_column: int = 3, shift: float = 1.5, seed: int = 1) -> list[tuple[str, bytes]]:
    """(model, value) in production order, models interleaved; after `drift_after`
    events per model, `drift_column` moves by `shift` standard deviations."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(len(models), per_model, len(COLUMNS)))
    if drift_after is not None:
        data[:, drift_after:, drift_column] += shift
    return [(m, feature_event(m, i, data[k, i])) for i in range(per_model) for k, m in enumerate(models)]


def produce(bootstrap: str, topic: str, messages: Iterable[tuple], *,
            partitioner: str = "murmur2_random") -> int:
    """(key, value) or (key, value, Kafka timestamp in ms), in order; waits for every ack."""
    p, count = producer(bootstrap, partitioner), 0
    for key, value, *timestamp in messages:
        extra = {"timestamp": timestamp[0]} if timestamp and timestamp[0] is not None else {}
        while True:
            try:
                p.produce(topic, key=key.encode() if key else None, value=value, **extra)
                break
            except BufferError:
                p.poll(0.1)
        count += 1
        if count % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    return count


class TopicReader:
    """Reads a topic from the beginning, without a consumer group's committed state."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}-{time.time_ns()}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.consumer.subscribe([topic])
        self.messages: list = []

    def poll(self, seconds: float = 0.5) -> list:
        for message in self.consumer.consume(10_000, timeout=seconds):
            if message.error() is None:
                self.messages.append(message)
        return self.messages

    def values(self) -> list[dict]:
        return [json.loads(m.value()) for m in self.messages]

    def wait_for(self, condition: Callable[[list], bool], deadline_seconds: float, *,
                 alive: Callable[[], None] | None = None) -> list:
        deadline = time.monotonic() + deadline_seconds
        while time.monotonic() < deadline:
            self.poll()
            if condition(self.messages):
                return self.messages
            if alive:
                alive()
        raise AssertionError(f"condition not met in {deadline_seconds}s; have {len(self.messages)} messages")

    def close(self) -> None:
        self.consumer.close()


def committed_total(bootstrap: str, app_id: str, topic: str, *, group: str | None = None) -> int:
    """Sum of the committed offsets on `topic` of the monitor's group (how far the worker
    has got), or of `group` (the join's is the app id)."""
    from confluent_kafka import TopicPartition

    group = group or MonitorSettings(app_id=app_id).monitor_group_id
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return sum(max(tp.offset, 0) for tp in offsets)
    except KafkaException as error:
        if _transient(error.args[0]):  # the group's coordinator is still loading: none yet
            return 0
        raise
    finally:
        consumer.close()


def _reader(bootstrap: str, **extra: object) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time_ns()}",
                     "enable.auto.commit": False, **extra})


_TRANSIENT = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
              KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
              KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION,
              KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION}


def _transient(error: KafkaError) -> bool:
    """A broker just started or a topic just created: ask again."""
    return error.retriable() or error.code() in _TRANSIENT


def _ends(consumer: Consumer, topic: str) -> dict[int, int]:
    """The high watermark of each of `topic`'s partitions that holds records."""
    from confluent_kafka import TopicPartition

    ends = {}
    for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if high > low:
            ends[p] = high
    return ends


def read_to_end(bootstrap: str, topic: str, deadline_seconds: float = 60.0) -> list:
    """Every record of `topic` up to the high watermarks it has when called (no group,
    no fixed wait: done when each partition's last offset has been read)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer = _reader(bootstrap, **{"enable.partition.eof": True})
    try:
        deadline = time.monotonic() + deadline_seconds
        while True:
            try:
                ends = _ends(consumer, topic)
                break
            except KafkaException as error:
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
    """Each partition's high watermark: how many records it has ever been given."""
    from confluent_kafka import TopicPartition

    consumer = _reader(bootstrap)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The group's committed offset per partition (-1: none)."""
    from confluent_kafka import TopicPartition

    consumer = _reader(bootstrap, **{"group.id": group})
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


def read_states(bootstrap: str, app_id: str) -> dict[str, "ModelState"]:
    """The latest saved state per model, from the monitor's state topic."""
    import msgspec

    from streams.model_state import ModelState

    decoder = msgspec.msgpack.Decoder(ModelState)
    states = {}
    for message in read_to_end(bootstrap, MonitorSettings(app_id=app_id).state_topic):
        if message.value():
            states[message.key().decode()] = decoder.decode(message.value())
    return states


def events_seen(state) -> int:
    """A saved state's event count; -1 for None (no state saved yet)."""
    return -1 if state is None else state.events_seen


def wait_until(condition: Callable[[], object], deadline_seconds: float, what: str,
               alive: Callable[[], None] | None = None, *, every: float = 0.2) -> object:
    """The condition's first true value, polled until the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if alive:
            alive()
        time.sleep(every)
    raise AssertionError(f"{what}: not reached in {deadline_seconds}s")


def with_inputs(config: Path, app: str, inputs: str) -> Path:
    """Points a run's config at shared input topics, keeping its own outputs."""
    text = config.read_text()
    for role in ("features", "predictions", "actuals", "labelled"):
        text = text.replace(f'{role}_topic = "{app}.{role}"', f'{role}_topic = "{inputs}.{role}"')
    config.write_text(text)
    return config


class Processes:
    """Worker and retrainer subprocesses of one test or bench; killed at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[subprocess.Popen] = []

    def worker(self, config: Path, **env: str) -> subprocess.Popen:
        log = self.directory / f"worker-{len(self.procs)}.log"
        return self._add(start_worker(config, log, **env), log)

    def retrainer(self, config: Path, **env: str) -> subprocess.Popen:
        log = self.directory / f"retrainer-{len(self.procs)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "--config", str(config), "retrainer", "--no-metrics"],
            cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT,
            env={**os.environ, **env})
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


def scrape(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batch_records(stream: list[tuple[str, bytes]], size: int) -> list[tuple[str, bytes]]:
    """The same events as batch records: per model, `size` consecutive events in one
    JSON array (the last one shorter), in the order each batch fills up."""
    pending: dict[str, list[bytes]] = {}
    out = []
    for model, value in stream:
        events = pending.setdefault(model, [])
        events.append(value)
        if len(events) == size:
            out.append((model, b"[" + b",".join(events) + b"]"))
            pending[model] = []
    out += [(model, b"[" + b",".join(events) + b"]") for model, events in pending.items() if events]
    return out
