"""`driftline backtest --report`: one interactive HTML file that works offline, opened in
a real headless browser (Debian's chromium), which must draw every plot without a script
error; a screenshot is kept as the test's artifact."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streams.workload import Workload
from tests.cli.test_check_and_backtest import driftline
from tests.cli.test_imports import loaded
from tests.replay.html_check import Report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars", "--virtual-time-budget=15000"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """A backtest with data drift (x0, x1 shift at row 3000) and a change of concept
    (the error grows at row 4000)."""
    root = tmp_path_factory.mktemp("report")
    workload = Workload(seed=3)
    workload.frame(5000).to_csv(root / "ref.csv", index=False)
    stream = pd.concat([workload.frame(3000, "stationary", seed=1), workload.frame(3000, "covariate", seed=2)],
                       ignore_index=True)
    rng = np.random.default_rng(0)
    stream["prediction"] = stream["actual"] + rng.normal(0, 0.3, len(stream))
    stream.loc[4000:, "prediction"] += rng.normal(0, 1.0, 2000)
    stream.to_parquet(root / "stream.parquet")
    result = driftline("backtest", "--reference", "ref.csv", "--stream", "stream.parquet", "--output", "t.jsonl",
                       "--report", "report.html", cwd=root)
    assert result.returncode == 0, result.stderr
    triggers = [json.loads(line) for line in (root / "t.jsonl").read_text().splitlines()]
    return root / "report.html", triggers


def test_the_report_is_one_offline_file_with_a_trigger_lane_and_panels_per_trigger(report) -> None:
    path, triggers = report
    page = Report(path.read_text(encoding="utf-8"))
    assert page.doctype and not page.errors and not page.images
    assert any("plotly.js" in script[:2000] and len(script) > 1_000_000 for script in page.inline_scripts)
    sources = {t["source"] for t in triggers}
    assert sources == {"features", "labelled"}, triggers
    details = [text for tag, text in page.headings if tag == "h4"]
    assert len(details) == len(triggers)
    for number, (text, trigger) in enumerate(zip(details, triggers), 1):
        assert text.startswith(f"{number}. {trigger['severity']} at row {trigger['offset']}: {trigger['reason']}")
    # the overview, one distribution panel per trigger naming columns, one error panel per labelled one
    named = sum(bool(t["columns"]) for t in triggers)
    labelled = sum(t["source"] == "labelled" for t in triggers)
    assert len(page.plots) == 1 + named + labelled
    figures = re.findall(r'Plotly\.newPlot\(\s*"([^"]+)",\s*(\[.*?\]),\s*\{', path.read_text(encoding="utf-8"), re.S)
    overview = json.loads(dict(figures)[page.plots[0]])
    lane = [trace for trace in overview if trace["name"].startswith("trigger ")]
    assert sum(len(trace["x"]) for trace in lane) == len(triggers)
    assert all(trace["yaxis"] == "y" for trace in lane)  # a lane of its own, above the data
    assert {trace["marker"]["color"] for trace in lane} <= {"#868e96", "#f08c00", "#e8590c", "#c92a2a"}
    assert any(trace["name"].startswith("baseline MAE") for trace in overview)
    rows = page.table_with("root cause")
    assert [r["offset"] for r in rows] == [str(t["offset"]) for t in triggers]
    _the_data_drawn_is_the_streams(overview, triggers)


def _the_data_drawn_is_the_streams(overview: list[dict], triggers: list[dict]) -> None:
    """x0 and x1 shift at row 3000, the error grows at row 4000, x2 never moves: the lines
    say so, and the trigger lane sits at the triggers' rows."""
    lane = [trace for trace in overview if trace["name"].startswith("trigger ")]
    assert sorted(x for trace in lane for x in trace["x"]) == sorted(t["offset"] for t in triggers)
    series = {trace["name"]: dict(zip(trace["x"], trace["y"])) for trace in overview}
    for moved in ("x0 (KS)", "x1 (KS)"):
        before = [v for row, v in series[moved].items() if row < 3000]
        after = [v for row, v in series[moved].items() if row >= 4000]
        assert min(after) > 5 * max(before), series[moved]
    assert max(series["x2 (KS)"].values()) < 1.0  # stationary: below its threshold throughout
    error = series["MAE (error)"]
    noise = 0.3 * np.sqrt(2 / np.pi)  # the mean absolute error of N(0, 0.3) prediction noise
    assert all(abs(v - noise) < 0.05 for row, v in error.items() if v is not None and row < 4000)
    assert all(v > 3 * noise for row, v in error.items() if row >= 4499)
    [baseline] = {v for v in series["baseline MAE (error)"].values()}
    assert abs(baseline - noise) < 0.02


def test_the_report_has_the_serial_dependence_per_column(report) -> None:
    """What the monitor is calibrated to: the reference's rows are independent here."""
    path, _ = report
    page = Report(path.read_text(encoding="utf-8"))
    assert ("h3", "Serial dependence per column") in page.headings
    rows = {r["column"]: r for r in page.table_with("effective sample size")}
    assert {f"x{i}" for i in range(6)} <= set(rows) <= {f"x{i}" for i in range(6)} | {"(error series)"}
    for name in (f"x{i}" for i in range(6)):
        row = rows[name]
        assert row["source"] == "reference" and row["reference rows"] == "5,000"
        assert 1.0 <= float(row["factor"]) < 1.3
        ess = float(row["effective sample size"].replace(",", ""))
        assert ess == pytest.approx(5000 / float(row["factor"]), rel=0.01)  # the factor is shown rounded


def _chromium() -> str:
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is needed: apt-get install chromium"
    return binary


def _browse(page: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_chromium(), *CHROMIUM_FLAGS, *flags, page.as_uri()], capture_output=True, text=True,
                          timeout=120)


def _drawn(dom: str) -> tuple[int, int, str | None]:
    root = re.search(r"<html[^>]*>", dom).group(0)
    plots = re.search(r'data-plots="(\d+)"', root)
    drawn = re.search(r'data-plots-drawn="(\d+)"', root)
    errors = re.search(r'data-script-errors="([^"]*)"', root)
    return (int(plots.group(1)) if plots else -1, int(drawn.group(1)) if drawn else -1,
            errors.group(1) if errors else None)


def test_chromium_draws_every_plot_without_a_script_error_and_screenshots_it(report, tmp_path: Path) -> None:
    path, _ = report
    expected = len(Report(path.read_text(encoding="utf-8")).plots)
    dom = _browse(path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _drawn(dom.stdout) == (expected, expected, None)
    assert "Uncaught" not in dom.stderr

    artifacts = Path(os.environ.get("DRIFTLINE_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "backtest_report.png"
    done = _browse(path, "--window-size=1300,2600", f"--screenshot={shot}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")


def test_the_browser_check_sees_a_script_error(report, tmp_path: Path) -> None:
    """The check above can fail: a page with a broken script is caught."""
    path, _ = report
    broken = tmp_path / "broken.html"
    broken.write_text(path.read_text(encoding="utf-8").replace("</body>", "<script>undefinedCall();</script></body>"),
                      encoding="utf-8")
    plots, drawn, errors = _drawn(_browse(broken, "--dump-dom").stdout)
    assert errors and "undefinedCall" in errors


def test_a_backtest_without_report_loads_no_plotting_library(report) -> None:
    path, _ = report
    root = path.parent
    assert "plotly" not in loaded("backtest", "--reference", str(root / "ref.csv"), "--stream",
                                  str(root / "stream.parquet"), "--output", str(root / "plain.jsonl"))
