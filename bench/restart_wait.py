"""Seconds a restarted retrainer or worker waits for its partitions after `kill -9` of the
previous one under the same name (static membership: `instance_id`), read from its
consumer group's description on the broker.

    python bench/restart_wait.py retrainer|worker [CODE_DIR]   # CODE_DIR: the checkout run
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from bench import harness as h
from schemas.settings import MonitorSettings

role = sys.argv[1]
code = sys.argv[2] if len(sys.argv) > 2 else str(h.ROOT)
bootstrap = os.environ.get("DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
name = f"restart-wait-{time.time_ns()}"
work = Path(tempfile.mkdtemp(prefix=name))
h.create_topics(bootstrap, name)
config = h.write_config(work, bootstrap, name, ["m0"], h.write_reference(work / "reference.csv"))
config.write_text(config.read_text() + f'\n[retrain]\ngroup_id = "{name}-retrainer"\n')
# The worker's monitor group reads features and labelled: both topics' partitions.
group, partitions = ((f"{name}-retrainer", h.PARTITIONS) if role == "retrainer"
                     else (MonitorSettings(app_id=name).monitor_group_id, 2 * h.PARTITIONS))
admin = AdminClient({"bootstrap.servers": bootstrap})


def sole_member() -> tuple[str, int] | None:
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    if described.state != ConsumerGroupState.STABLE or len(described.members) != 1:
        return None
    [member] = described.members
    return member.member_id, len(member.assignment.topic_partitions)


def start() -> subprocess.Popen:
    command = ["retrainer", "--no-metrics"] if role == "retrainer" else ["worker"]
    env = {**os.environ, "PYTHONPATH": code, "DRIFTLINE_INSTANCE_ID": "restart-wait"}
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "--config", str(config), *command],
                            cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_sole_member(other_than: str | None = None) -> str:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = sole_member()
        if found and found[0] != other_than and found[1] == partitions:
            return found[0]
        time.sleep(0.05)  # polling the broker's view of the group
    raise SystemExit("the group did not settle")


first = start()
killed = wait_for_sole_member()
first.kill()
first.wait()
began = time.monotonic()
second = start()
wait_for_sole_member(other_than=killed)
print(f"{role} ({code}): partitions back {time.monotonic() - began:.1f} s after the restart")
second.kill()
second.wait()
