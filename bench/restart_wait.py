"""Seconds a restarted retrainer waits for its partitions after `kill -9` of the previous
one under the same name (static membership: `instance_id`), read from the group's
description on the broker.

    python bench/restart_wait.py [CODE_DIR]   # CODE_DIR: the checkout the retrainers run
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

code = sys.argv[1] if len(sys.argv) > 1 else str(h.ROOT)
bootstrap = os.environ.get("DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
name = f"restart-wait-{time.time_ns()}"
work = Path(tempfile.mkdtemp(prefix=name))
topics = h.create_topics(bootstrap, name)
config = work / "c.toml"
config.write_text("\n".join([f'model_store_path = "{work}/models"', "[kafka]", f'bootstrap_servers = "{bootstrap}"',
                             *[f'{k} = "{v}"' for k, v in topics.items()], "[retrain]", f'group_id = "{name}-g"']) + "\n")
admin = AdminClient({"bootstrap.servers": bootstrap})

def members():
    d = admin.describe_consumer_groups([f"{name}-g"])[f"{name}-g"].result(timeout=10)
    return d.state, [(m.member_id, len(m.assignment.topic_partitions)) for m in d.members]

def start():
    env = {**os.environ, "PYTHONPATH": code, "DRIFTLINE_INSTANCE_ID": "measure-host"}
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "--config", str(config), "retrainer", "--no-metrics"],
                            cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def wait(condition, limit=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        state, ms = members()
        if condition(state, ms):
            return ms
        time.sleep(0.05)  # polling the broker's view of the group
    raise SystemExit("the group did not settle")

first = start()
[(old, _)] = wait(lambda s, ms: s == ConsumerGroupState.STABLE and len(ms) == 1 and ms[0][1] == h.PARTITIONS)
first.kill(); first.wait()
began = time.monotonic()
second = start()
wait(lambda s, ms: s == ConsumerGroupState.STABLE and len(ms) == 1 and ms[0][0] != old and ms[0][1] == h.PARTITIONS)
print(f"{code}: partitions back {time.monotonic() - began:.1f} s after the restart")
second.kill(); second.wait()
