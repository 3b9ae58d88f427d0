"""The Grafana dashboard is valid JSON, every panel has a query, every query parses
(promtool), and every metric a query names is one the code exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra/grafana/dashboards/driftline.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("_sum", "_count", "_created")}


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [re.sub(r"^label_values\((\w+),.*\)$", r"\1", v["definition"]) for v in dashboard["templating"]["list"]]
    return exprs


def metric_names(expr: str) -> set[str]:
    """Identifiers that are neither functions, keywords, label names nor values."""
    stripped = re.sub(r'"[^"]*"', "", expr)
    stripped = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", stripped)
    stripped = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", stripped)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped):
        following = stripped[match.end():].lstrip()[:1]
        if following != "(" and match.group() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def exported_names() -> set[str]:
    from retrain import metrics as retrain_metrics
    from streams.metrics import MonitorMetrics

    registries: list[CollectorRegistry] = [MonitorMetrics().registry, retrain_metrics.REGISTRY]
    names = set()
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def test_every_panel_has_a_query() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_every_query_parses(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m").replace("$model", "m")}
        for i, e in enumerate(queries())
    ]}]}
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    subprocess.run([str(ROOT / "infra/prometheus/prometheus.sh"), "install"], check=True)
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("expr", queries())
def test_queries_name_only_exported_metrics(expr: str) -> None:
    names = metric_names(expr)
    assert names, expr
    assert names <= exported_names(), f"not exported: {sorted(names - exported_names())}"


def test_the_parser_finds_metric_names() -> None:
    expr = 'histogram_quantile(0.5, sum by (le) (rate(a_bucket{model="x"}[5m]))) / on(m) b unless c'
    assert metric_names(expr) == {"a_bucket", "b", "c"}
