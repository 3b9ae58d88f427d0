"""docs/configuration.md's example is a valid settings file: every key it shows exists."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from schemas.settings import Settings

CONFIGURATION = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_configuration_example_loads():
    block = re.search(r"```toml\n(.*?)```", CONFIGURATION.read_text(), re.S).group(1)
    data = tomllib.loads(block)
    assert set(data) >= {"kafka", "postgres", "detectors", "monitor", "retrain", "models"}
    settings = Settings(**data)  # unknown keys are refused (extra="forbid")
    assert settings.detectors.target_arl == 10_000_000
