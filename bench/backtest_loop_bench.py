"""`driftline backtest --retrain` (issue 23): how long the whole loop replay takes, and what
it says on real labelled data sets that ship inside installed packages.

`python -m bench.backtest_loop_bench [--quick] [--dataset NAME ...]`:
- speed: 15,000 labelled rows x 10 columns (the workload's six features and four more
  of other marginals; a change of concept at row 5,000 and a covariate shift at 10,000),
  the built-in trainer, three policies (driftline, never, every 2,500 rows): the wall
  clock of the whole command as a user runs it (target <= 120 s);
- `--dataset shuttle|trump|gapminder`: the summary table (driftline against never and
  calendar schedules) on a real data set, stream ordered as `DATASETS` says. Each data set's
  first rows train the reference model and the next ones are its reference (predicted
  out of sample); the rest is the stream. Default settings (or `--config FILE`), nothing
  tuned per data set.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retrain.builtin_trainer import train
from streams.workload import Workload

TARGET_SECONDS = 120.0
COMMAND = "python -m bench.backtest_loop_bench"


@dataclass(frozen=True)
class DataSet:
    name: str
    task: str
    target: str
    order: str  # how the stream is ordered, and why
    fit_rows: int  # the reference model's training rows
    reference_rows: int  # then its reference, predicted out of sample
    schedules: tuple[str, ...]
    timestamp: str | None = None


DATASETS = {
    "shuttle": DataSet(
        "shuttle", "classification", "anomaly",
        "river's Statlog Shuttle (49,097 rows, 9 sensor readings, 7 % anomalies), sorted on its first "
        "attribute f1 (ties in file order): Statlog shuffled the rows, so there is no time order; sorting on "
        "one attribute is the usual way to make an unordered set a stream whose inputs drift steadily",
        fit_rows=5_000, reference_rows=5_000, schedules=("2500", "10000")),
    "trump": DataSet(
        "trump", "regression", "five_thirty_eight",
        "river's TrumpApproval (1,001 days: five pollsters' approval ratings -> FiveThirtyEight's), in date "
        "order: its natural order, one row a day", fit_rows=150, reference_rows=150, schedules=("30d", "90d"),
        timestamp="timestamp"),
    "gapminder": DataSet(
        "gapminder", "regression", "lifeExp",
        "plotly's gapminder (1,704 rows: 142 countries every 5 years 1952-2007; life expectancy from GDP per "
        "head, population, continent), in year order: its natural order (countries alphabetical within a year)",
        fit_rows=284, reference_rows=142, schedules=("1826d", "3652d"), timestamp="timestamp"),
}


def load(name: str) -> pd.DataFrame:
    """The data set's rows in stream order, features + `actual` (+ `timestamp`)."""
    if name == "shuttle":
        from river.datasets import Shuttle

        with gzip.open(Shuttle().path, "rt") as handle:
            frame = pd.read_csv(handle)
        frame = frame.sort_values("f1", kind="stable").reset_index(drop=True)
        return frame.rename(columns={"anomaly": "actual"})
    if name == "trump":
        from river.datasets import TrumpApproval

        with gzip.open(TrumpApproval().path, "rt") as handle:
            frame = pd.read_csv(handle)
        frame["timestamp"] = pd.to_datetime(frame.pop("ordinal_date").map(pd.Timestamp.fromordinal), utc=True)
        return frame.rename(columns={"five_thirty_eight": "actual"})
    if name == "gapminder":
        import plotly.data

        frame = plotly.data.gapminder()[["year", "continent", "pop", "gdpPercap", "lifeExp"]]
        frame = frame.sort_values("year", kind="stable").reset_index(drop=True)
        frame["timestamp"] = pd.to_datetime(frame.pop("year").astype(str) + "-07-01", utc=True)
        return frame.rename(columns={"lifeExp": "actual"})
    raise SystemExit(f"unknown data set {name!r}: one of {', '.join(DATASETS)}")


def write_files(frame: pd.DataFrame, task: str, fit_rows: int, reference_rows: int, folder: Path) -> None:
    """ref.parquet and stream.parquet, with the reference model's predictions."""
    features = [c for c in frame.columns if c not in ("actual", "timestamp")]
    model = train(frame.iloc[:fit_rows][[*features, "actual"]], "actual", task=task, seed=0)
    rest = frame.iloc[fit_rows:].reset_index(drop=True)
    rest.insert(len(rest.columns), "prediction", model.predict(rest[features]))
    rest.iloc[:reference_rows].drop(columns=["timestamp"], errors="ignore").to_parquet(folder / "ref.parquet")
    rest.iloc[reference_rows:].to_parquet(folder / "stream.parquet")


def synthetic(rows: int, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows of the reference model, the stream): 10 columns, a change of concept
    at a third of the stream, a covariate shift at two thirds."""
    workload = Workload(seed=seed)
    third = rows // 3
    parts = [workload.frame(5_000, seed=seed), workload.frame(third, seed=seed + 1),
             workload.frame(third, "concept", seed=seed + 2), workload.frame(rows - 2 * third, "covariate+concept",
                                                                            seed=seed + 3)]
    rng = np.random.default_rng(seed)
    for part in parts:
        n = len(part)
        part["u"], part["ln"] = rng.uniform(-1, 1, n), rng.lognormal(0, 0.5, n)
        part["t3"], part["pois"] = rng.standard_t(3, n), rng.poisson(4, n).astype(float)
    return parts[0], pd.concat(parts[1:], ignore_index=True)


def driftline(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("driftline")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "streams.cli"]
    return subprocess.run([*argv, *args], cwd=cwd, capture_output=True, text=True)


def speed(rows: int) -> tuple[float, str]:
    with tempfile.TemporaryDirectory(prefix="loop-bench-") as folder:
        root = Path(folder)
        fit, stream = synthetic(rows)
        features = [c for c in stream.columns if c != "actual"]
        model = train(fit, "actual", task="regression", seed=0)
        reference, _ = synthetic(3, seed=11)  # 5,000 other rows of the reference concept
        for frame, name in ((reference, "ref.parquet"), (stream, "stream.parquet")):
            frame["prediction"] = model.predict(frame[features])
            frame.to_parquet(root / name)
        started = time.perf_counter()
        result = driftline("backtest", "--reference", "ref.parquet", "--stream", "stream.parquet", "--output",
                           "t.jsonl", "--retrain", "--schedule-every", "2500", "--summary", "s.json", cwd=root)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(result.stderr[-2000:])
        return seconds, "\n".join(result.stdout.splitlines()[-4:])


def table(name: str, config: str | None = None) -> str:
    spec = DATASETS[name]
    with tempfile.TemporaryDirectory(prefix=f"loop-{name}-") as folder:
        root = Path(folder)
        frame = load(name)
        write_files(frame, spec.task, spec.fit_rows, spec.reference_rows, root)
        args = ["--config", str(Path(config).resolve())] if config else []
        args += ["backtest", "--reference", "ref.parquet", "--stream", "stream.parquet", "--output", "t.jsonl",
                "--retrain", "--task", spec.task, "--summary", "s.json"]
        for schedule in spec.schedules:
            args += ["--schedule-every", schedule]
        started = time.perf_counter()
        result = driftline(*args, cwd=root)
        if result.returncode != 0:
            raise SystemExit(result.stderr[-2000:])
        summary = json.loads((root / "s.json").read_text())
    lines = [f"{name}: {spec.order}.",
             f"stream rows {len(frame) - spec.fit_rows - spec.reference_rows}, "
             f"replayed in {time.perf_counter() - started:.0f} s",
             "", f"| policy | {summary['metric']} | retrains | promotions |", "|---|---|---|---|"]
    lines += [f"| {p['name']} | {p['value']:.4f} | {p['retrains']} | {p['promotions']} |" for p in summary["policies"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[tuple[str, str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the speed run on 5,000 rows")
    parser.add_argument("--dataset", action="append", default=[], choices=sorted(DATASETS))
    parser.add_argument("--config", help="a driftline.toml for the data set runs (default: the defaults)")
    args = parser.parse_args(argv)
    for name in args.dataset:
        print(table(name, args.config), end="\n\n", flush=True)
    if args.dataset:
        return []
    rows = 5_000 if args.quick else 15_000
    seconds, banner = speed(rows)
    print(banner)
    measured = f"{seconds:.0f} s (target <= {TARGET_SECONDS:.0f} s)"
    print(f"backtest --retrain, {rows:,} labelled rows x 10 columns, built-in trainer, 3 policies: {measured}")
    return [(f"backtest --retrain: {rows:,} rows x 10 cols, 3 policies", measured,
             COMMAND + (" --quick" if args.quick else ""))]


if __name__ == "__main__":
    main()
