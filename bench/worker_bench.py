"""Worker throughput against a bare confluent-kafka consumer, and trigger latency.

`python -m bench.worker_bench [--quick] [--events N] [--mode single|batched|both]
[--bootstrap HOST:PORT]`: produces N feature events (10 columns, JSON, 8 models) to
fresh topics; times a bare confluent-kafka consumer that only decodes the same JSON
(msgspec, the same model); times `driftline worker` on them; prints events per second,
the ratio, the saved state per model, and the recovery time of a restart after
`kill -9`. Then produces at --rate events/s a stream that drifts on and off and prints
p50/p99 of the time from producing the event at which a trigger fired to the trigger
arriving on retrain-requests. `--quick`: 100,000 events, 10 s of latency.

The worker's rate is taken from its first commit to its last, over the events
committed in between (the process start, ~3 s of imports, group join and reference
loading, and the first batch are outside the interval; "from the process start" is
printed too). Both programs' CPU seconds are measured as well (the bench process for
the bare consumer, /proc for the worker, every thread): on a shared machine the
wall-clock ratio depends on what else runs, the CPU ratio much less.

`--mode batched` (or `both`, the default) runs the throughput part again with the same
events in batch records (`--records-per-batch`, 1,000 events of one model per record, a
JSON array; see schemas/README.md), against a bare consumer decoding the same records
(one msgspec call per record); rates are events/s in both modes, and the worker's
micro-batches hold the same number of events in both (its batch_size counts records).
Its last line, `worker / (decode + detectors): single X, batch Y`, states the worker's
target against its two irreducible parts: its events per CPU second (steady state,
every thread) over 1 / (decoding into columns + the detectors), both parts timed alone
in this process on the same records (`bench.monitor_loop_bench.parts`); target >= 0.8.
Fetching alone (a consumer of the same records that decodes nothing, CPU per event from
its first call to its last, with the worker's collector settings) is printed too: the worker pays it beyond its two parts, and
for 1-event records it is of the order of decoding them, so the line before the last,
`worker / (fetch + decode + detectors)`, states what is left to the worker's own code.
The latency producer sends on a 2 ms tick and sleeps in between (a busy-waiting
producer took a core from the worker on a 2-core machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas.messages import FeatureEvent, decode, decode_batch
from schemas.settings import MonitorSettings
from bench import harness as h
from bench.monitor_loop_bench import parts, parts_line
from streams.worker import tune_gc

MODELS = [f"bench-{i}" for i in range(8)]
DEADLINE_SECONDS = 1800


def bare_consumer_rate(bootstrap: str, topic: str, total: int, *, batched: bool = False) -> tuple[float, float]:
    """Events/s of a plain consumer decoding every message, from its first message
    (`batched`: every record is a JSON array of events, decoded in one call), and its
    events per CPU second (this process: the decoding thread and librdkafka's)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bare-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen, started, cpu = 0, None, 0.0
    deadline = time.monotonic() + DEADLINE_SECONDS
    while seen < total and time.monotonic() < deadline:
        for message in consumer.consume(10_000, timeout=1.0):
            if message.error() is None:
                if started is None:
                    started, cpu = time.perf_counter(), time.process_time()
                if batched:
                    seen += len(decode_batch(FeatureEvent, message.value()))
                else:
                    decode(FeatureEvent, message.value())
                    seen += 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    consumer.close()
    return total / elapsed, total / max(cpu, 1e-9)


def fetch_us_per_event(bootstrap: str, topic: str, records: int, per_call: int, events_per_record: int) -> float:
    """CPU microseconds per event (this process, every thread) of a consumer that only
    fetches the topic's `records` records, `per_call` at a time, no decoding: what the
    worker pays beyond its two parts. Its fetch size and its collector settings are the
    worker's (confluent-kafka's messages are tracked by the cyclic collector, which at
    Python's default threshold costs about as much as the fetch itself); like the worker's
    rate, from its first records to its last (NaN: all came in the first call)."""
    threshold = gc.get_threshold()
    tune_gc(MonitorSettings())
    try:
        return _fetch_us_per_event(bootstrap, topic, records, per_call, events_per_record)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def _fetch_us_per_event(bootstrap: str, topic: str, records: int, per_call: int, events_per_record: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fetch-{uuid.uuid4().hex}",
                         "enable.auto.commit": False,
                         "max.partition.fetch.bytes": MonitorSettings().consumer_max_fetch_size})
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    seen, first, cpu = 0, 0, 0.0
    deadline = time.monotonic() + DEADLINE_SECONDS
    while seen < records and time.monotonic() < deadline:
        seen += sum(message.error() is None for message in consumer.consume(per_call, timeout=1.0))
        if seen and not first:
            first, cpu = seen, time.process_time()
    cpu = time.process_time() - cpu
    consumer.close()
    return cpu / ((seen - first) * events_per_record) * 1e6 if seen > first else float("nan")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, all its threads (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_committed(bootstrap: str, group: str, topic: str, total: int, proc: subprocess.Popen,
                    log: Path) -> dict[str, float]:
    """Waits until the group's committed offsets on `topic` sum to `total`; returns the
    seconds to the first commit and to the last, the records committed at the first
    sighting, and the worker's CPU seconds at both (steady state: between the two)."""
    started = time.perf_counter()
    first: dict[str, float] = {}
    while True:
        committed = h.committed_total(bootstrap, group, topic)
        if committed and not first:
            first = {"first_seconds": time.perf_counter() - started, "first_records": committed,
                     "first_cpu": _cpu_seconds(proc.pid)}
        if committed >= total:
            break
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.perf_counter() - started > DEADLINE_SECONDS:
            raise RuntimeError("worker did not process every event in time")
        time.sleep(0.05)
    return {**first, "seconds": time.perf_counter() - started, "cpu": _cpu_seconds(proc.pid)}


def worker_run(bootstrap: str, directory: Path, name: str, topic: str, total: int,
               reference: Path, *, records: int | None = None, records_per_batch: int = 0,
               **monitor: object) -> dict[str, float]:
    """Throughput from start to all committed (`total` events in `records` records);
    then kill -9, 10,000 more events, restart: the recovery time (start to first
    processed batch, the worker's own figure)."""
    records = records or total
    config = h.write_config(directory, bootstrap, name, MODELS, reference, **monitor)
    log = directory / f"{name}-worker.log"
    started = time.perf_counter()
    proc = h.start_worker(config, log)
    result: dict[str, float] = {}
    try:
        waited = _wait_committed(bootstrap, name, topic, records, proc, log)
        elapsed = time.perf_counter() - started
        result["rate"] = total / elapsed
        result["first_batch_seconds"] = _first_batch_seconds(log)
        # Steady state: from the first commit seen to the last, the events committed in
        # between (not the first batch's, whose processing time is not in the interval).
        per_record = total / records
        steady_events = (records - waited["first_records"]) * per_record
        result["steady_events"] = steady_events
        result["steady_rate"] = steady_events / max(waited["seconds"] - waited["first_seconds"], 1e-9)
        result["steady_cpu_rate"] = steady_events / max(waited["cpu"] - waited["first_cpu"], 1e-9)
        states = h.TopicReader(bootstrap, MonitorSettings(app_id=name).state_topic)
        states.poll(2.0)
        sizes = [len(m.value()) for m in states.messages if m.value()]
        states.close()
        result["state_bytes"] = float(np.mean(sizes)) if sizes else 0.0
        result["state_messages"] = float(len(sizes))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        extra = h.feature_stream(MODELS, 10_000 // len(MODELS), seed=99)
        if records_per_batch:
            extra = h.batch_records(extra, records_per_batch)
        h.produce(bootstrap, topic, extra)
        relog = directory / f"{name}-worker-restart.log"
        restarted = time.perf_counter()
        proc = h.start_worker(config, relog)
        _wait_committed(bootstrap, name, topic, records + len(extra), proc, relog)
        result["restart_to_caught_up_seconds"] = time.perf_counter() - restarted
        result["recovery_seconds"] = _first_batch_seconds(relog)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return result


def _first_batch_seconds(log: Path) -> float:
    for line in log.read_text().splitlines():
        if '"event": "processing"' in line:
            return json.loads(line)["seconds_since_start"]
    return 0.0


def trigger_latency(bootstrap: str, directory: Path, name: str, reference: Path, rate: int,
                    seconds: float) -> list[float]:
    """Seconds from producing the event a trigger fired at to the trigger's arrival."""
    topics = h.create_topics(bootstrap, name)
    directory = directory / "latency"  # its own RocksDB state, apart from the throughput runs'
    directory.mkdir()
    config = h.write_config(directory, bootstrap, name, ["lat"], reference, batch_within_seconds=0.05,
                            detector={"cooldown": 2000, "ks_window": 500, "ks_stride": 250})
    log = directory / "latency-worker.log"
    proc = h.start_worker(config, log)
    producer = h.producer(bootstrap)
    requests = h.TopicReader(bootstrap, topics["retrain_requests_topic"])
    sent_at: dict[int, float] = {}
    rng = np.random.default_rng(0)
    try:
        # The worker is ready once it has processed a first event.
        producer.produce(topics["features_topic"], key=b"lat", value=h.feature_event("lat", 0, rng.normal(size=10)))
        producer.flush(10)
        h.wait_until(lambda: h.committed_total(bootstrap, name, topics["features_topic"]) >= 1, 120,
                     "latency worker ready")
        n = int(rate * seconds)
        # Built beforehand, sent on a 2 ms tick with sleeps in between: the producer must
        # not take a core from the worker on a 2-core machine (a busy-waiting loop did).
        values = rng.normal(size=(n, len(h.COLUMNS)))  # row i - 1: event i
        for i in range(1, n + 1):
            if (i // 3000) % 2 == 1:  # drift on and off in blocks of 3,000 events
                values[i - 1, 2] += 2.0
        payloads = [b""] + [h.feature_event("lat", i, values[i - 1]) for i in range(1, n + 1)]
        start, i = time.perf_counter(), 1
        while i <= n:
            due = min(n, int((time.perf_counter() - start) * rate))
            while i <= due:
                producer.produce(topics["features_topic"], key=b"lat", value=payloads[i])
                sent_at[i] = time.time()  # one key, one partition, a fresh topic: offset i
                i += 1
            producer.poll(0)
            time.sleep(0.002)
        producer.flush(30)
        requests.poll(3.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    latencies = []
    for message in requests.messages:
        request = json.loads(message.value())
        end = request["window"]["features"]["ranges"][0]["end"]
        if end in sent_at:
            latencies.append(message.timestamp()[1] / 1000 - sent_at[end])
    requests.close()
    return latencies


COMMAND = "python -m bench.worker_bench"


def main(argv: list[str] | None = None) -> list[tuple[str, str, str]]:
    """Prints the figures; returns the rows (what, measured, command) of `make bench`'s table."""
    parser = argparse.ArgumentParser(prog="bench.worker_bench")
    parser.add_argument("--quick", action="store_true", help="100,000 events, 10 s of latency")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--latency-seconds", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=20_000,
                        help="events per micro-batch (batched mode: divided by --records-per-batch)")
    parser.add_argument("--mode", choices=("single", "batched", "both"), default="both",
                        help="one event per record, batch records, or both (default)")
    parser.add_argument("--records-per-batch", type=int, default=1000,
                        help="events per batch record in the batched mode")
    args, _ = parser.parse_known_args(argv)
    events = args.events or (100_000 if args.quick else 1_000_000)
    latency_seconds = args.latency_seconds or (10.0 if args.quick else 30.0)
    command = f"{COMMAND} --events {events} --latency-seconds {latency_seconds:g}"
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        reference = h.write_reference(directory / "reference.csv")
        name = f"bench_{uuid.uuid4().hex[:8]}"
        per_model = events // len(MODELS)
        total = per_model * len(MODELS)
        stream = h.feature_stream(MODELS, per_model)
        modes = ("single", "batched") if args.mode == "both" else (args.mode,)
        against_parts: dict[str, float] = {}
        with_fetching: dict[str, float] = {}
        for mode in modes:
            batched = mode == "batched"
            run_name = f"{name}_b" if batched else name
            topics = h.create_topics(args.bootstrap, run_name)
            records = h.batch_records(stream, args.records_per_batch) if batched else stream
            # The monitor's batch_size counts records: the same events per micro-batch in both modes.
            batch_size = max(1, args.batch_size // args.records_per_batch) if batched else args.batch_size
            label = (f"batched ({args.records_per_batch:,} events per record, {len(records):,} records)"
                     if batched else "single (one event per record)")
            print(f"-- mode: {label}", flush=True)
            t = time.perf_counter()
            h.produce(args.bootstrap, topics["features_topic"], records)
            print(f"produced {total:,} events in {time.perf_counter() - t:.1f}s", flush=True)
            bare, bare_cpu = bare_consumer_rate(args.bootstrap, topics["features_topic"], total, batched=batched)
            print(f"bare confluent-kafka consumer + msgspec decode: {bare:,.0f} events/s, "
                  f"{bare_cpu:,.0f} per CPU second", flush=True)
            fetch_us = fetch_us_per_event(args.bootstrap, topics["features_topic"], len(records), batch_size,
                                          args.records_per_batch if batched else 1)
            print(f"fetching alone (a consumer of the same records, no decoding): {fetch_us:.2f} us per event "
                  "(CPU); the worker pays it beyond its two parts", flush=True)
            run = worker_run(args.bootstrap, directory, run_name, topics["features_topic"], total, reference,
                             records=len(records), records_per_batch=args.records_per_batch if batched else 0,
                             batch_size=batch_size)
            steady, cpu = run["steady_rate"] / bare, run["steady_cpu_rate"] / bare_cpu
            print(f"driftline worker, start to all committed: {run['rate']:,.0f} events/s (first batch "
                  f"processed at {run['first_batch_seconds']:.1f}s); from its first commit to its last "
                  f"({run['steady_events']:,.0f} events): {run['steady_rate']:,.0f} events/s, "
                  f"{run['steady_cpu_rate']:,.0f} per CPU second; ratio to the bare consumer "
                  f"{steady:.2f} (per CPU second {cpu:.2f}; {run['rate'] / bare:.2f} from the process start)",
                  flush=True)
            # The worker's two irreducible parts, each alone in this process on the same
            # records, at the worker's micro-batch per model (batch_size events over the models).
            alone = parts(records, args.batch_size // len(MODELS))
            worker_us = 1e6 / run["steady_cpu_rate"]
            against_parts[mode] = (alone["columns"] + alone["detectors"]) / worker_us
            with_fetching[mode] = (fetch_us + alone["columns"] + alone["detectors"]) / worker_us
            ceiling = (alone["columns"] + alone["detectors"]) / (fetch_us + alone["columns"] + alone["detectors"])
            print(f"the worker's parts alone: {parts_line(alone)}; the worker {worker_us:.2f} us per event "
                  f"(CPU, every thread): {against_parts[mode]:.2f}; a worker that spent nothing beyond its "
                  f"parts and fetching would reach {ceiling:.2f}", flush=True)
            print(f"saved state per model: {run['state_bytes'] / 1024:,.1f} KiB on average over "
                  f"{run['state_messages']:.0f} state messages", flush=True)
            print(f"restart after kill -9: first batch after {run['recovery_seconds']:.2f}s, 10,000 new "
                  f"events committed after {run['restart_to_caught_up_seconds']:.2f}s", flush=True)
            what = ("worker through the broker, single-event records" if not batched else
                    f"worker through the broker, batch records of {args.records_per_batch:,} events")
            rows.append((f"{what} (8 models x 10 columns, JSON)",
                         f"{run['steady_rate']:,.0f} events/s against {bare:,.0f} for a bare confluent-kafka "
                         f"consumer decoding the same records: ratio {steady:.2f} (per CPU second "
                         f"{run['steady_cpu_rate']:,.0f} against {bare_cpu:,.0f}: {cpu:.2f}); "
                         f"{run['rate']:,.0f} events/s from the process start",
                         f"{command} --mode {mode}"))
            if not batched:
                rows.append(("worker restart after kill -9",
                             f"first batch {run['recovery_seconds']:.2f} s after the start; saved state "
                             f"{run['state_bytes'] / 1024:,.1f} KiB per model", f"{command} --mode single"))
        latencies = trigger_latency(args.bootstrap, directory, f"{name}_lat", reference, args.rate,
                                    latency_seconds)
        if latencies:
            p50, p99 = np.percentile(latencies, [50, 99])
            line = (f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
                    f"over {len(latencies)} triggers")
        else:
            line = "no trigger arrived"
        print(f"trigger latency at {args.rate:,} events/s: {line}", flush=True)
        rows.append((f"trigger latency at {args.rate:,} events/s (producing the event it fired at "
                     "to the trigger on retrain-requests)", line, command))
    shown = {mode: f"{against_parts[mode]:.2f}" if mode in against_parts else "not run"
             for mode in ("single", "batched")}
    line = f"single {shown['single']}, batch {shown['batched']}"
    shown = {mode: f"{with_fetching[mode]:.2f}" if mode in with_fetching else "not run"
             for mode in ("single", "batched")}
    fetched = f"single {shown['single']}, batch {shown['batched']}"
    print(f"worker / (fetch + decode + detectors): {fetched}", flush=True)
    print(f"worker / (decode + detectors): {line}", flush=True)
    rows.append(("worker's events per CPU second over 1 / (fetching + decoding into columns + detectors), "
                 "each part alone in the same run", fetched, command))
    rows.append(("worker's events per CPU second over 1 / (decoding into columns + detectors), each part "
                 "alone in the same run (target >= 0.8)", line, command))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
