"""Where the worker's time goes, without a broker: the monitor loop's batch path
(`MonitorLoop._batch`: records -> decode -> per model -> detectors; the states saved once per
commit interval) on in-memory confluent-kafka `Message`s, against decoding the same records with msgspec
alone (what the bare consumer of `bench.worker_bench` does per record).

`python -m bench.monitor_loop_bench [--quick] [--events N] [--batch-size N]
[--mode single|batched|both] [--profile]`: prints events/s of both in the same process,
their ratio, and the share of the loop's time spent in the detectors (`ModelMonitor`'s
updates and its state serialisation); `--profile` adds cProfile's top entries. The
configuration is `bench.worker_bench`'s: 8 models x 10 columns, batches of 20,000
records, the harness's detector settings. The broker's share is in `bench.worker_bench`.

It also prints the CPU per event of a worker's parts, each alone (`budget`): msgspec's
decoding of batch records (the bare consumer's whole work beyond fetching), decoding them
into columns, and the detectors per row at three micro-batch sizes.

The worker's target is stated against its two irreducible parts (`parts`), each timed
alone on the loop's own records in the same run: decoding into columns (each model's
`ColumnDecoder`, then `numeric_matrix`) and the detectors (one `ModelMonitor` per model
fed the same matrices, the loop's micro-batch per model). The loop's events per CPU
second over 1 / (their sum) is printed for each mode; `bench.worker_bench` prints the
same ratio for the whole worker through the broker (target >= 0.8).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from itertools import chain
from operator import attrgetter
from pathlib import Path

from aiokafka.partitioner import murmur2
from confluent_kafka import Message

from schemas.messages import FeatureEvent, decode, decode_batch
from schemas.settings import Settings
from streams.metrics import MonitorMetrics
from streams.monitor_loop import MonitorLoop
from streams.worker import tune_gc
from bench import harness as h

MODELS = [f"bench-{i}" for i in range(8)]
PARTITIONS = h.PARTITIONS
DETECTOR = {"cooldown": 1_000_000, "ks_window": 500, "ks_stride": 250}  # bench.harness.write_config's
COMMAND = "python -m bench.monitor_loop_bench"


class _Discard:
    """Producer and consumer that accept everything at once (no broker)."""

    def produce(self, *args: object, **kwargs: object) -> None:
        pass

    def flush(self, *args: object) -> int:
        return 0

    def commit(self, *args: object, **kwargs: object) -> None:
        pass

    def list_topics(self, topic: str, timeout: float) -> object:
        class _Metadata:
            topics = {topic: type("T", (), {"partitions": dict.fromkeys(range(PARTITIONS))})()}
        return _Metadata()


class _NoPromotions:
    def latest(self, model_id: str) -> None:
        return None


class _Clock:
    """Seconds spent in wrapped callables (the detectors' part of the loop)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, owner: object, name: str) -> None:
        inner = getattr(owner, name)
        seconds = self.seconds

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - started

        setattr(owner, name, timed)


def messages(topic: str, events: int, batch_size: int, records_per_batch: int) -> list[Message]:
    """Feature events of 8 models, keyed and partitioned as producers must (murmur2);
    `records_per_batch` > 0: as batch records of that many events."""
    stream = h.feature_stream(MODELS, (events + batch_size) // len(MODELS), seed=1)
    if records_per_batch:
        stream = h.batch_records(stream, records_per_batch)
    partition = {m: (murmur2(m.encode()) & 0x7FFFFFFF) % PARTITIONS for m in MODELS}
    offsets: dict[int, int] = defaultdict(int)
    out = []
    for model, value in stream:
        p = partition[model]
        out.append(Message(topic=topic, partition=p, offset=offsets[p], value=value, key=model.encode()))
        offsets[p] += 1
    return out


def parts(records: list[tuple[str, bytes]], events_per_model_batch: int) -> dict[str, float]:
    """CPU microseconds per event of the worker's two irreducible parts, each alone on
    `records` ((model, value): single events or batch records of one model): `columns`,
    decoding into columns (each model's `ColumnDecoder`, then `numeric_matrix`, over
    micro-batches of about `events_per_model_batch` events of a model), and `detectors`,
    one `ModelMonitor` per model (built from `bench.harness`'s reference, the worker's
    settings) updated with the same matrices."""
    import pandas as pd

    from detectors import ModelMonitor, ReferenceProfile
    from detectors.config import DetectorConfig
    from streams.decoding import column_decoder, numeric_matrix

    by_model: dict[str, list[bytes]] = defaultdict(list)
    for model, value in records:
        by_model[model].append(value)
    batched = records[0][1][:1] == b"["
    per_record = len(decode_batch(FeatureEvent, records[0][1])) if batched else 1
    step = max(1, events_per_model_batch // per_record)
    matrices: dict[str, list] = {}
    started = time.process_time()
    for model, values in by_model.items():
        columns = column_decoder(model, h.COLUMNS, [])
        decoded = matrices[model] = []
        for i in range(0, len(values), step):
            chunk = values[i:i + step]
            events = (list(chain.from_iterable(map(columns.many.decode, chunk))) if batched
                      else list(map(columns.one.decode, chunk)))
            decoded.append(numeric_matrix(list(map(_features, events)), h.COLUMNS)[0])
    columns_cpu = time.process_time() - started
    count = sum(len(m) for chunks in matrices.values() for m in chunks)
    config = DetectorConfig(**DETECTOR)
    with tempfile.TemporaryDirectory() as directory:
        reference = pd.read_csv(h.write_reference(Path(directory) / "reference.csv"))
    profile = ReferenceProfile.from_frame(reference, feature_columns=h.COLUMNS, prediction_column="prediction",
                                          actual_column="actual", config=config)
    monitors = {model: ModelMonitor(profile, config) for model in matrices}
    started = time.process_time()
    for model, chunks in matrices.items():
        for matrix in chunks:
            monitors[model].update_features(matrix)
    detectors_cpu = time.process_time() - started
    return {"columns": columns_cpu / count * 1e6, "detectors": detectors_cpu / count * 1e6, "events": count}


def parts_line(p: dict[str, float]) -> str:
    return (f"decoding into columns {p['columns']:.2f} us + detectors {p['detectors']:.2f} us = "
            f"{p['columns'] + p['detectors']:.2f} us per event")


def run(events: int, batch_size: int, records_per_batch: int, *, profile: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        reference = h.write_reference(Path(directory) / "reference.csv")
        settings = Settings(models={m: {"reference_path": str(reference)} for m in MODELS},
                            detectors=DETECTOR)
        loop = MonitorLoop(settings, MonitorMetrics(), _NoPromotions(), on_fatal=print)  # type: ignore[arg-type]
        loop.producer = loop.consumer = _Discard()  # type: ignore[assignment]
        records = messages(settings.kafka.features_topic, events, batch_size, records_per_batch)
        per_batch = max(1, batch_size // records_per_batch) if records_per_batch else batch_size
        warm, timed = records[:per_batch], records[per_batch:]
        loop._batch(warm)  # builds each model's monitor from its reference
        clock = _Clock()
        for runtime in loop.runtimes.values():
            for name in ("update_features", "state_to_bytes"):
                clock.wrap(runtime.monitor, name)
        tune_gc(settings.monitor)  # as `driftline worker` does

        count, started, cpu = 0, time.perf_counter(), time.process_time()
        for message in timed:
            if records_per_batch:
                count += len(decode_batch(FeatureEvent, message.value()))
            else:
                decode(FeatureEvent, message.value())
                count += 1
        decode_seconds, decode_cpu = time.perf_counter() - started, time.process_time() - cpu

        profiler = cProfile.Profile()
        started, cpu = time.perf_counter(), time.process_time()
        if profile:
            profiler.enable()
        for i in range(0, len(timed), per_batch):
            loop._batch(timed[i: i + per_batch])
            loop._save_when_due()  # as `MonitorLoop.run` does after each batch
        profiler.disable()
        loop_seconds, loop_cpu = time.perf_counter() - started, time.process_time() - cpu
        events_per_batch = per_batch * (records_per_batch or 1)
        alone = parts([(m.key().decode(), m.value()) for m in timed], events_per_batch // len(MODELS))
    if profile:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return {"events": count, "decode_rate": count / decode_seconds, "loop_rate": count / loop_seconds,
            "decode_cpu_rate": count / decode_cpu, "loop_cpu_rate": count / loop_cpu,
            "detectors_share": clock.seconds["update_features"] / loop_seconds,
            "state_share": clock.seconds["state_to_bytes"] / loop_seconds, "parts": alone}


_features = attrgetter("features")


def budget(events: int, records_per_batch: int) -> dict[str, float]:
    """The CPU microseconds per event of what a worker must do beyond fetching, each alone
    on the same batch records: msgspec decoding (the bare consumer's work), decoding into
    columns (a model's `ColumnDecoder`, then `numeric_matrix`) and the detectors' update per
    row of 10 columns at micro-batches of 2,500, 10,000 and 50,000 rows per model (one
    model; the worker bench's 20,000-event batches over 8 models give 2,500)."""
    import numpy as np
    import pandas as pd

    from detectors import ModelMonitor, ReferenceProfile
    from detectors.config import DetectorConfig
    from streams.decoding import column_decoder, numeric_matrix

    records = [value for _, value in h.batch_records(h.feature_stream(["m"], events, seed=2), records_per_batch)]

    def per_event(work) -> float:
        started = time.process_time()
        for value in records:
            work(value)
        return (time.process_time() - started) / events * 1e6

    columns = column_decoder("m", h.COLUMNS, [])
    out = {"msgspec": per_event(lambda value: decode_batch(FeatureEvent, value)),
           "columns": per_event(lambda value: numeric_matrix(list(map(_features, columns.many.decode(value))),
                                                            h.COLUMNS))}
    with tempfile.TemporaryDirectory() as directory:
        reference = pd.read_csv(h.write_reference(Path(directory) / "reference.csv"))[h.COLUMNS]
    profile = ReferenceProfile.from_frame(reference)
    rows = np.random.default_rng(3).normal(size=(max(events, 100_000), len(h.COLUMNS)))
    for size in (2_500, 10_000, 50_000):
        monitor = ModelMonitor(profile, DetectorConfig(**DETECTOR))
        started = time.process_time()
        for i in range(0, len(rows), size):
            monitor.update_features(rows[i:i + size])
        out[f"detectors_{size}"] = (time.process_time() - started) / len(rows) * 1e6
    return out


def main(argv: list[str] | None = None) -> list[tuple[str, str, str]]:
    """Prints the figures; returns the rows (what, measured, command) of `make bench`'s table."""
    parser = argparse.ArgumentParser(prog="bench.monitor_loop_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 events")
    parser.add_argument("--events", type=int, default=None, help="default 400,000")
    parser.add_argument("--batch-size", type=int, default=20_000)
    parser.add_argument("--mode", choices=("single", "batched", "both"), default="both")
    parser.add_argument("--records-per-batch", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    args, _ = parser.parse_known_args(argv)
    events = args.events or (100_000 if args.quick else 400_000)
    rows = []
    b = budget(events, args.records_per_batch)  # first: the loop's runs leave a large heap behind
    for mode in (("single", "batched") if args.mode == "both" else (args.mode,)):
        per_record = args.records_per_batch if mode == "batched" else 0
        r = run(events, args.batch_size, per_record, profile=args.profile)
        what = ("single-event records" if not per_record else f"batch records of {per_record:,}")
        line = (f"{r['loop_rate']:,.0f} events/s against {r['decode_rate']:,.0f} for msgspec decoding alone "
                f"(ratio {r['loop_rate'] / r['decode_rate']:.2f}); per CPU second {r['loop_cpu_rate']:,.0f} "
                f"against {r['decode_cpu_rate']:,.0f} (ratio {r['loop_cpu_rate'] / r['decode_cpu_rate']:.2f}); "
                f"detectors' updates {r['detectors_share']:.0%} of the loop's time, their state "
                f"serialisation {r['state_share']:.0%}" + (" (profiled)" if args.profile else ""))
        print(f"monitor loop, no broker, {what} ({args.batch_size:,} events per batch, 8 models x 10 "
              f"columns, {r['events']:,} events): {line}", flush=True)
        p = r["parts"]
        loop_us = 1e6 / r["loop_cpu_rate"]
        parts_text = (f"{parts_line(p)}, each alone on the same records; the loop {loop_us:.2f} us per event: "
                      f"loop / (decode + detectors) {(p['columns'] + p['detectors']) / loop_us:.2f}")
        print(f"  parts, {what}: {parts_text}", flush=True)
        command = f"{COMMAND} --events {events} --mode {mode}"
        rows.append((f"monitor loop without a broker, {what} (8 models x 10 columns)", line, command))
        rows.append((f"the worker's irreducible parts, CPU per event, {what}", parts_text, command))
    line = (f"msgspec decoding {b['msgspec']:.2f} us; decoding into columns {b['columns']:.2f} us; the detectors "
            f"{b['detectors_2500']:.2f} us a row at 2,500 rows per model batch, {b['detectors_10000']:.2f} at "
            f"10,000, {b['detectors_50000']:.2f} at 50,000")
    print(f"CPU per event, batch records of {args.records_per_batch:,}, 10 columns: {line}", flush=True)
    rows.append(("CPU per event of a worker's parts (batch records, 10 columns)", line,
                 f"{COMMAND} --events {events}"))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
