"""The monitor loop saves its models' states and commits once per
`commit_interval_seconds` (and at a revocation), not per batch; without a broker."""

from __future__ import annotations

from pathlib import Path

from bench import harness as h
from bench.monitor_loop_bench import MODELS, messages
from schemas.settings import Settings
from streams.metrics import MonitorMetrics
from streams.model_state import decode_state
from streams.monitor_loop import MonitorLoop


class _Recording:
    """Producer and consumer that record what the loop hands them."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None]] = []
        self.commits: list[dict[tuple[str, int], int]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None, **kwargs: object) -> None:
        self.produced.append((topic, key))

    def flush(self, *args: object) -> int:
        return 0

    def commit(self, offsets: list, asynchronous: bool) -> None:
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def list_topics(self, topic: str, timeout: float) -> object:
        partitions = type("T", (), {"partitions": dict.fromkeys(range(h.PARTITIONS))})()
        return type("Metadata", (), {"topics": {topic: partitions}})()


class _NoPromotions:
    def latest(self, model_id: str) -> None:
        return None


def _loop(tmp_path: Path) -> tuple[MonitorLoop, _Recording]:
    reference = h.write_reference(tmp_path / "reference.csv", rows=500)
    settings = Settings(models={m: {"reference_path": str(reference)} for m in MODELS},
                        monitor={"commit_interval_seconds": 3600})
    loop = MonitorLoop(settings, MonitorMetrics(), _NoPromotions(), on_fatal=print)  # type: ignore[arg-type]
    recording = _Recording()
    loop.producer = loop.consumer = recording  # type: ignore[assignment]
    return loop, recording


def test_batches_save_nothing_until_the_interval_then_every_advanced_model_once(tmp_path: Path) -> None:
    loop, out = _loop(tmp_path)
    topic = loop.kafka.features_topic
    records = messages(topic, 8_000, 1_000, 0)
    for i in range(0, len(records), 1_000):
        loop._batch(records[i:i + 1_000])
    assert not out.produced and not out.commits  # no state, no commit per batch

    loop._save(asynchronous=True)
    saved = [key.decode() for t, key in out.produced if t == loop.conf.state_topic]
    assert sorted(saved) == sorted(MODELS)  # each once, however many batches advanced it
    last = {(topic, m.partition()): m.offset() + 1 for m in records}
    assert out.commits == [last]
    assert {m: decode_state(loop.saved[m]).progress[topic].last_offset for m in MODELS} == {
        m: max(r.offset() for r in records if r.key() == m.encode()) for m in MODELS}

    loop._save(asynchronous=True)  # nothing advanced since: nothing saved or committed again
    assert len(out.produced) == len(MODELS) and len(out.commits) == 1


def test_a_revocation_saves_and_commits_what_the_interval_had_not(tmp_path: Path) -> None:
    loop, out = _loop(tmp_path)
    records = messages(loop.kafka.features_topic, 2_000, 1_000, 0)
    loop._batch(records)
    loop._on_revoke(loop.consumer, [])  # type: ignore[arg-type]
    assert len([t for t, _ in out.produced if t == loop.conf.state_topic]) == len(MODELS)
    assert len(out.commits) == 1 and not loop.runtimes
