"""The retrain consumer against the real broker and database."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from detectors import ReferenceProfile
from retrain import metrics
from retrain.model_store import FileModelStore
from schemas.messages import DeadLetter, RetrainOutcome, decode
from tests.retrain.conftest import MODEL, Harness, wait_for
from schemas.settings import Settings
from tests.conftest import ROOT
from tests.retrain.tcp_proxy import TcpProxy
from tests.retrain.trainers import MARKER_ENV, RELEASE_ENV
from tests.services.test_postgres_schema import FIND_ALL, FREQUENCY, IMPROVEMENT, RECENT

pytestmark = pytest.mark.services


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_trigger_is_retrained_promoted_logged_and_committed(harness: Harness) -> None:
    settings = harness.settings()
    request = harness.trigger("t-ok", harness.labelled_window(300, seed=2))
    promoted_before = sample("driftline_retrains_total", model=MODEL, outcome="promoted")
    rows_before = sample("driftline_retrain_rows_prepared_total", model=MODEL, kind="holdout")
    harness.start(settings)

    wait_for(lambda: harness.committed() == 1, "the trigger's offset to be committed")
    [row] = harness.rows()
    assert row["trigger_id"] == "t-ok" and row["model_id"] == MODEL and row["model_version"] == "1"
    assert row["trigger_type"] == "data_drift+concept_drift" and row["severity"] == "HIGH"  # every type
    assert row["execution_attempted"] and row["execution_successful"]
    assert row["retraining_model_version"] == "2"
    assert row["retraining_r2"] is not None and row["retraining_rmse"] is not None
    assert row["comparison_previous_r2"] is not None and row["improvement_rmse_percent"] > 0
    assert row["triggered_at"] == request.created_at.replace(tzinfo=None)
    assert row["execution_metrics"]["counts"]["recent_rows"] == 300

    [event] = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 1)]
    assert (event.outcome, event.previous_version, event.new_version) == ("promoted", "1", "2")
    store = FileModelStore(settings.model_store_path, settings.retrain.keep_versions)
    assert store.current_version(MODEL) == "2"
    assert (
        ReferenceProfile.from_bytes((settings.model_store_path / event.reference_profile).read_bytes()).baseline["rmse"]
        > 0
    )

    assert sample("driftline_retrains_total", model=MODEL, outcome="promoted") == promoted_before + 1
    assert sample("driftline_retrain_rows_prepared_total", model=MODEL, kind="holdout") == rows_before + 60
    assert sample("driftline_model_current_version", model=MODEL) == 2
    assert sample("driftline_retrain_last_improvement_ratio", model=MODEL, metric="rmse") > 0


def test_a_worse_challenger_is_rejected_logged_published_and_the_champion_still_serves(harness: Harness) -> None:
    settings = harness.settings(model={"trainer": "tests.retrain.trainers:constant"})
    harness.trigger("t-worse", harness.labelled_window(300, seed=2))
    rejected_before = sample("driftline_retrains_total", model=MODEL, outcome="rejected")
    harness.start(settings)

    wait_for(lambda: harness.committed() == 1, "the trigger's offset to be committed")
    [row] = harness.rows()
    assert row["trigger_id"] == "t-worse" and row["execution_attempted"] and row["execution_successful"]
    assert row["execution_metrics"]["outcome"] == "rejected"
    assert row["execution_metrics"]["reason"].startswith("rejected: rmse")
    assert row["retraining_model_version"] == "2" and row["improvement_rmse_percent"] < 0
    [event] = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 1)]
    assert (event.outcome, event.previous_version, event.new_version) == ("rejected", "1", "2")
    assert event.reference_profile is None  # nothing for the monitor to re-baseline on
    assert FileModelStore(settings.model_store_path, settings.retrain.keep_versions).current_version(MODEL) == "1"
    assert sample("driftline_retrains_total", model=MODEL, outcome="rejected") == rejected_before + 1
    assert sample("driftline_model_current_version", model=MODEL) != 2


def test_design_queries_run_unchanged_on_the_retrainer_rows(harness: Harness, db) -> None:
    settings = harness.settings(cooldown_seconds=60)
    now = dt.datetime.now(dt.timezone.utc)
    harness.trigger("t-a", harness.labelled_window(200, seed=3), created_at=now - dt.timedelta(minutes=5))
    # raised once t-a's version 2 served (else it would be stale: skipped)
    harness.trigger("t-b", harness.labelled_window(200, seed=4), created_at=now, model_version="2")
    harness.trigger(
        "t-low", harness.labelled_window(10, seed=5), created_at=now - dt.timedelta(minutes=1), severity="LOW"
    )
    harness.start(settings)
    wait_for(lambda: harness.committed() == 3, "three committed triggers")

    assert [r[0] for r in db.execute(FIND_ALL)] == [2, 3, 1]  # t-b, t-low, t-a: newest first
    assert [(r[1], r[3]) for r in db.execute(RECENT)] == [("HIGH", True), ("LOW", None), ("HIGH", True)]
    assert [(r[0], r[1], float(r[2])) for r in db.execute(FREQUENCY)] == [("data_drift+concept_drift", 3, 100.0)]
    assert len(db.execute(IMPROVEMENT).fetchall()) == 2
    skipped = db.execute(
        "SELECT execution_attempted, execution_metrics FROM model_retraining_events WHERE trigger_id = 't-low'"
    ).fetchone()
    assert skipped[0] is False and "severity LOW is below the minimum MEDIUM" in skipped[1]["reason"]


def test_trainer_that_raises_is_a_failed_execution_and_committed(harness: Harness) -> None:
    settings = harness.settings(model={"trainer": "tests.retrain.trainers:failing"})
    harness.trigger("t-fail", harness.labelled_window(150, seed=6))
    harness.start(settings)

    wait_for(lambda: harness.committed() == 1, "the failed trigger's offset to be committed")
    [row] = harness.rows()
    assert row["execution_attempted"] is True and row["execution_successful"] is False
    assert "trainer exploded on purpose" in row["execution_metrics"]["reason"]
    assert row["retraining_model_version"] is None
    assert FileModelStore(settings.model_store_path, 5).current_version(MODEL) == "1"
    [event] = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 1)]
    assert event.outcome == "failed" and event.new_version is None


def test_malformed_trigger_goes_to_the_dead_letter_topic(harness: Harness) -> None:
    settings = harness.settings()
    harness.produce(settings.kafka.retrain_requests_topic, [b'{"trigger_id": "x"'])
    harness.produce(settings.kafka.retrain_requests_topic, [b'{"schema_version": 1, "trigger_id": "x"}'])
    harness.start(settings)

    wait_for(lambda: harness.committed() == 2, "both malformed triggers to be committed")
    letters = [decode(DeadLetter, v) for v in harness.read(settings.kafka.dead_letter_topic, 2)]
    assert [(d.reason, d.source_offset) for d in letters] == [("malformed_json", 0), ("missing_field", 1)]
    assert (
        letters[0].original == b'{"trigger_id": "x"'
        and letters[0].source_topic == settings.kafka.retrain_requests_topic
    )
    assert harness.rows() == []


def test_two_triggers_inside_the_cooldown_retrain_once(harness: Harness) -> None:
    settings = harness.settings(cooldown_seconds=3600)
    now = dt.datetime.now(dt.timezone.utc)
    harness.trigger("t-first", harness.labelled_window(150, seed=7), created_at=now)
    harness.trigger(  # on version 2 (else stale)
        "t-second", harness.labelled_window(150, seed=8), created_at=now + dt.timedelta(seconds=30), model_version="2"
    )
    harness.start(settings)

    wait_for(lambda: harness.committed() == 2, "both triggers to be committed")
    first, second = harness.rows()
    assert (first["trigger_id"], first["execution_attempted"]) == ("t-first", True)
    assert (second["trigger_id"], second["execution_attempted"], second["execution_successful"]) == (
        "t-second",
        False,
        None,
    )
    assert second["execution_metrics"]["reason"].startswith("cooldown")
    assert len(FileModelStore(settings.model_store_path, 5).versions(MODEL)) == 2


def test_redelivered_trigger_is_not_trained_or_written_twice(harness: Harness) -> None:
    settings = harness.settings()
    window = harness.labelled_window(150, seed=9)
    harness.trigger("t-dup", window)
    harness.trigger("t-dup", window)
    harness.start(settings)

    wait_for(lambda: harness.committed() == 2, "both copies to be committed")
    assert [r["trigger_id"] for r in harness.rows()] == ["t-dup"]
    events = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 2)]
    assert [(e.trigger_id, e.outcome) for e in events] == [("t-dup", "promoted")] * 2  # republished, same outcome
    assert FileModelStore(settings.model_store_path, 5).versions(MODEL) == ["1", "2"]


def test_postgres_outage_mid_run_holds_the_commit_and_writes_one_row_once_back(
    harness: Harness, postgres_dsn: str, training_gate: tuple[Path, Path]
) -> None:
    marker, release = training_gate
    address = psycopg.conninfo.conninfo_to_dict(postgres_dsn)
    proxy = TcpProxy(address.get("host", "127.0.0.1"), int(address.get("port", 5432)))
    proxied = psycopg.conninfo.make_conninfo(postgres_dsn, host="127.0.0.1", port=str(proxy.port))
    settings = harness.settings(dsn=proxied, model={"trainer": "tests.retrain.trainers:gated"})
    harness.trigger("t-outage", harness.labelled_window(150, seed=10))
    proxy.up()
    failures_before = metrics.DB_WRITE_FAILURES._value.get()
    harness.start(settings)

    wait_for(marker.exists, "the training to start")
    proxy.down()  # PostgreSQL "stops" while the model trains
    release.touch()  # and the training ends during the outage
    try:
        wait_for(lambda: metrics.DB_WRITE_FAILURES._value.get() >= failures_before + 3, "retries of the row's write")
        assert harness.committed() < 0, "committed before the outcome was written"
        proxy.up()
        wait_for(lambda: harness.committed() == 1, "the commit once PostgreSQL is back")
        [row] = harness.rows()
        assert row["trigger_id"] == "t-outage" and row["execution_successful"] is True
        assert FileModelStore(settings.model_store_path, 5).versions(MODEL) == ["1", "2"]  # trained once
    finally:
        proxy.close()


def _write_config(path: Path, settings: Settings) -> None:
    kafka, retrain = settings.kafka, settings.retrain
    path.write_text(
        f"""model_store_path = "{settings.model_store_path}"
[kafka]
bootstrap_servers = "{kafka.bootstrap_servers}"
labelled_topic = "{kafka.labelled_topic}"
retrain_requests_topic = "{kafka.retrain_requests_topic}"
retrain_events_topic = "{kafka.retrain_events_topic}"
dead_letter_topic = "{kafka.dead_letter_topic}"
[postgres]
dsn = "{settings.postgres.dsn.get_secret_value()}"
db_schema = "{settings.postgres.db_schema}"
[retrain]
group_id = "{retrain.group_id}"
poll_timeout_seconds = 0.1
post_trigger_rows = 0
session_timeout_ms = 6000
work_dir = "{retrain.work_dir}"
[models.{MODEL}]
reference_path = "{settings.models[MODEL].reference_path}"
trainer = "tests.retrain.trainers:gated"
"""
    )


def test_retrainer_killed_mid_training_retrains_after_restart_and_promotes_once(
    harness: Harness, tmp_path: Path, db
) -> None:
    settings = harness.settings()
    config = tmp_path / "driftline.toml"
    _write_config(config, settings)
    marker, release = tmp_path / "training-started", tmp_path / "release"
    env = {**os.environ, MARKER_ENV: str(marker), RELEASE_ENV: str(release), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "streams.cli", "--config", str(config), "retrainer", "--no-metrics"]
    harness.trigger("t-kill", harness.labelled_window(150, seed=11))

    first = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        wait_for(marker.exists, "the first training to start")
    finally:
        first.kill()  # SIGKILL, mid-training
        first.wait()
    assert harness.committed() < 0 and harness.rows() == []
    assert db.execute("SELECT starts FROM retrain_trigger_starts WHERE trigger_id = 't-kill'").fetchone() == (1,)

    marker.unlink()
    release.touch()  # the second training runs through
    second = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: harness.committed() == 1, "the trigger to be processed after the restart")
    finally:
        second.terminate()
        second.wait(30)
    assert marker.exists(), "the restarted retrainer did not train again"
    assert db.execute("SELECT count(*) FROM retrain_trigger_starts").fetchone() == (0,)  # forgotten with the row
    [row] = harness.rows()
    assert row["trigger_id"] == "t-kill" and row["execution_successful"] is True
    store = FileModelStore(settings.model_store_path, 5)
    produced = [store.metadata(MODEL, v) for v in store.versions(MODEL)]
    promoted = [m["version"] for m in produced if m.get("trigger_id") == "t-kill" and m.get("decision") == "promoted"]
    assert promoted == [store.current_version(MODEL)]


def test_over_the_concurrency_limit_a_trigger_waits_then_trains(
    harness: Harness, tmp_path: Path, training_gate: tuple[Path, Path]
) -> None:
    marker, release = training_gate
    settings = harness.settings(
        cooldown_seconds=0,
        max_concurrent_retrains=1,
        model={"trainer": "tests.retrain.trainers:gated"},
        other_models=("m2",),
    )
    harness.trigger("t-p0", harness.labelled_window(150, seed=15), partition=0)
    harness.trigger("t-p1", harness.labelled_window(150, seed=16, model_id="m2"), partition=1, model_id="m2")
    harness.start(settings)

    wait_for(marker.exists, "the first training to start")
    wait_for(lambda: sample("driftline_retrain_triggers_waiting") == 1, "a trigger to wait for the training slot")
    assert len(list(tmp_path.glob("training-started.*"))) == 1, "the second training started over the limit"
    release.touch()
    wait_for(lambda: harness.committed(0) == 1 and harness.committed(1) == 1, "both triggers to be committed")
    assert all(row["execution_successful"] for row in harness.rows())
    store = FileModelStore(settings.model_store_path, 5)
    assert (store.current_version(MODEL), store.current_version("m2")) == ("2", "1")


def test_a_retrainer_restarted_under_its_name_takes_the_place_of_the_killed_one(
    harness: Harness, tmp_path: Path
) -> None:
    """Static membership: the restarted process replaces the dead member at once (a
    new member would share the group with the dead one until its session expired)."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    settings = harness.settings()
    config = tmp_path / "driftline.toml"
    _write_config(config, settings)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    group = settings.retrain.group_id
    argv = [sys.executable, "-m", "streams.cli", "--config", str(config), "retrainer", "--no-metrics"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DRIFTLINE_INSTANCE_ID": "r1"}

    def sole_member(other_than: str | None = None):
        described = admin.describe_consumer_groups([group])[group].result(timeout=10)
        if described.state != ConsumerGroupState.STABLE or len(described.members) != 1:
            return None
        [member] = described.members
        return member if member.member_id != other_than and member.assignment.topic_partitions else None

    first = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        killed = wait_for(sole_member, "the first retrainer to get its partitions")
    finally:
        first.kill()
        first.wait()
    assert killed.group_instance_id == "r1-retrainer"
    second = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        member = wait_for(lambda: sole_member(other_than=killed.member_id), "the restarted retrainer alone in the group")
    finally:
        second.terminate()
        second.wait(30)
    assert member.group_instance_id == "r1-retrainer"
