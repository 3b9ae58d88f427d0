"""The topics of driftline, created before anything reads or writes them.

The project's broker runs with `auto.create.topics.enable=false`, as a production
cluster should: a topic a producer names into existence gets the broker's default
partition count, not `monitor.partitions`, and a model's inputs and state would no
longer share a partition number. So every process that may be first (the worker, the
simulated inference service, the demo) creates the topics here, and the worker refuses
to start on existing topics of another partition count. Only confluent-kafka is
imported: `driftline simulate` uses this without faust.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.errors import UsageError
from schemas.logs import librdkafka_callbacks
from schemas.settings import KafkaSettings, MonitorSettings


class PartitionMismatch(UsageError):
    """Existing topics whose partition count is not `monitor.partitions`."""


def _admin(kafka: KafkaSettings) -> AdminClient:
    return AdminClient({**kafka.client_config(), **librdkafka_callbacks("topics", kafka.bootstrap_servers)})


def ensure_topics(
    kafka: KafkaSettings, names: Iterable[str], *, partitions: int, replication_factor: int,
    config: dict[str, str] | None = None, timeout_seconds: float = 30.0,
) -> dict[str, int]:
    """Creates the topics that do not exist yet (blocking: call before the event loop) and
    waits, up to `timeout_seconds`, until the metadata shows every one with its partitions:
    a topic just created is not in the next metadata answer at once. Returns the
    partition count of each named topic."""
    admin = _admin(kafka)
    names = list(dict.fromkeys(names))
    deadline = time.monotonic() + timeout_seconds
    existing = admin.list_topics(timeout=timeout_seconds).topics
    missing = [n for n in names if n not in existing]
    if missing:
        futures = admin.create_topics([
            NewTopic(n, num_partitions=partitions, replication_factor=replication_factor, config=config or {})
            for n in missing
        ])
        for name, future in futures.items():
            try:
                future.result(timeout=timeout_seconds)
            except KafkaException as exc:  # another process created it first
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    while True:
        topics = admin.list_topics(timeout=max(0.1, deadline - time.monotonic())).topics
        ready = {n: len(topics[n].partitions) for n in names
                 if n in topics and topics[n].error is None and topics[n].partitions}
        if len(ready) == len(names):
            return ready
        if time.monotonic() >= deadline:
            absent = sorted(set(names) - set(ready))
            raise TimeoutError(f"topics not in the cluster's metadata after {timeout_seconds} s: {absent}")
        time.sleep(0.1)  # polling the broker's metadata; there is no event to wait on


def co_partitioned(kafka: KafkaSettings, monitor: MonitorSettings) -> list[str]:
    """The topics whose partition numbers must agree: a model's features, predictions,
    actuals and labelled records and its saved state go to one partition number (the
    join's table and the monitor's state follow it). The retrain requests, retrain
    events and dead letters are keyed too, but read whole: any count works there."""
    return [kafka.features_topic, kafka.predictions_topic, kafka.actuals_topic, kafka.labelled_topic,
            monitor.state_topic]


def check_partitions(counts: dict[str, int], expected: int) -> None:
    """Raises `PartitionMismatch` (one line: each topic, its count, the fix) if a topic
    of `counts` has another partition count than `expected`."""
    wrong = {name: count for name, count in counts.items() if count != expected}
    if not wrong:
        return
    found = ", ".join(f"{name} has {count}" for name, count in sorted(wrong.items()))
    fix = f"recreate {'it' if len(wrong) == 1 else 'them'} with {expected} partitions (delete, then start the worker)"
    others = set(wrong.values())
    if len(others) == 1 and len(wrong) == len(counts):
        fix += f", or set monitor.partitions = {others.pop()}"
    raise PartitionMismatch(
        f"topics with another partition count than monitor.partitions ({expected}): {found}; "
        f"a model's inputs and state must share partition numbers: {fix}")


def ensure_monitor_topics(kafka: KafkaSettings, monitor: MonitorSettings, *, create: bool = True) -> None:
    """Checks the partition counts of the existing co-partitioned topics (refusing a
    mismatch before anything is created), then, `create`, creates every missing topic
    of driftline with `monitor.partitions` partitions; the state topic compacted."""
    names = co_partitioned(kafka, monitor)
    existing = _admin(kafka).list_topics(timeout=30).topics
    check_partitions({n: len(existing[n].partitions) for n in names if n in existing and existing[n].partitions},
                     monitor.partitions)
    if not create:
        return
    options = {"partitions": monitor.partitions, "replication_factor": monitor.replication_factor}
    counts = ensure_topics(kafka, [kafka.features_topic, kafka.predictions_topic, kafka.actuals_topic,
                                   kafka.labelled_topic, kafka.retrain_requests_topic,
                                   kafka.retrain_events_topic, kafka.dead_letter_topic], **options)
    counts.update(ensure_topics(
        kafka, [monitor.state_topic], **options,
        config={"cleanup.policy": "compact", "max.message.bytes": str(monitor.state_max_bytes),
                "segment.bytes": str(monitor.state_segment_bytes)}))
    # Another process may have created one meanwhile, with its own count.
    check_partitions({n: counts[n] for n in names}, monitor.partitions)
