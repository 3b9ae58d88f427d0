"""A command imports only what it uses: `--help` loads no subcommand's heavy libraries,
and `check` no streaming, plotting or training library."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("faust", "aiokafka", "matplotlib", "plotly", "sklearn", "scipy.stats", "pandas")
PROBE = """
import json, sys
from streams.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def loaded(*argv: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_driftline_help_imports_no_subcommand_library():
    assert loaded("--help") == []


@pytest.mark.parametrize("command", ["check", "backtest"])
def test_batch_commands_help_loads_no_streaming_plotting_or_training_library(command):
    assert not {"faust", "aiokafka", "matplotlib", "plotly", "sklearn"} & set(loaded(command, "--help"))
