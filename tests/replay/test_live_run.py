"""Replaying the topics of a live worker run gives that run's triggers: the same
trigger_ids, decisions and positions, although the worker cut the stream into batches of
its own (small ones here, and half the events arriving while it runs)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.replay import helpers
from bench import harness as h

pytestmark = pytest.mark.services
DEADLINE = 90
PER_MODEL = 4000
# model -> (feature shift at, concept change at); "steady" changes neither
MODELS = {"shifting": (1500, 2000), "concept": (PER_MODEL, 2500), "steady": (PER_MODEL, PER_MODEL)}


def messages(message, half: int) -> list[tuple[str, bytes, None]]:
    frames = {m: helpers.rows(PER_MODEL, shift_at=s, concept_at=c, seed=k)
              for k, (m, (s, c)) in enumerate(MODELS.items())}
    return [(m, message(m, i, frames[m].iloc[i]), None) for i in range(half * PER_MODEL // 2, (half + 1) * PER_MODEL // 2)
            for m in MODELS]


def test_replay_of_a_live_run_gives_its_triggers(kafka_bootstrap, unique_name, tmp_path: Path, reference: Path):
    topics = h.create_topics(kafka_bootstrap, unique_name)
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, list(MODELS), reference,
                            detector=helpers.DETECTORS, batch_size=300, batch_within_seconds=0.05)
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    worker = None
    try:
        for half in (0, 1):
            helpers.produce(kafka_bootstrap, topics["features_topic"], messages(helpers.feature_message, half))
            helpers.produce(kafka_bootstrap, topics["labelled_topic"], messages(helpers.labelled_message, half))
            if worker is None:
                worker = h.start_worker(config, tmp_path / "worker.log")

        def alive() -> None:
            if worker.poll() is not None:
                raise AssertionError(f"worker exited: {(tmp_path / 'worker.log').read_text()[-3000:]}")

        def all_seen() -> bool:
            states = h.read_states(kafka_bootstrap, unique_name)
            return set(states) == set(MODELS) and all(
                s.events_seen == PER_MODEL and s.labelled_seen == PER_MODEL for s in states.values())

        h.wait_until(all_seen, DEADLINE, "the worker saw every event", alive)
        # Triggers are published before the state that follows them is saved.
        requests = h.TopicReader(kafka_bootstrap, topics["retrain_requests_topic"])
        requests.wait_for(lambda m: len(m) >= 1, DEADLINE, alive=alive)
        requests.poll(1.0)
        live = {r["trigger_id"]: r for r in requests.values()}
        requests.close()
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
    end = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)

    output = tmp_path / "replayed.jsonl"
    result = helpers.driftline(
        "replay", "--config", str(config), "--topic", topics["features_topic"], "--topic",
        topics["labelled_topic"], "--from", start.isoformat(), "--to", end.isoformat(),
        "--output", str(output), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    replayed = {t["trigger_id"]: t for t in helpers.read_lines(output)}

    assert {r["model_id"] for r in live.values()} == {"shifting", "concept"}
    assert {r["model_id"] for r in live.values() if "data_drift" in r["decision"]["trigger_types"]} == {"shifting"}
    assert len(live) >= 4 and set(replayed) == set(live)
    for trigger_id, line in replayed.items():
        request = live[trigger_id]
        decision = request["decision"]
        assert (line["model_id"], line["model_version"]) == (request["model_id"], request["model_version"])
        for key in ("trigger_types", "severity", "confidence", "columns", "reason"):
            assert line[key] == decision[key], key
        # on the wire every root cause has a detail, null but for the data-quality signals'
        assert [{"detail": None, **cause} for cause in line["root_cause"]] == decision["root_cause"]
        window = request["window"][line["source"]]
        assert window["topic"] == line["topic"]
        assert (window["ranges"][-1]["partition"], window["ranges"][-1]["end"]) == \
            (line["partition"], line["kafka_offset"])
