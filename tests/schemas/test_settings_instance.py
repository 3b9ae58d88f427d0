"""The name a process gives itself in its consumer groups (static membership)."""

from __future__ import annotations

from schemas.settings import Settings


def test_each_consumer_of_a_process_has_a_stable_name_of_its_own() -> None:
    assert Settings().group_instance_id("monitor") is None  # no static membership unless named
    assert Settings().static_membership("monitor") == {}
    named = Settings(instance_id="worker-a")
    assert [named.group_instance_id(role) for role in ("monitor", "join", "retrainer")] == [
        "worker-a-monitor", "worker-a-join", "worker-a-retrainer"]
    assert named.static_membership("join") == {"group.instance.id": "worker-a-join"}

