"""Where the worker's time goes, without a broker: the monitor loop's batch path
(`MonitorLoop._batch`: records -> decode -> per model -> detectors -> state bytes) on
in-memory records, against decoding the same records with msgspec alone.

`python -m bench.monitor_loop_bench [--events N] [--batch-size N] [--profile]`: prints
events/s of both in the same process and their ratio (the best the loop can reach
against a bare consumer that only decodes); `--profile` adds cProfile's top entries.
The broker's share is in `bench.worker_bench`.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from aiokafka.partitioner import murmur2

from schemas.messages import FeatureEvent, decode
from streams.metrics import MonitorMetrics
from streams.monitor_loop import MonitorLoop
from schemas.settings import Settings
from streams.worker import tune_gc
from bench import harness as h

MODELS = [f"bench-{i}" for i in range(8)]
PARTITIONS = 4


class _Record:
    """What the loop reads of a confluent-kafka `Message`."""

    __slots__ = ("_topic", "_partition", "_offset", "_value", "_key")

    def __init__(self, topic: str, partition: int, offset: int, value: bytes, key: bytes) -> None:
        self._topic, self._partition, self._offset, self._value, self._key = topic, partition, offset, value, key

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key


class _Discard:
    """Producer and consumer that accept everything at once (no broker)."""

    def produce(self, *args: object, **kwargs: object) -> None:
        pass

    def flush(self, *args: object) -> int:
        return 0

    def commit(self, *args: object, **kwargs: object) -> None:
        pass

    def list_topics(self, topic: str, timeout: float) -> SimpleNamespace:
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions=dict.fromkeys(range(PARTITIONS)))})


class _NoPromotions:
    def latest(self, model_id: str) -> None:
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        reference = h.write_reference(Path(directory) / "reference.csv")
        settings = Settings(models={m: {"reference_path": str(reference)} for m in MODELS})
        loop = MonitorLoop(settings, MonitorMetrics(), _NoPromotions(), on_fatal=print)  # type: ignore[arg-type]
        loop.producer = loop.consumer = _Discard()  # type: ignore[assignment]
        topic = settings.kafka.features_topic
        stream = h.feature_stream(MODELS, args.events // len(MODELS) + args.batch_size, seed=1)
        partition = {m: (murmur2(m.encode()) & 0x7FFFFFFF) % PARTITIONS for m in MODELS}
        records = [_Record(topic, partition[m], i, value, m.encode()) for i, (m, value) in enumerate(stream)]
        warm, timed = records[: args.batch_size], records[args.batch_size:]
        loop._batch(warm)  # builds each model's monitor from its reference
        tune_gc(settings.monitor)  # as `driftline worker` does

        started = time.perf_counter()
        for record in timed:
            decode(FeatureEvent, record.value())
        decode_rate = len(timed) / (time.perf_counter() - started)

        profiler = cProfile.Profile()
        started = time.perf_counter()
        if args.profile:
            profiler.enable()
        for i in range(0, len(timed), args.batch_size):
            loop._batch(timed[i: i + args.batch_size])
        profiler.disable()
        loop_rate = len(timed) / (time.perf_counter() - started)
    print(f"msgspec decode only: {decode_rate:,.0f} events/s")
    print(f"monitor loop batch path ({args.batch_size:,} per batch, 8 models x 10 columns): "
          f"{loop_rate:,.0f} events/s; ratio {loop_rate / decode_rate:.2f}"
          + (" (profiled)" if args.profile else ""))
    if args.profile:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
