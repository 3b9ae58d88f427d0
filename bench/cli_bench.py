"""The command line as a user feels it (start-up and a whole backtest), each against a
yardstick run in the same process tree.

`python -m bench.cli_bench [--quick] [--repeats N] [--rows N]`:
- start-up: the best of N wall-clock runs of `driftline --help` and of every command's
  `--help`, against the best of N runs of `python -c "import numpy"` (target <= 1.5x);
- `driftline backtest`, the whole process, from Parquet (target <= 3 s), beside a fresh
  `python` that only reads the same file with pandas, on two files of 150,000 rows:
  10 mixed-marginal columns (normal, lognormal, uniform, exponential, t, Poisson with
  ties) with a regression model's prediction and actual; and a heavily tied
  classification stream, 9 integer sensor columns (3 to a few hundred distinct values,
  serially dependent as sensors are) with a 0/1 prediction and label
  (`--actual-column label`). Wall clock (best of N) and CPU seconds (median of N, the
  process and its threads): on a shared machine the CPU figure is the steadier one.

Commands run as users run them: the `driftline` script beside this interpreter (or
`python -m streams.cli` when it is not installed).
"""

from __future__ import annotations

import argparse
import resource
import statistics
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
    return timed_runs(argv, repeats)[0]


def timed_runs(argv: list[str], repeats: int) -> tuple[float, float]:
    """The fastest of `repeats` runs, wall clock from spawning to exit, and their median
    CPU seconds (user + system, every thread of the process)."""
    best, cpus = float("inf"), []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return best, statistics.median(cpus)


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


def write_tied_classification_files(directory: Path, rows: int, seed: int = 11) -> tuple[Path, Path]:
    """A reference (20,000 rows) and a stream (`rows`) of a classifier over 9 integer
    sensor columns: AR(1) readings (lag-1 correlation 0 to 0.99) rounded to integers,
    3 to a few hundred distinct values, so every column is heavily tied; a 0/1
    prediction and label, as Parquet."""
    import numpy as np
    import pandas as pd
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    phis = (0.0, 0.3, 0.6, 0.9, 0.95, 0.5, 0.8, 0.2, 0.99)
    scales = (1.0, 3.0, 10.0, 0.5, 40.0, 2.0, 100.0, 0.3, 5.0)
    paths = []
    for name, n in (("tied-reference", 20_000), ("tied-stream", rows)):
        frame = pd.DataFrame({
            f"s{j}": np.round(scale * (3 + lfilter([1.0], [1.0, -phi], rng.normal(size=n)) * np.sqrt(1 - phi**2)))
            .astype(np.int64)
            for j, (phi, scale) in enumerate(zip(phis, scales))})
        score = frame["s1"] / 3 - 3 + rng.normal(size=n)
        frame["prediction"] = (score > 0).astype(np.int64)
        frame["label"] = (score + rng.normal(scale=0.7, size=n) > 0).astype(np.int64)
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
        cases = [(f"{args.rows:,} rows x 10 mixed-marginal columns with prediction and actual",
                  write_backtest_files(directory, args.rows), []),
                 (f"{args.rows:,} rows x 9 tied integer sensor columns, classification (prediction, label)",
                  write_tied_classification_files(directory, args.rows), ["--actual-column", "label"])]
        for what, (reference, stream), extra in cases:
            output = directory / "triggers.jsonl"
            backtest, cpu = timed_runs([*driftline(), "backtest", "--reference", str(reference), "--stream",
                                        str(stream), "--output", str(output), *extra], repeats)
            read_only = best_seconds(
                [sys.executable, "-c", f"import pandas; pandas.read_parquet({str(stream)!r})"], repeats)
            triggers = sum(1 for _ in output.open())
            met = "met" if backtest <= BACKTEST_TARGET_SECONDS else "NOT met"
            line = (f"{backtest:.2f} s for the whole process ({cpu:.2f} CPU seconds; {triggers} triggers), "
                    f"against {read_only:.2f} s for a fresh python reading the same file with pandas "
                    f"({backtest / read_only:.1f}x); target <= {BACKTEST_TARGET_SECONDS:g} s: {met}")
            print(f"driftline backtest, {what}: {line}", flush=True)
            rows.append((f"`driftline backtest`, {what}, from Parquet", line, command))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
