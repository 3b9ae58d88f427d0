"""`make bench` (`python -m bench [--quick] [--only NAME ...]`): runs the benchmarks and
prints one table, the README's performance figures: what, measured, command; with a
line describing the machine (`bench/machine.py`).

The benchmarks, in turn: every `bench/*_bench.py` module and `bench/loop.py` when it
exists, each through its `main(argv)` with `--quick` when given. A `main` that returns
rows `(what, measured, command)` puts them in the table; otherwise its printed speed
lines ("driftline speed N cols: ...") and what | measured | command tables become rows,
and its other tables (the detectors' targets, `bench.loop`'s) are printed again after it. `--quick` takes a few minutes; without it
the figures are the README's (1,000,000 events through the broker, 30 s of latency).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import pkgutil
import re
import sys
import time
import traceback
from pathlib import Path

from bench import machine

HERE = Path(__file__).parent
EXTRA = ("loop",)  # benchmark modules without the _bench suffix, run when present


class _Tee(io.TextIOBase):
    """Writes to the terminal and keeps a copy (a bench's printed lines)."""

    def __init__(self, stream) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def modules(only: list[str] | None = None) -> list[str]:
    present = {m.name for m in pkgutil.iter_modules([str(HERE)])}
    names = sorted(n for n in present if n.endswith("_bench")) + [n for n in EXTRA if n in present]
    if only:
        names = [n for n in names if n in only or n.removesuffix("_bench") in only]
    return names


def _tables(printed: str) -> list[list[str]]:
    """The markdown tables in a bench's output (runs of lines starting with '|')."""
    tables: list[list[str]] = []
    current: list[str] = []
    for line in printed.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def _is_row_table(table: list[str]) -> bool:
    header = [c.strip() for c in table[0].strip().strip("|").split("|")]
    return header == ["what", "measured", "command"]


def _printed_rows(name: str, printed: str, argv: list[str]) -> list[tuple[str, str, str]]:
    """Rows from what a bench printed: the detectors' speed lines, and the rows of a
    table with the columns what | measured | command."""
    rows = []
    command = " ".join(["python -m", f"bench.{name}", *argv])
    for match in re.finditer(r"^driftline speed (\d+) cols: (.+)$", printed, re.MULTILINE):
        rows.append((f"streaming core (detectors), {match.group(1)} columns, one core", match.group(2),
                     command))
    for table in filter(_is_row_table, _tables(printed)):
        for line in table[2:]:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 3:
                rows.append((cells[0], cells[1], cells[2].strip("`")))
    return rows


def run(name: str, argv: list[str]) -> tuple[list[tuple[str, str, str]], list[list[str]]]:
    """The bench's rows for the table, and the other tables it printed."""
    print(f"== bench.{name} {' '.join(argv)}".rstrip(), flush=True)
    tee = _Tee(sys.stdout)
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(tee):
            returned = importlib.import_module(f"bench.{name}").main(argv)
    except Exception as error:  # one failing bench does not hide the others' figures
        traceback.print_exc()
        return [(f"bench.{name}", f"FAILED: {type(error).__name__}: {error}", f"python -m bench.{name}")], []
    print(f"(bench.{name}: {time.perf_counter() - started:.0f} s)", flush=True)
    printed = tee.copy.getvalue()
    others = [t for t in _tables(printed) if not _is_row_table(t)]
    if isinstance(returned, list) and all(isinstance(r, tuple) and len(r) == 3 for r in returned):
        return returned, others
    return _printed_rows(name, printed, argv), others


def table(rows: list[tuple[str, str, str]], description: str) -> str:
    lines = [f"Measured on: {description}", "", "| what | measured | command |", "|---|---|---|"]
    lines += [f"| {what} | {measured} | `{command}` |" for what, measured, command in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs: a few minutes in all")
    parser.add_argument("--only", nargs="*", help="modules to run (e.g. worker_bench loop)")
    args = parser.parse_args(argv)
    description = machine.describe()  # the load average before the benches add to it
    bench_argv = ["--quick"] if args.quick else []
    rows: list[tuple[str, str, str]] = []
    others: list[tuple[str, list[str]]] = []
    for name in modules(args.only):
        more, tables = run(name, bench_argv)
        rows += more
        others += [(name, t) for t in tables]
    print()
    print(table(rows, description))
    for name, lines in others:  # e.g. bench.loop's table, as it printed it
        print(f"\nbench.{name}:\n")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
