"""A plain Kafka consumer reads and understands the monitor's triggers: `driftline worker`
publishes a retrain request on drift, Debian's kcat (librdkafka, no driftline code) reads
it from `retrain-requests`, and the standard `json` module is enough to use it."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from bench import harness as h

pytestmark = pytest.mark.services
DEADLINE = 90
MODEL = "drifting"


def kcat() -> str:
    path = shutil.which("kcat")
    if path is None:  # `make test` installs it: a missing tool fails, as a missing service does
        pytest.fail("kcat is not installed; install it with `infra/tools.sh install` (or `make tools`)")
    return path


def read_with_kcat(binary: str, bootstrap: str, topic: str) -> list[tuple[str, str]]:
    """(key, value) of every message on `topic`, from the beginning, as kcat prints them."""
    result = subprocess.run(
        [binary, "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
         "-f", "%k\t%s\n"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [tuple(line.split("\t", 1)) for line in result.stdout.splitlines() if line]


def test_kcat_reads_a_trigger_published_by_the_worker(kafka_bootstrap, unique_name, tmp_path: Path):
    binary = kcat()
    topics = h.create_topics(kafka_bootstrap, unique_name)
    reference = h.write_reference(tmp_path / "reference.csv")
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, [MODEL], reference)
    h.produce(kafka_bootstrap, topics["features_topic"],
              h.feature_stream([MODEL], 4000, drift_after=2000, drift_column=3))
    worker = h.start_worker(config, tmp_path / "worker.log")

    def alive() -> None:
        if worker.poll() is not None:
            tail = (tmp_path / "worker.log").read_text()[-3000:]
            raise AssertionError(f"worker exited with {worker.returncode}:\n{tail}")

    requests = h.TopicReader(kafka_bootstrap, topics["retrain_requests_topic"])
    try:
        requests.wait_for(lambda m: len(m) >= 1, DEADLINE, alive=alive)
    finally:
        requests.close()
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)

    lines = read_with_kcat(binary, kafka_bootstrap, topics["retrain_requests_topic"])
    assert lines, "kcat read nothing from the retrain-requests topic"
    for key, value in lines:
        request = json.loads(value)
        assert key == request["model_id"] == MODEL
        assert request["schema_version"] == 1
        assert isinstance(request["trigger_id"], str) and request["trigger_id"]
        assert isinstance(request["model_version"], str) and request["model_version"]
        decision = request["decision"]
        assert decision["severity"] in ("LOW", "MEDIUM", "HIGH", "CRITICAL")
        assert "data_drift" in decision["trigger_types"]
        assert 0.0 <= decision["confidence"] <= 1.0
        assert decision["root_cause"][0]["column"] == "f3"
        assert {"signal", "column", "strength"} <= decision["root_cause"][0].keys()
        assert decision["columns"] == ["f3"]
        window = request["window"]["features"]
        assert window["topic"] == topics["features_topic"]
        [offsets] = window["ranges"]
        assert 0 <= offsets["partition"] < h.PARTITIONS
        assert 0 <= offsets["start"] <= offsets["end"]
        assert request["window"]["event_time_start"] <= request["window"]["event_time_end"]
