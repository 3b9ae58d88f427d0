"""A long run of one worker at a steady rate over many models: is its memory flat and its
lag bounded? (A soak: a bench, not a test.)

`python -m bench.soak [--minutes 30] [--rate 20000] [--models 100] [--bootstrap HOST:PORT]`
produces single-event feature records (10 columns, keyed by model, murmur2) at `--rate`
for `--minutes` to fresh topics while one `driftline worker` consumes them, and samples
every `--every` seconds the worker's resident memory (/proc) and its lag (the high
watermarks minus the monitor group's committed offsets). Prints the samples and a
summary: the rate reached, memory after the warm-up (the first fifth of the run) and at
the end, its growth, and the largest and last lag.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from bench import harness as h
from schemas.settings import MonitorSettings


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def lag(bootstrap: str, app_id: str, topic: str) -> int:
    ends = h.high_watermarks(bootstrap, topic)
    done = h.committed(bootstrap, MonitorSettings(app_id=app_id).monitor_group_id, topic, ends)
    return sum(max(0, end - max(done[p], 0)) for p, end in ends.items())


def produce_steadily(bootstrap: str, topic: str, models: list[str], rate: float, seconds: float,
                     sent: list[int], stop: threading.Event) -> None:
    """`rate` events/s in ticks of 50 ms, sleeping between ticks (no busy wait)."""
    producer, rng = h.producer(bootstrap), np.random.default_rng(7)
    per_tick, began, seq = max(1, int(rate / 20)), time.monotonic(), 0
    while not stop.is_set() and time.monotonic() - began < seconds:
        values = rng.normal(size=(per_tick, len(h.COLUMNS)))
        for row in values:
            model = models[seq % len(models)]
            while True:
                try:
                    producer.produce(topic, key=model.encode(), value=h.feature_event(model, seq, row))
                    break
                except BufferError:
                    producer.poll(0.05)
            seq += 1
        producer.poll(0)
        sent[0] = seq
        stop.wait(max(0.0, began + seq / rate - time.monotonic()))
    producer.flush(60)
    sent[0] = seq


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=20_000.0)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    name = f"soak-{uuid.uuid4().hex[:8]}"
    models = [f"soak-{i}" for i in range(args.models)]
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        reference = h.write_reference(work / "reference.csv")
        topics = h.create_topics(args.bootstrap, name)
        config = h.write_config(work, args.bootstrap, name, models, reference)
        processes = h.Processes(work)
        worker = processes.worker(config)
        sent, stop = [0], threading.Event()
        producer = threading.Thread(target=produce_steadily, daemon=True,
                                    args=(args.bootstrap, topics["features_topic"], models, args.rate, seconds,
                                          sent, stop))
        began = time.monotonic()
        producer.start()
        samples = []  # (seconds, sent, rss MiB, lag)
        try:
            while producer.is_alive():
                time.sleep(args.every)  # a sampling period, not a synchronisation
                processes.alive()
                sample = (time.monotonic() - began, sent[0], rss_mib(worker.pid),
                          lag(args.bootstrap, name, topics["features_topic"]))
                samples.append(sample)
                print(f"{sample[0]:7.0f} s  sent {sample[1]:>10,}  worker RSS {sample[2]:7.1f} MiB  "
                      f"lag {sample[3]:>8,}", flush=True)
        finally:
            stop.set()
            processes.stop_all()
    warm = [s for s in samples if s[0] >= seconds / 5] or samples
    start_rss, end_rss = warm[0][2], samples[-1][2]
    reached = samples[-1][1] / samples[-1][0] if samples else 0.0
    print(f"\nsoak: {args.models} models, {args.minutes:g} min, asked {args.rate:,.0f} events/s, "
          f"produced {reached:,.0f} events/s; worker RSS {start_rss:.1f} MiB after the warm-up, "
          f"{end_rss:.1f} MiB at the end ({(end_rss / start_rss - 1) * 100:+.1f} %), max "
          f"{max(s[2] for s in samples):.1f}; lag max {max(s[3] for s in samples):,}, last {samples[-1][3]:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
