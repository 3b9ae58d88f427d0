"""Worker throughput against a bare confluent-kafka consumer, and trigger latency.

`python -m bench.worker_bench [--events N] [--bootstrap HOST:PORT]`: produces N feature
events (10 columns, JSON, 8 models) to fresh topics, times `driftline worker` from start
to having processed them all (every model's saved state holds its events), times a bare
confluent-kafka consumer that only decodes the same JSON (msgspec, the same model), and
prints events per second and the ratio. Then produces at --rate events/s a stream that
drifts, and prints p50/p99 of the time from producing the event at which a trigger fired
to the trigger arriving on retrain-requests.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer

from schemas.messages import FeatureEvent, decode
from tests.streams import harness as h

MODELS = [f"bench-{i}" for i in range(8)]


def bare_consumer_rate(bootstrap: str, topic: str, total: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bare-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen, started = 0, None
    while seen < total:
        for message in consumer.consume(10_000, timeout=1.0):
            if message.error() is None:
                started = started or time.perf_counter()
                decode(FeatureEvent, message.value())
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return total / elapsed


def worker_rate(bootstrap: str, directory: Path, name: str, total: int, reference: Path) -> tuple[float, float]:
    config = h.write_config(directory, bootstrap, name, MODELS, reference, batch_size=20_000)
    log = directory / "worker.log"
    started = time.perf_counter()
    proc = h.start_worker(config, log)
    try:
        def done() -> bool:
            states = h.read_states(bootstrap, name, seconds=0.3)
            return sum(h.events_seen(s) for s in states.values()) >= total
        h.wait_until(done, 1800, "worker processed everything")
        elapsed = time.perf_counter() - started
        first = _first_batch_seconds(log)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return total / elapsed, elapsed - first


def _first_batch_seconds(log: Path) -> float:
    for line in log.read_text().splitlines():
        if '"event": "processing"' in line:
            return json.loads(line)["seconds_since_start"]
    return 0.0


def trigger_latency(bootstrap: str, directory: Path, name: str, reference: Path, rate: int,
                    seconds: float) -> list[float]:
    topics = h.create_topics(bootstrap, name)
    config = h.write_config(directory, bootstrap, name, ["lat"], reference, batch_within_seconds=0.05,
                            detector={"cooldown": 2000, "ks_window": 500, "ks_stride": 250})
    proc = h.start_worker(config, directory / "latency-worker.log")
    producer = h.producer(bootstrap)
    requests = h.TopicReader(bootstrap, topics["retrain_requests_topic"])
    sent_at: dict[int, float] = {}
    rng = np.random.default_rng(0)
    try:
        time.sleep(5)  # the worker joins its group before the clock starts
        n = int(rate * seconds)
        start = time.perf_counter()
        for i in range(n):
            values = rng.normal(size=len(h.COLUMNS))
            if (i // 3000) % 2 == 1:  # drift on and off in blocks of 3,000 events
                values[2] += 2.0
            target = start + i / rate
            while time.perf_counter() < target:
                producer.poll(0)
            producer.produce(topics["features_topic"], key=b"lat", value=h.feature_event("lat", i, values))
            sent_at[i] = time.time()
        producer.flush(30)
        requests.poll(3.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    latencies = []
    for message in requests.messages:
        request = json.loads(message.value())
        end = request["window"]["features"]["ranges"][0]["end"]
        latencies.append(message.timestamp()[1] / 1000 - sent_at[end])
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.worker_bench")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        reference = h.write_reference(directory / "reference.csv")
        name = f"bench_{uuid.uuid4().hex[:8]}"
        topics = h.create_topics(args.bootstrap, name)
        per_model = args.events // len(MODELS)
        total = per_model * len(MODELS)
        t = time.perf_counter()
        h.produce(args.bootstrap, topics["features_topic"], h.feature_stream(MODELS, per_model))
        print(f"produced {total} events in {time.perf_counter() - t:.1f}s", flush=True)
        bare = bare_consumer_rate(args.bootstrap, topics["features_topic"], total)
        print(f"bare confluent-kafka consumer + msgspec decode: {bare:,.0f} events/s", flush=True)
        worker, steady = worker_rate(args.bootstrap, directory, name, total, reference)
        print(f"driftline worker, start to all processed: {worker:,.0f} events/s "
              f"({total / steady:,.0f} events/s after its first batch); ratio {worker / bare:.2f}", flush=True)
        latencies = trigger_latency(args.bootstrap, directory, f"{name}_lat", reference, args.rate,
                                    args.latency_seconds)
        if latencies:
            p50, p99 = np.percentile(latencies, [50, 99])
            print(f"trigger latency at {args.rate} events/s over {len(latencies)} triggers: "
                  f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms", flush=True)
        else:
            print("trigger latency: no trigger arrived", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
