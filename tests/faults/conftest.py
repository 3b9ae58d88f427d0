"""Fixtures of the fault tests: subprocesses killed at the end whatever happened."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import harness as h


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[h.Processes]:
    p = h.Processes(tmp_path)
    yield p
    p.stop_all()


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return h.write_reference(tmp_path / "reference.csv")
