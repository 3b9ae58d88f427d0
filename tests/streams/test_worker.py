"""The monitor as a service, against the real broker: each test has its own topics and
app id, runs `driftline worker` as subprocesses and waits on conditions with deadlines."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from detectors import DetectorConfig, ReferenceProfile
from bench import harness as h

pytestmark = pytest.mark.services
DEADLINE = 90


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[h.Processes]:
    w = h.Processes(tmp_path)
    yield w
    w.stop_all()


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return h.write_reference(tmp_path / "reference.csv")


def triggers(reader: h.TopicReader) -> list[dict]:
    return reader.values()


def test_drift_gives_one_trigger_with_root_cause_and_no_drift_none(
    kafka_bootstrap, unique_name, tmp_path, reference, workers
):
    topics = h.create_topics(kafka_bootstrap, unique_name)
    port = h.free_port()
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, ["drifting", "steady"], reference,
                            metrics_port=port, lag_interval_seconds=0.5)
    stream = h.feature_stream(["drifting"], 4000, drift_after=2000, drift_column=3)
    stream += h.feature_stream(["steady"], 4000, seed=7)
    h.produce(kafka_bootstrap, topics["features_topic"], stream)
    workers.worker(config)
    requests = h.TopicReader(kafka_bootstrap, topics["retrain_requests_topic"])
    requests.wait_for(lambda m: len(m) >= 1, DEADLINE, alive=workers.alive)
    h.wait_until(lambda: all(h.events_seen(s) == 4000 for s in h.read_states(kafka_bootstrap, unique_name).values())
                 and len(h.read_states(kafka_bootstrap, unique_name)) == 2, DEADLINE, "all events seen", workers.alive)
    # Triggers are acknowledged before the states that follow them are saved: all there.
    messages = h.read_to_end(kafka_bootstrap, topics["retrain_requests_topic"])
    [request] = [json.loads(m.value()) for m in messages]
    assert messages[0].key() == b"drifting"
    assert request["model_id"] == "drifting"
    assert "data_drift" in request["decision"]["trigger_types"]
    assert request["decision"]["root_cause"][0]["column"] == "f3"
    assert request["decision"]["columns"] == ["f3"]
    window = request["window"]["features"]
    assert window["topic"] == topics["features_topic"]
    [offsets] = window["ranges"]
    assert offsets["start"] == 0 and 2000 <= offsets["end"] < 4000 * 2
    assert request["window"]["event_time_start"] < request["window"]["event_time_end"]
    assert len(request["trigger_id"]) == 32
    # Consumer lag: one series per assigned input partition, all caught up at the end.
    features_lag = 'driftline_consumer_lag_messages{partition="%d",topic="%s"} 0.0'
    h.wait_until(lambda: all(features_lag % (p, topics["features_topic"]) in _scrape(port)
                             for p in range(h.PARTITIONS)), DEADLINE, "consumer lag 0", workers.alive)
    assert 'driftline_consumer_lag_messages{partition="0",topic="%s"}' % topics["labelled_topic"] in _scrape(port)


def test_an_exception_in_the_detectors_dead_letters_only_the_failing_events(
    kafka_bootstrap, unique_name, tmp_path, reference, workers
):
    from tests.streams.poison_worker import POISON

    topics = h.create_topics(kafka_bootstrap, unique_name)
    port = h.free_port()
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, ["m0", "m1"], reference,
                            batch_size=1000, metrics_port=port)
    stream = h.feature_stream(["m0", "m1"], 5000, seed=9)
    poisoned = {37, 1500, 1501, 4000, 9998}  # positions in the stream (models alternate)
    values = []
    for i, (model, value) in enumerate(stream):
        if i in poisoned:
            event = json.loads(value)
            event["features"]["f0"] = POISON
            value = json.dumps(event).encode()
        values.append((model, value))
    h.produce(kafka_bootstrap, topics["features_topic"], values)
    proc = workers.worker(config, module="tests.streams.poison_worker")
    dead = h.TopicReader(kafka_bootstrap, topics["dead_letter_topic"])
    dead.wait_for(lambda m: len(m) >= len(poisoned), DEADLINE, alive=workers.alive)
    expected = {m: 5000 - sum(1 for i in poisoned if stream[i][0] == m) for m in ("m0", "m1")}
    h.wait_until(lambda: {m: h.events_seen(s) for m, s in h.read_states(kafka_bootstrap, unique_name).items()}
                 == expected, DEADLINE, "every valid event counted", workers.alive)
    letters = [json.loads(m.value()) for m in h.read_to_end(kafka_bootstrap, topics["dead_letter_topic"])]
    assert len(letters) == len(poisoned)
    assert {l["reason"] for l in letters} == {"processing_error"}
    assert all("poisoned batch" in l["detail"] for l in letters)
    import base64
    ids = {json.loads(base64.b64decode(l["original"]))["event_id"] for l in letters}
    assert ids == {json.loads(stream[i][1])["event_id"] for i in poisoned}
    workers.alive()
    log = proc.log.read_text()  # type: ignore[attr-defined]
    assert '"event": "model batch failed: isolating the failing events"' in log
    assert topics["features_topic"] + "[" in log  # the partition and offsets are logged
    metrics = _scrape(port)
    assert 'driftline_events_invalid_total{reason="processing_error"} %d.0' % len(poisoned) in metrics


def test_hostile_input_goes_to_dead_letters_valid_events_are_all_counted_and_a_restart_survives(
    kafka_bootstrap, unique_name, tmp_path, reference, workers
):
    topics = h.create_topics(kafka_bootstrap, unique_name)
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, ["m0"], reference)
    valid = h.feature_stream(["m0"], 10_000, seed=3)
    good = json.loads(valid[0][1])
    bad_kinds = [  # (key, value, reason)
        ("m0", b"not json at all", "malformed_json"),
        ("m0", json.dumps({**good, "features": "oops"}).encode(), "wrong_type"),
        ("m0", json.dumps({k: v for k, v in good.items() if k != "event_id"}).encode(), "missing_field"),
        ("m0", json.dumps({**good, "features": {"f0": float("nan")}}).encode(), "not_finite"),
        ("nobody", json.dumps({**good, "model_id": "nobody"}).encode(), "unknown_model"),
        ("m0", json.dumps({**good, "schema_version": 99}).encode(), "future_schema_version"),
        ("m0", json.dumps({**good, "features": {"f0": "text"}}).encode(), "wrong_type"),
        ("m1", json.dumps({**good, "event_id": "keyed-m1"}).encode(), "key_mismatch"),
        ("m0", b"[" * 10_000 + b"]" * 10_000, "too_deep"),
    ]
    mixed = []
    for i, (key, value) in enumerate(valid):
        mixed += [(key, value), bad_kinds[i % len(bad_kinds)][:2]]
    # A record near the broker's default size limit (1 MiB): its dead letter must still fit.
    huge = json.dumps({**good, "padding": "x" * 900_000, "event_id": None}).encode()
    mixed += [("m0", huge)] * 3
    h.produce(kafka_bootstrap, topics["features_topic"], mixed)
    workers.worker(config)
    dead = h.TopicReader(kafka_bootstrap, topics["dead_letter_topic"])
    dead.wait_for(lambda m: len(m) >= 10_003, DEADLINE, alive=workers.alive)
    h.wait_until(lambda: h.events_seen(h.read_states(kafka_bootstrap, unique_name).get("m0")) == 10_000,
                 DEADLINE, "valid events counted", workers.alive)
    workers.alive()
    letters = dead.values()
    assert len(letters) == 10_003
    reasons = [letter["reason"] for letter in letters]
    for _, _, reason in bad_kinds:
        assert reasons.count(reason) >= 10_000 // len(bad_kinds) - 1, reason
    by_offset = {(l["source_partition"], l["source_offset"]): l for l in letters}
    assert len(by_offset) == 10_003
    import base64
    import hashlib
    small = [l for l in letters if not l["original_truncated"]]
    assert {base64.b64decode(l["original"]) for l in small} == {value for _, value, _ in bad_kinds}
    cut = [l for l in letters if l["original_truncated"]]
    assert len(cut) == 3 and {l["original_size"] for l in cut} == {len(huge)}
    assert {l["original_sha256"] for l in cut} == {hashlib.sha256(huge).hexdigest()}
    assert all(l["source_topic"] == topics["features_topic"] for l in letters)
    # Dead letters are keyed like their records, so murmur2 puts them with their model.
    assert {m.key() for m in dead.messages} == {b"m0", b"m1", b"nobody"}
    dead.close()

    # The same records read again after a restart crash nothing, and new events count.
    workers.kill9(workers.procs[0])
    workers.worker(config)
    h.produce(kafka_bootstrap, topics["features_topic"], h.feature_stream(["m0"], 10_010, seed=3)[10_000:])
    h.wait_until(lambda: h.events_seen(h.read_states(kafka_bootstrap, unique_name).get("m0")) == 10_010,
                 DEADLINE, "events after the restart counted", workers.alive)
    workers.alive()


def test_late_actuals_are_joined_and_what_never_matches_expires(
    kafka_bootstrap, unique_name, tmp_path, reference, workers
):
    topics = h.create_topics(kafka_bootstrap, unique_name)
    port = h.free_port()
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, ["m0"], reference,
                            metrics_port=port, join_ttl_seconds=3.0, join_sweep_interval_seconds=0.5)
    now = dt.datetime.now(dt.timezone.utc)

    def event(i: int, **extra) -> bytes:
        return json.dumps({"model_id": "m0", "model_version": "1", "event_id": f"e{i}",
                           "timestamp": now.isoformat(), **extra}).encode()

    h.produce(kafka_bootstrap, topics["predictions_topic"],
              [("m0", event(i, prediction=float(i), features={"f0": 0.5})) for i in range(200)])
    workers.worker(config)
    h.wait_until(lambda: 'driftline_events_consumed_total{topic="%s"} 200.0' % topics["predictions_topic"]
                 in _scrape(port), DEADLINE, "predictions consumed", workers.alive)
    # Late actuals for 150 of them (and one for a prediction never seen).
    h.produce(kafka_bootstrap, topics["actuals_topic"],
              [("m0", event(i, actual=float(i) + 1)) for i in range(150)] + [("m0", event(999, actual=1.0))])
    labelled = h.TopicReader(kafka_bootstrap, topics["labelled_topic"])
    labelled.wait_for(lambda m: len(m) >= 150, DEADLINE, alive=workers.alive)
    h.wait_until(lambda: 'driftline_joins_total{outcome="expired"} 50.0' in (text := _scrape(port))
                 and 'driftline_joins_total{outcome="unmatched"} 1.0' in text,
                 DEADLINE, "50 predictions and the actual without one expired", workers.alive)
    metrics = _scrape(port)
    assert 'driftline_joins_total{outcome="matched"} 150.0' in metrics
    assert 'driftline_joins_total{outcome="unmatched"} 1.0' in metrics
    records = labelled.values()
    assert sorted(int(r["event_id"][1:]) for r in records) == list(range(150))
    assert all(r["actual"] == r["prediction"] + 1 and r["features"] == {"f0": 0.5} for r in records)
    assert "driftline_batch_processing_seconds_bucket" in metrics


def test_an_actual_read_before_its_prediction_waits_for_it(kafka_bootstrap, unique_name, tmp_path, reference,
                                                          workers):
    """A worker catching up on a backlog reads the actuals topic at its own pace: an
    actual that comes first waits for its prediction instead of being dropped."""
    topics = h.create_topics(kafka_bootstrap, unique_name)
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, ["m0"], reference)
    now = dt.datetime.now(dt.timezone.utc).isoformat()

    def event(i: int, **extra) -> bytes:
        return json.dumps({"model_id": "m0", "model_version": "1", "event_id": f"e{i}", "timestamp": now,
                           **extra}).encode()

    h.produce(kafka_bootstrap, topics["actuals_topic"], [("m0", event(i, actual=float(i))) for i in range(100)])
    labelled = h.TopicReader(kafka_bootstrap, topics["labelled_topic"])
    workers.worker(config)
    h.wait_until(lambda: h.committed_total(kafka_bootstrap, unique_name, topics["actuals_topic"],
                                           group=unique_name) >= 100,
                 DEADLINE, "actuals consumed", workers.alive)
    # Outputs are acknowledged before offsets are committed: none was written.
    assert sum(h.high_watermarks(kafka_bootstrap, topics["labelled_topic"]).values()) == 0
    h.produce(kafka_bootstrap, topics["predictions_topic"],
              [("m0", event(i, prediction=float(i) - 1, features={"f0": 0.5})) for i in range(100)])
    labelled.wait_for(lambda m: len(m) >= 100, DEADLINE, alive=workers.alive)
    records = labelled.values()
    assert sorted(int(r["event_id"][1:]) for r in records) == list(range(100))
    assert all(r["actual"] == r["prediction"] + 1 and r["features"] == {"f0": 0.5} for r in records)


def _scrape(port: int) -> str:
    try:
        return h.scrape(port)
    except OSError:
        return ""


def test_kill_9_recovery_gives_the_triggers_of_an_uninterrupted_run(
    kafka_bootstrap, unique_name, tmp_path, reference, workers
):
    topics = h.create_topics(kafka_bootstrap, unique_name)
    models = [f"m{i}" for i in range(4)]
    per_model = 12_000
    detector = {"cooldown": 2000, "ks_window": 500, "ks_stride": 250}
    stream = h.feature_stream(models, per_model, drift_after=4000, drift_column=5)
    h.produce(kafka_bootstrap, topics["features_topic"], stream)

    def run_config(app: str) -> Path:
        d = tmp_path / app
        d.mkdir()
        # States saved every 50 ms (default 1 s): the kill lands in the middle of the stream.
        cfg = h.write_config(d, kafka_bootstrap, app, models, reference, batch_size=200, detector=detector,
                             commit_interval_seconds=0.05)
        return h.with_inputs(cfg, app, unique_name)  # shared inputs, own outputs

    def all_seen(app: str) -> bool:
        states = h.read_states(kafka_bootstrap, app)
        return len(states) == 4 and all(h.events_seen(s) == per_model for s in states.values())

    baseline_app, crash_app = f"{unique_name}_a", f"{unique_name}_b"
    h.create_topics(kafka_bootstrap, baseline_app)
    h.create_topics(kafka_bootstrap, crash_app)
    workers.worker(run_config(baseline_app))
    h.wait_until(lambda: all_seen(baseline_app), DEADLINE, "uninterrupted run done", workers.alive)
    expected_ids = {json.loads(m.value())["trigger_id"]
                    for m in h.read_to_end(kafka_bootstrap, f"{baseline_app}.retrain_requests")}
    assert len(expected_ids) >= 4

    crash_config = run_config(crash_app)
    first = workers.worker(crash_config)
    seed = random.randrange(2**32)
    kill_at = random.Random(seed).randint(per_model // 4, per_model * 3)
    h.wait_until(lambda: h.committed_total(kafka_bootstrap, crash_app, topics["features_topic"]) >= kill_at,
                 DEADLINE, "crash run under way", workers.alive)
    workers.kill9(first)
    workers.worker(crash_config)
    h.wait_until(lambda: all_seen(crash_app), DEADLINE, "restarted run done", workers.alive)
    got_ids = {json.loads(m.value())["trigger_id"]
               for m in h.read_to_end(kafka_bootstrap, f"{crash_app}.retrain_requests")}
    assert got_ids == expected_ids, f"killed at committed offset {kill_at} (seed {seed})"
    # Killed after states were saved: the restarted worker went on from them.
    h.wait_until(lambda: '"event": "state restored"' in (tmp_path / "worker-2.log").read_text(), DEADLINE,
                 f"the restarted worker restored the saved states (seed {seed})", workers.alive)


def test_two_workers_share_models_and_one_takes_over_when_the_other_dies(
    kafka_bootstrap, unique_name, tmp_path, reference, workers
):
    topics = h.create_topics(kafka_bootstrap, unique_name)
    models = [f"model-{i}" for i in range(8)]
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, models, reference, batch_size=500)
    first_half = h.feature_stream(models, 2000, seed=11)
    h.produce(kafka_bootstrap, topics["features_topic"], first_half)
    one = workers.worker(config)
    workers.worker(config)
    h.wait_until(lambda: len(h.read_states(kafka_bootstrap, unique_name)) == 8
                 and all(h.events_seen(s) == 2000 for s in h.read_states(kafka_bootstrap, unique_name).values()),
                 DEADLINE, "both workers monitoring", workers.alive)
    partitions = {s.progress[topics["features_topic"]].partition for s in h.read_states(kafka_bootstrap, unique_name).values()}
    assert len(partitions) >= 2
    # Each of the two workers is given partitions (not one of them all, the other none).
    def last_assignment(proc) -> list[int]:
        assigned = [json.loads(line)["partitions"] for line in proc.log.read_text().splitlines()
                    if '"event": "partitions assigned"' in line]
        return assigned[-1] if assigned else []

    # Until the group settles, a worker's last logged assignment can be the one from before
    # the other joined: wait for the split, not for any assignment.
    def split() -> bool:
        first, second = (last_assignment(proc) for proc in workers.procs)
        return bool(first) and bool(second) and sorted(first + second) == [0, 1, 2, 3]

    h.wait_until(split, DEADLINE, "both workers have partitions, together all four", workers.alive)
    workers.kill9(one)
    second_half = [(m, v) for m, v in h.feature_stream(models, 6000, drift_after=2000, drift_column=1, seed=11)[8 * 2000:]]
    h.produce(kafka_bootstrap, topics["features_topic"], second_half)
    requests = h.TopicReader(kafka_bootstrap, topics["retrain_requests_topic"])
    requests.wait_for(lambda m: {r.key() for r in m} == {m.encode() for m in models}, DEADLINE * 2, alive=workers.alive)
    h.wait_until(lambda: all(h.events_seen(s) == 6000 for s in h.read_states(kafka_bootstrap, unique_name).values()),
                 DEADLINE, "survivor monitored every model to the end", workers.alive)


def test_promotion_rebaselines_the_monitor(kafka_bootstrap, unique_name, tmp_path, reference, workers):
    topics = h.create_topics(kafka_bootstrap, unique_name)
    store = tmp_path / "store"
    (store / "m0" / "2").mkdir(parents=True)
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, ["m0"], reference,
                            detector={"cooldown": 1000, "ks_window": 500, "ks_stride": 250})
    config.write_text(f'model_store_path = "{store}"\n' + config.read_text())
    shifted = pd.read_csv(reference)
    shifted["f3"] += 1.5
    profile = ReferenceProfile.from_frame(shifted, prediction_column="prediction", actual_column="actual",
                                          config=DetectorConfig(cooldown=1000, ks_window=500, ks_stride=250))
    (store / "m0" / "2" / "profile.bin").write_bytes(profile.to_bytes())
    drifted = h.feature_stream(["m0"], 12_000, drift_after=0, drift_column=3, seed=5)
    h.produce(kafka_bootstrap, topics["features_topic"], drifted[:3000])
    workers.worker(config)
    requests = h.TopicReader(kafka_bootstrap, topics["retrain_requests_topic"])
    [first] = requests.wait_for(lambda m: len(m) >= 1, DEADLINE, alive=workers.alive)[:1]
    trigger = json.loads(first.value())
    outcome = {"schema_version": 1, "trigger_id": trigger["trigger_id"], "model_id": "m0",
               "outcome": "promoted", "previous_version": "1", "new_version": "2",
               "reference_profile": "m0/2/profile.bin", "completed_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    h.produce(kafka_bootstrap, topics["retrain_events_topic"], [("m0", json.dumps(outcome).encode())])
    state = lambda: h.read_states(kafka_bootstrap, unique_name)["m0"]  # noqa: E731
    index = 3000
    while state().promotion_id != trigger["trigger_id"]:  # each batch checks for promotions
        h.produce(kafka_bootstrap, topics["features_topic"], drifted[index:index + 100])
        index += 100
        h.wait_until(lambda: state().progress[topics["features_topic"]].last_offset >= index - 1,
                     DEADLINE, "batch processed", workers.alive)
        assert index < 6000, "promotion not applied"
    assert state().fingerprint == profile.fingerprint and state().model_version == "2"
    before = len(h.read_to_end(kafka_bootstrap, topics["retrain_requests_topic"]))
    h.produce(kafka_bootstrap, topics["features_topic"], drifted[index:])
    h.wait_until(lambda: state().progress[topics["features_topic"]].last_offset == 11_999,
                 DEADLINE, "all processed", workers.alive)
    assert len(h.read_to_end(kafka_bootstrap, topics["retrain_requests_topic"])) == before, \
        "the drift the new model was trained on triggered again"
    # After kill -9, every worker (two now) reads the promotion again; the restored state
    # already has it: it is not applied twice, and the monitor keeps the new reference.
    workers.kill9(workers.procs[0])
    again = [workers.worker(config), workers.worker(config)]
    more = h.feature_stream(["m0"], 14_000, drift_after=0, drift_column=3, seed=5)[12_000:]
    h.produce(kafka_bootstrap, topics["features_topic"], more)
    h.wait_until(lambda: state().progress[topics["features_topic"]].last_offset == 13_999,
                 DEADLINE, "all processed after the restart", workers.alive)
    assert state().promotion_id == trigger["trigger_id"] and state().reference == "m0/2/profile.bin"
    assert h.events_seen(state()) >= 14_000 - 6000  # counted on from the restored state
    def logs() -> list[str]:
        return [proc.log.read_text() for proc in again]  # type: ignore[attr-defined]

    h.wait_until(lambda: all('"event": "promotion seen"' in log for log in logs()), DEADLINE,
                 "both workers read the promotion", workers.alive)
    logs = logs()
    assert not any('"event": "re-baselined"' in log for log in logs)
    assert any('"reference": "m0/2/profile.bin"' in log and '"event": "state restored"' in log for log in logs)
    assert len(h.read_to_end(kafka_bootstrap, topics["retrain_requests_topic"])) == before


def test_batch_records_drift_gives_one_trigger_with_root_cause_and_an_event_position_id(
    kafka_bootstrap, unique_name, tmp_path, reference, workers
):
    from streams.decoding import Record
    from streams.model_state import trigger_id

    topics = h.create_topics(kafka_bootstrap, unique_name)
    port = h.free_port()
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, ["drifting", "steady"], reference,
                            metrics_port=port)
    size = 250  # events per record: the trigger fires inside a record
    stream = h.feature_stream(["drifting"], 4000, drift_after=2000, drift_column=3)
    stream += h.feature_stream(["steady"], 4000, seed=7)
    records = h.batch_records(stream, size)
    assert len(records) == 2 * 4000 // size
    h.produce(kafka_bootstrap, topics["features_topic"], records)
    workers.worker(config)
    requests = h.TopicReader(kafka_bootstrap, topics["retrain_requests_topic"])
    requests.wait_for(lambda m: len(m) >= 1, DEADLINE, alive=workers.alive)
    h.wait_until(lambda: len(h.read_states(kafka_bootstrap, unique_name)) == 2
                 and all(h.events_seen(s) == 4000 for s in h.read_states(kafka_bootstrap, unique_name).values()),
                 DEADLINE, "all events seen", workers.alive)
    [request] = [json.loads(m.value()) for m in h.read_to_end(kafka_bootstrap, topics["retrain_requests_topic"])]
    assert request["model_id"] == "drifting"
    assert "data_drift" in request["decision"]["trigger_types"]
    assert request["decision"]["root_cause"][0]["column"] == "f3"
    assert request["decision"]["columns"] == ["f3"]
    [offsets] = request["window"]["features"]["ranges"]
    # Offsets are the records': 16 records per model, the drift starts in the 9th.
    assert offsets["start"] == 0 and 2000 // size <= offsets["end"] < len(records)
    assert request["window"]["event_time_start"] < request["window"]["event_time_end"]
    # The id is derived from (topic, partition, offset, position in the record).
    state = h.read_states(kafka_bootstrap, unique_name)["drifting"]
    candidates = {trigger_id("drifting", "1", state.fingerprint,
                             Record(topics["features_topic"], offsets["partition"], offsets["end"], b"", i)): i
                  for i in range(size)}
    assert request["trigger_id"] in candidates
    assert trigger_id("drifting", "1", state.fingerprint,
                      Record(topics["features_topic"], offsets["partition"], offsets["end"], b"")) not in candidates
    # Metrics count events, not records.
    h.wait_until(lambda: 'driftline_events_consumed_total{topic="%s"} 8000.0' % topics["features_topic"]
                 in _scrape(port), DEADLINE, "events counted", workers.alive)


def test_a_bad_batch_record_dead_letters_only_its_invalid_events(
    kafka_bootstrap, unique_name, tmp_path, reference, workers
):
    import base64

    topics = h.create_topics(kafka_bootstrap, unique_name)
    port = h.free_port()
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, ["m0"], reference, metrics_port=port)
    stream = h.feature_stream(["m0"], 2000, seed=4)
    events = [json.loads(value) for _, value in stream]
    events[307]["features"] = "oops"  # record 3, event 7: wrong type
    del events[350]["event_id"]  # record 3, event 50: missing field
    events[420]["features"]["f1"] = "text"  # record 4, event 20: a string in a numeric column
    records = h.batch_records([("m0", json.dumps(e).encode()) for e in events], 100)
    records[5] = ("m0", records[5][1][:-10])  # record 5: the array does not parse
    records.append(("m0", b"[]"))  # record 20: empty
    h.produce(kafka_bootstrap, topics["features_topic"], records)
    workers.worker(config)
    dead = h.TopicReader(kafka_bootstrap, topics["dead_letter_topic"])
    dead.wait_for(lambda m: len(m) >= 5, DEADLINE, alive=workers.alive)
    h.wait_until(lambda: h.events_seen(h.read_states(kafka_bootstrap, unique_name).get("m0")) == 2000 - 3 - 100,
                 DEADLINE, "valid events counted", workers.alive)
    letters = {(l["source_offset"], l["source_index"]): l
               for l in map(json.loads, (m.value() for m in h.read_to_end(kafka_bootstrap, topics["dead_letter_topic"])))}
    assert {k: l["reason"] for k, l in letters.items()} == {
        (3, 7): "wrong_type", (3, 50): "missing_field", (4, 20): "wrong_type",
        (5, None): "malformed_json", (20, None): "empty_batch"}
    assert json.loads(base64.b64decode(letters[(3, 7)]["original"]))["event_id"] == "m0-307"
    assert json.loads(base64.b64decode(letters[(4, 20)]["original"]))["event_id"] == "m0-420"
    assert base64.b64decode(letters[(5, None)]["original"]) == records[5][1]
    state = h.read_states(kafka_bootstrap, unique_name)["m0"]
    assert state.progress[topics["features_topic"]].last_offset == 19  # the last record with a valid event
    metrics = _scrape(port)
    assert 'driftline_events_consumed_total{topic="%s"} 1902.0' % topics["features_topic"] in metrics


def test_an_unacknowledged_state_stops_the_worker_and_a_restart_counts_every_event_once(
    kafka_bootstrap, unique_name, tmp_path, reference, workers
):
    """The crash path outside any one model: the broker refuses the states (a 1 KiB
    message limit on the state topic), so the worker must stop without committing;
    once the limit is lifted a restart counts every event exactly once."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

    from schemas.settings import MonitorSettings

    topics = h.create_topics(kafka_bootstrap, unique_name)
    state_topic = MonitorSettings(app_id=unique_name).state_topic
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(state_topic, num_partitions=h.PARTITIONS, replication_factor=1,
                                  config={"cleanup.policy": "compact", "max.message.bytes": "1024"})]
                        )[state_topic].result(timeout=30)
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, ["m0"], reference, batch_size=500)
    h.produce(kafka_bootstrap, topics["features_topic"], h.feature_stream(["m0"], 3000, seed=3))

    failing = workers.worker(config)
    failing.killed = True  # expected to exit  # type: ignore[attr-defined]
    failing.wait(timeout=DEADLINE)
    assert failing.returncode != 0
    assert "monitor loop failed" in failing.log.read_text()  # type: ignore[attr-defined]
    assert h.committed_total(kafka_bootstrap, unique_name, topics["features_topic"]) == 0

    resource = ConfigResource(ConfigResource.Type.TOPIC, state_topic, incremental_configs=[
        ConfigEntry("max.message.bytes", str(16 * 1024 * 1024), incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    workers.worker(config)
    h.wait_until(lambda: {m: h.events_seen(s) for m, s in h.read_states(kafka_bootstrap, unique_name).items()}
                 == {"m0": 3000}, DEADLINE, "restart counted every event", workers.alive)
    h.wait_until(lambda: h.committed_total(kafka_bootstrap, unique_name, topics["features_topic"]) == 3000,
                 DEADLINE, "restart committed every event", workers.alive)


def test_kill_9_during_a_join_backlog_loses_no_labelled_record(
    kafka_bootstrap, unique_name, tmp_path, reference, workers
):
    """A backlog of predictions and actuals, the worker killed at a random point while
    joining them, then restarted: every pair gives its labelled record (a repeat is
    allowed: outputs are at-least-once)."""
    topics = h.create_topics(kafka_bootstrap, unique_name)
    models = [f"m{i}" for i in range(4)]
    per_model = 5000
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, models, reference, batch_size=500)
    now = dt.datetime.now(dt.timezone.utc).isoformat()

    def event(model: str, i: int, **extra) -> bytes:
        return json.dumps({"model_id": model, "model_version": "1", "event_id": f"{model}-{i}",
                           "timestamp": now, **extra}).encode()

    h.produce(kafka_bootstrap, topics["predictions_topic"],
              [(m, event(m, i, prediction=float(i))) for i in range(per_model) for m in models])
    h.produce(kafka_bootstrap, topics["actuals_topic"],
              [(m, event(m, i, actual=float(i) + 1)) for i in range(per_model) for m in models])
    labelled = h.TopicReader(kafka_bootstrap, topics["labelled_topic"])
    first = workers.worker(config)
    labelled.wait_for(lambda m: len(m) > 0, DEADLINE, alive=workers.alive)
    seed = random.randrange(2**32)
    kill_at = random.Random(seed).randint(1, per_model * len(models) // 2)
    labelled.wait_for(lambda m: len(m) >= kill_at, DEADLINE, alive=workers.alive)
    workers.kill9(first)
    workers.worker(config)
    expected = {f"{m}-{i}" for m in models for i in range(per_model)}
    try:
        labelled.wait_for(lambda m: {json.loads(r.value())["event_id"] for r in m} >= expected, DEADLINE * 2,
                          alive=workers.alive)
    except AssertionError as error:
        raise AssertionError(f"killed after {kill_at} labelled records (seed {seed}): {error}") from None
    assert all(r["actual"] == r["prediction"] + 1 for r in labelled.values())


def test_the_worker_creates_its_topics_and_starts_every_time(
    kafka_bootstrap, unique_name, tmp_path, reference, workers
):
    from schemas.settings import KafkaSettings
    from streams.topics import ensure_topics

    # A topic just created is not in the next metadata answer at once: wait for it.
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    for attempt in range(10):
        names = [f"{unique_name}.{attempt}.{role}" for role in ("inputs", "outputs", "state")]
        assert ensure_topics(kafka, names, partitions=h.PARTITIONS, replication_factor=1) == {
            name: h.PARTITIONS for name in names}

    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, ["m0"], reference)
    workers.worker(config)
    features = h.topics_for(unique_name)["features_topic"]
    admin = h.AdminClient({"bootstrap.servers": kafka_bootstrap})
    h.wait_until(lambda: features in admin.list_topics(timeout=5).topics, DEADLINE,
                 "the worker created its topics", workers.alive)
    h.produce(kafka_bootstrap, features, h.feature_stream(["m0"], 100, seed=4))
    h.wait_until(lambda: h.events_seen(h.read_states(kafka_bootstrap, unique_name).get("m0", _NoState)) == 100,
                 DEADLINE, "events counted", workers.alive)


class _NoState:
    events_seen = 0


def test_the_worker_refuses_a_topic_of_another_partition_count(kafka_bootstrap, unique_name, tmp_path, reference):
    """What a producer started first did when the broker auto-created `features` with
    one partition: the worker must say so and stop, not crash-loop."""
    import subprocess
    import sys

    topics = h.topics_for(unique_name)
    admin = h.AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([h.NewTopic(topics["features_topic"], num_partitions=1,
                                                  replication_factor=1)]).values():
        future.result(timeout=30)
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, ["m0"], reference)
    done = subprocess.run([sys.executable, "-m", "streams.cli", "--config", str(config), "worker"],
                          cwd=h.ROOT, capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert f"{topics['features_topic']} has 1" in lines[0]
    assert f"monitor.partitions ({h.PARTITIONS})" in lines[0]
    assert "recreate it with 4 partitions" in lines[0] and "Traceback" not in done.stderr
    # Refused before creating anything: the other topics are not there.
    assert topics["labelled_topic"] not in admin.list_topics(timeout=10).topics


def test_the_partition_check_names_every_topic_and_the_fix():
    from streams.topics import PartitionMismatch, check_partitions

    check_partitions({"a": 4, "b": 4}, 4)
    with pytest.raises(PartitionMismatch, match=r"a has 1, b has 1; .*recreate them with 4 partitions.*"
                                                r"or set monitor.partitions = 1"):
        check_partitions({"a": 1, "b": 1}, 4)
    with pytest.raises(PartitionMismatch, match=r"b has 2; .*recreate it with 4 partitions \(") as raised:
        check_partitions({"a": 4, "b": 2}, 4)
    assert "monitor.partitions =" not in str(raised.value)


def test_events_of_a_model_in_another_partition_are_dead_lettered_never_counted_as_replays(
    kafka_bootstrap, unique_name, tmp_path, reference, workers
):
    """One model, two producers: murmur2 puts "m0" in partition 3, librdkafka's default
    (consistent_random, a CRC32 of the key) in partition 1. The second half was once
    skipped as replays of the first (offsets compared across partitions) and lost."""
    topics = h.create_topics(kafka_bootstrap, unique_name)
    port = h.free_port()
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, ["m0"], reference, metrics_port=port)
    stream = h.feature_stream(["m0"], 2000, seed=5)
    h.produce(kafka_bootstrap, topics["features_topic"], stream[:1000])
    h.produce(kafka_bootstrap, topics["features_topic"], stream[1000:], partitioner="consistent_random")
    ends = h.high_watermarks(kafka_bootstrap, topics["features_topic"])
    assert ends[3] == 1000 and ends[1] == 1000  # the two partitioners really disagree
    workers.worker(config)
    h.wait_until(lambda: h.committed_total(kafka_bootstrap, unique_name, topics["features_topic"]) == 2000,
                 DEADLINE, "every record committed", workers.alive)
    assert h.events_seen(h.read_states(kafka_bootstrap, unique_name)["m0"]) == 1000
    letters = [json.loads(m.value()) for m in h.read_to_end(kafka_bootstrap, topics["dead_letter_topic"])]
    assert len(letters) == 1000
    assert {(l["reason"], l["source_partition"]) for l in letters} == {("wrong_partition", 1)}
    assert "partition 3" in letters[0]["detail"] and "murmur2" in letters[0]["detail"]
    # One saved state, in the model's murmur2 partition.
    states = [m for m in h.read_to_end(kafka_bootstrap, topics_state(unique_name)) if m.value()]
    assert {m.partition() for m in states} == {3}
    metrics = _scrape(port)
    assert 'driftline_partition_mismatch_total{model="m0",topic="%s"} 1000.0' % topics["features_topic"] in metrics
    assert 'driftline_events_replayed_total{topic="%s"}' % topics["features_topic"] not in metrics


def topics_state(app_id: str) -> str:
    from schemas.settings import MonitorSettings

    return MonitorSettings(app_id=app_id).state_topic
