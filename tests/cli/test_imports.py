"""A command imports only what it uses: `--help` loads no subcommand's heavy libraries,
and `check` no streaming, plotting or training library."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("faust", "aiokafka", "matplotlib", "plotly", "sklearn", "scipy", "pandas", "pydantic", "psycopg",
         "confluent_kafka")
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


@pytest.mark.parametrize("command", ["check", "backtest", "worker", "replay", "retrain", "simulate", "db migrate"])
def test_a_commands_help_loads_none_of_its_libraries(command):
    """`--help` starts as fast as Python and numpy: the libraries load when the command runs."""
    assert loaded(*command.split(), "--help") == []
