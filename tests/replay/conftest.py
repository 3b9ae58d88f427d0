from __future__ import annotations

from pathlib import Path

import pytest

from bench import harness as h


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return h.write_reference(tmp_path / "reference.csv")
