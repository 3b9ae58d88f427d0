"""Prometheus (Debian's, on loopback) scrapes a running worker, and the key series are
there through its HTTP API with sane values."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from bench import harness as h

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 90

pytestmark = pytest.mark.services


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())["data"]["result"]
    except OSError:
        return []


def test_prometheus_scrapes_the_worker(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> None:
    topics = h.create_topics(kafka_bootstrap, unique_name)
    metrics_port, prometheus_port = h.free_port(), h.free_port()
    reference = h.write_reference(tmp_path / "reference.csv")
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, ["scraped"], reference, metrics_port=metrics_port)
    h.produce(kafka_bootstrap, topics["features_topic"], h.feature_stream(["scraped"], 3000, drift_after=1500, drift_column=3))
    worker = h.start_worker(config, tmp_path / "worker.log")
    scrape_config = tmp_path / "prometheus.yml"
    scrape_config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: driftline-worker\n    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
    )
    script = str(ROOT / "infra/prometheus/prometheus.sh")
    env = {**os.environ, "DRIFTLINE_STATE_DIR": str(tmp_path / "state")}
    subprocess.run([script, "start", str(scrape_config), str(prometheus_port)], check=True, env=env)
    try:
        h.wait_until(lambda: query(prometheus_port, 'up{job="driftline-worker"} == 1'), DEADLINE, "the worker scraped")
        h.wait_until(
            lambda: query(prometheus_port, 'driftline_events_consumed_total > 2999'), DEADLINE, "all events counted",
        )
        columns = set(h.COLUMNS)

        def per_column(name: str) -> dict[str, float]:
            return {series["metric"]["column"]: float(series["value"][1])
                    for series in query(prometheus_port, f'{name}{{model="scraped"}}')}

        # The gauges are set after the batch's events are counted: wait for a scrape of them.
        h.wait_until(lambda: set(per_column("driftline_column_ks_statistic")) == columns, DEADLINE,
                     "a KS statistic per column scraped")
        assert all(0.0 <= value <= 1.0 for value in per_column("driftline_column_ks_statistic").values())
        thresholds = per_column("driftline_column_ks_threshold")
        assert set(thresholds) == columns and all(0.0 < value < 1.0 for value in thresholds.values())
        dependence = per_column("driftline_column_dependence_factor")
        assert set(dependence) == columns and all(value >= 1.0 for value in dependence.values())
        h.wait_until(lambda: query(prometheus_port, 'sum(driftline_triggers_total{model="scraped"}) >= 1'),
                     DEADLINE, "the trigger counted")
        assert query(prometheus_port, "driftline_batch_processing_seconds_count > 0")
    finally:
        subprocess.run([script, "stop"], env=env, check=False)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
