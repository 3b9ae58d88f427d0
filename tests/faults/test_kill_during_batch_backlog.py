"""A worker killed (SIGKILL) at 5 random points of a backlog of batch records (JSON
arrays of events), restarted each time: the triggers are those of an uninterrupted run,
same ids and same contents, and every event is counted once."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from bench import harness as h
from tests.faults import services as s

pytestmark = pytest.mark.services
DEADLINE = 120
KILLS = 5


def test_five_kills_during_a_batch_record_backlog_give_the_uninterrupted_triggers(
    kafka_bootstrap, unique_name, tmp_path, reference, procs
):
    seed = int(os.environ.get("DRIFTLINE_FAULTS_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    models = [f"m{i}" for i in range(4)]
    per_model, size = 10_000, 25
    detector = {"cooldown": 2000, "ks_window": 500, "ks_stride": 250}
    stream = h.feature_stream(models, per_model, drift_after=5000, drift_column=5, seed=seed % 1000)
    records = h.batch_records(stream, size)
    topics = h.create_topics(kafka_bootstrap, unique_name)
    h.produce(kafka_bootstrap, topics["features_topic"], records)
    total = len(records)

    def run_config(app: str) -> Path:
        directory = tmp_path / app
        directory.mkdir()
        h.create_topics(kafka_bootstrap, app)
        # A killed member leaves the group after the broker's shortest session (6 s). States
        # saved every 50 ms (default 1 s): the kill points fall all along the backlog.
        config = h.write_config(directory, kafka_bootstrap, app, models, reference, batch_size=8,
                                detector=detector, broker_session_timeout_seconds=6.0,
                                commit_interval_seconds=0.05)
        return h.with_inputs(config, app, unique_name)

    def all_seen(app: str) -> bool:
        seen = s.events_seen(kafka_bootstrap, app)
        over = {m: n for m, n in seen.items() if n > per_model}
        assert not over, f"{app}: events counted twice: {over} of {per_model} (seed {seed}, kills {where})"
        return len(seen) == len(models) and all(n == per_model for n in seen.values())

    def done(app: str) -> int:
        return sum(max(o, 0) for o in h.committed(kafka_bootstrap, _group(app), topics["features_topic"],
                                                  range(h.PARTITIONS)).values())

    baseline, crashed = f"{unique_name}_a", f"{unique_name}_b"
    where: list[int] = []  # committed records at each kill
    procs.worker(run_config(baseline))  # the uninterrupted run, beside the killed ones
    config = run_config(crashed)
    points = sorted(rng.sample(range(total // 20, total * 3 // 4), KILLS))
    for point in points:
        proc = procs.worker(config)
        h.wait_until(lambda: done(crashed) >= point, DEADLINE,
                     f"kill point {point} of {total} records (seed {seed})", procs.alive, every=0.05)
        procs.kill9(proc)
        where.append(done(crashed))
    context = f"seed {seed}: killed at committed records {where} (points {points}) of {total}"
    assert where[-1] < total, f"the backlog was done before the last kill: {context}"
    h.wait_until(lambda: all_seen(baseline), DEADLINE, "uninterrupted run done", procs.alive)
    expected = s.triggers(kafka_bootstrap, f"{baseline}.retrain_requests")
    assert len(expected) >= len(models), f"too few triggers to compare ({context})"
    procs.worker(config)
    h.wait_until(lambda: all_seen(crashed), DEADLINE, f"restarted run done ({context})", procs.alive)
    got = s.triggers(kafka_bootstrap, f"{crashed}.retrain_requests")
    assert set(got) == set(expected), f"trigger ids differ: {context}"
    assert got == expected, f"trigger contents differ: {context}"
    assert s.events_seen(kafka_bootstrap, crashed) == {m: per_model for m in models}, context


def _group(app: str) -> str:
    from schemas.settings import MonitorSettings

    return MonitorSettings(app_id=app).monitor_group_id
