"""The command line as a user feels it (start-up and a whole backtest), each against a
yardstick run in the same process tree.

`python -m bench.cli_bench [--quick] [--repeats N] [--rows N]`:
- start-up: the best of N wall-clock runs of `driftline --help` and of every command's
  `--help`, against the best of N runs of `python -c "import numpy"` (target <= 1.5x);
- `driftline backtest`, the whole process, on 150,000 rows x 10 mixed-marginal columns
  (normal, lognormal, uniform, exponential, t, Poisson with ties) plus prediction and
  actual columns, from Parquet (target <= 3 s), beside a fresh `python` that only reads
  the same file with pandas.

Commands run as users run them: the `driftline` script beside this interpreter (or
`python -m streams.cli` when it is not installed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from streams.cli import COMMANDS

HELP_TARGET = 1.5
BACKTEST_TARGET_SECONDS = 3.0
COMMAND = "python -m bench.cli_bench"


def driftline() -> list[str]:
    script = Path(sys.executable).with_name("driftline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "streams.cli"]


def best_seconds(argv: list[str], repeats: int) -> float:
    """The fastest of `repeats` runs, wall clock, from spawning to exit."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - started)
    return best


def write_backtest_files(directory: Path, rows: int, seed: int = 7) -> tuple[Path, Path]:
    """A reference (20,000 rows) and a stream (`rows`), 10 mixed-marginal columns, a
    regression model's prediction and the actual, as Parquet."""
    import numpy as np
    import pandas as pd

    from bench.detectors_bench import mixed

    rng = np.random.default_rng(seed)
    paths = []
    for name, n in (("reference", 20_000), ("stream", rows)):
        x = mixed(rng, n, 10)
        frame = pd.DataFrame(x, columns=[f"x{j}" for j in range(10)])
        frame["prediction"] = x[:, :3].sum(axis=1)
        frame["actual"] = frame["prediction"] + rng.normal(scale=0.5, size=n)
        path = directory / f"{name}.parquet"
        frame.to_parquet(path)
        paths.append(path)
    return paths[0], paths[1]


def main(argv: list[str] | None = None) -> list[tuple[str, str, str]]:
    parser = argparse.ArgumentParser(prog="bench.cli_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs of each instead of 7")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--rows", type=int, default=150_000)
    args, _ = parser.parse_known_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    command = f"{COMMAND} --repeats {repeats}"
    rows: list[tuple[str, str, str]] = []

    numpy_seconds = best_seconds([sys.executable, "-c", "import numpy"], repeats)
    helps = [("driftline --help", best_seconds([*driftline(), "--help"], repeats))]
    for name, *_ in COMMANDS:
        helps.append((f"driftline {name} --help", best_seconds([*driftline(), *name.split(), "--help"], repeats)))
    print(f"python -c 'import numpy': {numpy_seconds * 1000:.0f} ms (best of {repeats})", flush=True)
    for what, seconds in helps:
        print(f"{what}: {seconds * 1000:.0f} ms, {seconds / numpy_seconds:.2f}x", flush=True)
    slowest_what, slowest = max(helps, key=lambda item: item[1])
    met = "met" if slowest <= HELP_TARGET * numpy_seconds else "NOT met"
    rows.append((f"start-up of `driftline --help` and of every command's `--help` ({len(helps)} in all)",
                 f"{helps[0][1] * 1000:.0f} ms for `driftline --help`, slowest `{slowest_what}` "
                 f"{slowest * 1000:.0f} ms, against {numpy_seconds * 1000:.0f} ms for `python -c \"import numpy\"`: "
                 f"{helps[0][1] / numpy_seconds:.2f}x and {slowest / numpy_seconds:.2f}x "
                 f"(target <= {HELP_TARGET}x: {met})", command))

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        reference, stream = write_backtest_files(directory, args.rows)
        output = directory / "triggers.jsonl"
        backtest = best_seconds([*driftline(), "backtest", "--reference", str(reference), "--stream", str(stream),
                                 "--output", str(output)], repeats)
        read_only = best_seconds([sys.executable, "-c", f"import pandas; pandas.read_parquet({str(stream)!r})"],
                                 repeats)
        triggers = sum(1 for _ in output.open())
    met = "met" if backtest <= BACKTEST_TARGET_SECONDS else "NOT met"
    line = (f"{backtest:.2f} s for the whole process ({triggers} triggers), against {read_only:.2f} s for a "
            f"fresh python reading the same file with pandas ({backtest / read_only:.1f}x); "
            f"target <= {BACKTEST_TARGET_SECONDS:g} s: {met}")
    print(f"driftline backtest, {args.rows:,} rows x 10 mixed-marginal columns: {line}", flush=True)
    rows.append((f"`driftline backtest`, {args.rows:,} rows x 10 mixed-marginal columns with prediction and "
                 "actual, from Parquet", line, command))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
