"""Workers started against topics that do not exist yet, with fresh names each time, and
two workers of one app at once (they race to create the same topics): every worker
starts, the topics have the configured partitions (the state topic compacted), and the
events produced afterwards are counted once.

tests/streams/test_worker.py has the light version (one worker, ensure_topics 10 times)."""

from __future__ import annotations

import json

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from bench import harness as h
from schemas.settings import MonitorSettings
from tests.faults import services as s

pytestmark = pytest.mark.services
DEADLINE = 120
APPS = 3
EVENTS = 100


def test_workers_on_missing_topics_start_every_time_also_two_at_once(
    kafka_bootstrap, unique_name, tmp_path, reference, procs
):
    apps = [f"{unique_name}_{i}" for i in range(APPS)]
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    existing = admin.list_topics(timeout=10).topics
    assert not any(topic.startswith(unique_name) for topic in existing)
    configs = {}
    for app in apps:
        directory = tmp_path / app
        directory.mkdir()
        configs[app] = h.write_config(directory, kafka_bootstrap, app, ["m0"], reference)
    pairs = {app: (procs.worker(configs[app]), procs.worker(configs[app])) for app in apps}

    def created(app: str) -> bool:
        topics = admin.list_topics(timeout=10).topics
        names = [*h.topics_for(app).values(), MonitorSettings(app_id=app).state_topic]
        return all(name in topics and len(topics[name].partitions) == h.PARTITIONS for name in names)

    for app in apps:
        h.wait_until(lambda: created(app), DEADLINE, f"{app}: the workers created their topics", procs.alive)
        h.produce(kafka_bootstrap, h.topics_for(app)["features_topic"], h.feature_stream(["m0"], EVENTS, seed=4))
    for app in apps:
        h.wait_until(lambda: s.events_seen(kafka_bootstrap, app) == {"m0": EVENTS}, DEADLINE,
                     f"{app}: events counted once", procs.alive)
        group = MonitorSettings(app_id=app).monitor_group_id
        h.wait_until(lambda: s.caught_up(kafka_bootstrap, group, h.topics_for(app)["features_topic"]), DEADLINE,
                     f"{app}: events committed", procs.alive)

        def joined(proc) -> bool:
            return any('"event": "partitions assigned"' in line
                       for line in proc.log.read_text(errors="replace").splitlines())

        h.wait_until(lambda: all(joined(p) for p in pairs[app]), DEADLINE,
                     f"{app}: both workers joined the monitor's group", procs.alive)
    procs.alive()
    resources = [ConfigResource(ConfigResource.Type.TOPIC, MonitorSettings(app_id=app).state_topic) for app in apps]
    for future in admin.describe_configs(resources).values():
        assert future.result(timeout=30)["cleanup.policy"].value == "compact"
    for app in apps:
        for proc in pairs[app]:
            lines = [json.loads(line) for line in proc.log.read_text(errors="replace").splitlines()
                     if line.startswith("{") and '"level": "error"' in line]
            errors = [line.get("event") for line in lines if line.get("logger", "").startswith(("streams", "schemas"))]
            assert not errors, f"{proc.log}: {errors[:5]}"
