"""The Prometheus configuration and alert rules are valid, and the rules' unit tests
(`infra/prometheus/alerts_test.yml`) pass under Debian's promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_promtool_checks_config_rules_and_rule_tests() -> None:
    result = subprocess.run(
        [str(ROOT / "infra/prometheus/prometheus.sh"), "check"],
        capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "is valid prometheus config file syntax" in output
    assert output.count("SUCCESS: 7 rules found") >= 1
    assert "FAILED" not in output
