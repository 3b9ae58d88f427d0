"""A command imports only what it uses: `--help` (of driftline and of every command) loads
no command's libraries, and `check` no streaming, plotting or training library.

Checked on the modules loaded, which is deterministic; the start-up times themselves
(every `--help` within 1.5x of `python -c "import numpy"`) are `bench.cli_bench`'s business."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from streams.cli import build_parser

HEAVY = ("faust", "aiokafka", "matplotlib", "plotly", "sklearn", "scipy", "pandas", "pydantic", "psycopg", "structlog",
         "confluent_kafka", "mlflow")
HELP_LOADS_NONE_OF = (*HEAVY, "numpy", "pyarrow")
PROBE = """
import json, sys
from streams.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))
"""


def run_probe(*argv: str, modules: tuple[str, ...] = HEAVY) -> tuple[str, list[str]]:
    """`driftline *argv` in a fresh interpreter: its output, and which of `modules` it loaded."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(modules=modules), *argv],
                         capture_output=True, text=True, check=True).stdout
    *printed, last = out.strip().splitlines()
    return "\n".join(printed), json.loads(last)


def loaded(*argv: str) -> list[str]:
    return run_probe(*argv)[1]


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command of `parser`, a nested one as its words: ("db", "migrate")."""
    found: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, (*prefix, name)) or [(*prefix, name)]
    return found


# From the parser, built without any command's options: listing them imports none.
COMMANDS = commands(build_parser([]))


def test_the_commands_are_listed_from_the_parser():
    assert {("retrainer",), ("models",), ("check",), ("db", "migrate")} <= set(COMMANDS)


def test_driftline_help_imports_no_subcommand_library():
    output, used = run_probe("--help", modules=HELP_LOADS_NONE_OF)
    assert "usage: driftline" in output
    assert used == []


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_commands_help_loads_none_of_its_libraries(command):
    """`--help` starts as fast as Python: the libraries load when the command runs."""
    output, used = run_probe(*command, "--help", modules=HELP_LOADS_NONE_OF)
    assert f"usage: driftline {' '.join(command)}" in output  # its own help, with its options
    assert used == []


def test_check_loads_no_streaming_plotting_or_training_library(tmp_path):
    lines = {"reference.csv": [f"{i % 7},{i % 5}" for i in range(400)],
             "recent.csv": [f"{i % 7 + 3},{i % 5}" for i in range(200)]}
    for name, rows in lines.items():
        (tmp_path / name).write_text("\n".join(["a,b", *rows]) + "\n")
    used = loaded("check", "--reference-data", str(tmp_path / "reference.csv"),
                  "--recent-data", str(tmp_path / "recent.csv"))
    assert "pandas" in used  # it did read the files
    assert not set(used) & {"faust", "aiokafka", "matplotlib", "plotly", "sklearn", "psycopg", "confluent_kafka"}
