"""The Kafka broker stopped for 20 s and started again while the worker and the
retrainer run (a private broker: the shared one is never stopped). Every event is
counted once, the triggers are those of an uninterrupted run (same ids, same contents),
and every trigger gets exactly one outcome row: none lost, none doubled. The worker's log
stays readable: one line when the connection is lost, one when it is back, and repeated
errors limited (`schemas.logs.RepeatLimiter`), not thousands of aiokafka lines."""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bench import harness as h
from schemas.settings import MonitorSettings
from tests.faults import services as s

pytestmark = pytest.mark.services
DEADLINE = 120
OUTAGE_SECONDS = float(os.environ.get("DRIFTLINE_FAULTS_OUTAGE_SECONDS", 20))
# Warning and error lines the worker may log from the broker's stop to the end of the test
# (before the limiter: 800-3,800 aiokafka error lines).
MAX_OUTAGE_LINES = 50
RAW_LIBRDKAFKA = re.compile(r"^%(?P<severity>\d)\|(?P<time>\d+(?:\.\d+)?)\|")  # librdkafka's own stderr format


def _outage_lines(log: Path, since: float) -> tuple[list[dict], int]:
    """The worker's JSON lines of level warning or above logged at or after `since` (epoch
    seconds), and how many raw librdkafka lines of severity warning or above (a client
    without `schemas.logs.librdkafka_callbacks`) it wrote since."""
    lines, raw = [], 0
    for text in log.read_text(errors="replace").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            match = RAW_LIBRDKAFKA.match(text)
            raw += bool(match and int(match["severity"]) <= 4 and float(match["time"]) >= since)
            continue
        if (isinstance(line, dict) and line.get("level") in ("warning", "error", "critical")
                and datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp() >= since):
            lines.append(line)
    return lines, raw


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s.PrivateKafka]:
    state = tmp_path_factory.mktemp("private-kafka")
    broker = s.PrivateKafka(state)
    try:
        try:
            broker.start()
        except RuntimeError:  # a port taken between choosing it and the broker binding it
            broker.stop()
            broker = s.PrivateKafka(state)
            broker.start()
        yield broker
    finally:
        broker.stop()


def _retrainer_sections(config: Path, dsn: str, schema: str, store: Path, work: Path, group: str) -> Path:
    text = config.read_text()
    config.write_text(
        f'model_store_path = "{store}"\n' + text
        + f'\n[postgres]\ndsn = "{dsn}"\ndb_schema = "{schema}"\n'
        + f'\n[retrain]\ngroup_id = "{group}"\npoll_timeout_seconds = 0.1\npost_trigger_rows = 0\n'
        + 'retry_initial_seconds = 0.1\nretry_max_seconds = 1.0\nsession_timeout_ms = 6000\n'
        + f'labelled_read_timeout_seconds = 5\ncooldown_seconds = 0\nwork_dir = "{work}"\n')
    return config


def test_a_broker_outage_loses_and_doubles_nothing(
    private_kafka, kafka_bootstrap, postgres_dsn, db_schema, unique_name, tmp_path, reference, procs
):
    seed = int(os.environ.get("DRIFTLINE_FAULTS_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    context = f"seed {seed}"
    models = [f"m{i}" for i in range(4)]
    per_model = 6000
    detector = {"cooldown": 1500, "ks_window": 500, "ks_stride": 250}
    stream = h.feature_stream(models, per_model, drift_after=3000, drift_column=2, seed=seed % 1000)
    before, after = stream[:len(stream) * 3 // 5], stream[len(stream) * 3 // 5:]
    private = private_kafka.bootstrap

    def run_config(bootstrap: str, app: str, **extra) -> Path:
        directory = tmp_path / app
        directory.mkdir()
        h.create_topics(bootstrap, app)
        # States saved and offsets committed every 50 ms (default 1 s): the committed offset
        # follows the worker closely, so the broker stops in the middle of the stream.
        config = h.write_config(directory, bootstrap, app, models, reference, batch_size=100, detector=detector,
                                broker_session_timeout_seconds=6.0, commit_interval_seconds=0.05, **extra)
        return h.with_inputs(config, app, unique_name)

    def all_seen(bootstrap: str, app: str) -> bool:
        seen = s.events_seen(bootstrap, app)
        return len(seen) == len(models) and all(n == per_model for n in seen.values())

    # The uninterrupted run: the same records in the same order on the shared broker give
    # the same partitions and offsets, so the same trigger ids.
    h.create_topics(kafka_bootstrap, unique_name)
    h.produce(kafka_bootstrap, f"{unique_name}.features", stream)
    baseline = f"{unique_name}_a"
    procs.worker(run_config(kafka_bootstrap, baseline), DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap)

    h.create_topics(private, unique_name)
    h.produce(private, f"{unique_name}.features", before)
    app = f"{unique_name}_b"
    config = run_config(private, app)
    retrainer_group = f"{app}_retrainer"
    _retrainer_sections(config, postgres_dsn, db_schema, tmp_path / "store", tmp_path, retrainer_group)
    # The environment outranks the config file: a bootstrap set there must not win.
    on_private = {"DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS": private}
    worker = procs.worker(config, **on_private)
    retrainer = procs.retrainer(config, **on_private)
    group = MonitorSettings(app_id=app).monitor_group_id
    features = f"{unique_name}.features"
    requests = f"{app}.retrain_requests"
    point = rng.randint(len(before) // 4, len(before) * 3 // 4)

    def done() -> int:
        return sum(max(o, 0) for o in h.committed(private, group, features, range(h.PARTITIONS)).values())

    h.wait_until(lambda: done() >= point, DEADLINE, f"worker at {point} events ({context})", procs.alive, every=0.05)
    stopped_at = done()
    stopped_wall = time.time()
    private_kafka.stop()
    began = time.monotonic()
    while time.monotonic() - began < OUTAGE_SECONDS:  # the outage itself, not a synchronisation
        procs.alive()
        time.sleep(0.5)
    private_kafka.start()
    resumed = done()  # where the worker stood when the broker went away
    context += (f"; broker stopped at {stopped_at} committed events (of {len(before)} then in the topic; "
                f"{resumed} committed before the restart) for {OUTAGE_SECONDS:.0f} s")
    h.produce(private, features, after)
    h.wait_until(lambda: all_seen(private, app), DEADLINE, f"every event counted after the outage ({context})",
                 procs.alive)
    h.wait_until(lambda: s.caught_up(private, group, features), DEADLINE, f"worker committed all ({context})",
                 procs.alive)
    h.wait_until(lambda: all_seen(kafka_bootstrap, baseline), DEADLINE, "uninterrupted run done", procs.alive)
    expected = s.triggers(kafka_bootstrap, f"{baseline}.retrain_requests")
    got = s.triggers(private, requests)
    assert len(expected) >= len(models), context
    assert set(got) == set(expected), f"trigger ids differ ({context})"
    assert got == expected, f"trigger contents differ ({context})"

    # The retrainer: every trigger read, one row each, committed.
    h.wait_until(lambda: s.caught_up(private, retrainer_group, requests), DEADLINE,
                 f"retrainer committed every trigger ({context})", procs.alive)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(db_schema)))
        rows = [r[0] for r in conn.execute("SELECT trigger_id FROM model_retraining_events")]
    assert sorted(rows) == sorted(expected), f"outcome rows are not one per trigger ({context})"
    outcomes: dict[str, set[str]] = {}
    for message in h.read_to_end(private, f"{app}.retrain_events"):
        event = json.loads(message.value())
        outcomes.setdefault(event["trigger_id"], set()).add(event["outcome"])
    assert set(outcomes) == set(expected), f"outcomes published: not one per trigger ({context})"
    assert all(len(o) == 1 for o in outcomes.values()), f"a trigger with two outcomes: {outcomes} ({context})"
    procs.alive()
    assert worker.poll() is None and retrainer.poll() is None

    # The operator's view: the lost connection named once, its end named once, few repeats.
    log: Path = worker.log  # type: ignore[attr-defined]

    def connection(event: str) -> list[dict]:
        return [line for line in _outage_lines(log, stopped_wall)[0]
                if line.get("logger") == "kafka.connection" and line["event"].startswith(event)]

    lost = connection("Kafka connection lost")
    back = h.wait_until(lambda: [json.loads(t) for t in log.read_text(errors="replace").splitlines()
                                 if '"Kafka connection back' in t], DEADLINE, f"a connection-back line ({context})",
                        procs.alive)
    lines, raw = _outage_lines(log, stopped_wall)
    aiokafka = sum(1 for line in lines if line.get("logger", "").startswith("aiokafka"))
    components = [line["component"] for line in lost]
    # one lost line per client (the join's aiokafka, the monitor's librdkafka), never two
    assert "faust join agents (aiokafka)" in components and len(set(components)) == len(components), \
        f"{lost} ({context})"
    assert all(line["broker"] == private and "retrying" in line["event"] for line in lost), f"{lost} ({context})"
    assert ("faust join agents (aiokafka)", private) in [(line["component"], line["broker"]) for line in back]
    assert raw == 0, f"{raw} raw librdkafka lines: a client logs around the limiter ({context})"
    assert len(lines) <= MAX_OUTAGE_LINES, (
        f"{len(lines)} warning/error lines since the broker stopped ({context}): "
        + "; ".join(f"{line.get('logger')}: {line['event'][:80]}" for line in lines[:60]))
    print(f"broker outage: {context}; {len(expected)} triggers, outcomes {sorted(set().union(*outcomes.values()))}; "
          f"worker log since the stop: {len(lines)} warning/error lines ({aiokafka} aiokafka), {raw} raw librdkafka "
          f"lines; back after {back[0]['down_seconds']} s, {back[0]['errors']} errors")
