"""`driftline replay` and `driftline backtest --report` as a user runs them, against the
real broker: a time range of a test's own topics gives the triggers the backtest gives on
the same rows; the report is one valid HTML file with the plots and the trigger table;
bad arguments give one clear line."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from detectors import DetectorConfig
from streams.backtest import backtest
from tests.replay import helpers
from tests.replay.html_check import Report
from bench import harness as h

pytestmark = pytest.mark.services
MODEL = "m1"
ROWS = 5000
INVALID = [b"not json", b'{"model_id": "m1"}', b'{"model_id": "nobody", "model_version": "1", '
           b'"event_id": "x", "timestamp": "2026-01-01T00:00:00Z", "features": {}}']


@dataclass
class Run:
    directory: Path
    config: Path
    topics: dict[str, str]
    frame: object
    start: dt.datetime
    end: dt.datetime
    stdout: str
    triggers: list[dict]
    report: Path


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One model's features and labelled records in the range, with invalid records among
    them, and a drifted stretch before and after the range that must not be read."""
    directory = tmp_path_factory.mktemp("replay")
    name = f"t_replay_{uuid.uuid4().hex[:8]}"
    reference = h.write_reference(directory / "reference.csv")
    topics = h.create_topics(kafka_bootstrap, name)
    config = h.write_config(directory, kafka_bootstrap, name, [MODEL], reference, detector=helpers.DETECTORS)
    frame = helpers.rows(ROWS, shift_at=2000, concept_at=3000, seed=5)
    noise = helpers.rows(400, shift_at=0, concept_at=0, seed=6)
    noise["f0"] += 10
    base = helpers.now_ms() - 600_000  # in the past: the broker refuses times far ahead
    start, end = base, base + 60_000

    def stream(message, in_range_invalid: bool):
        out = [(MODEL, message(MODEL, i, row), base - 30_000 + i) for i, row in noise.iterrows()]
        for i, row in frame.iterrows():
            out.append((MODEL, message(MODEL, i, row), base + i))
            if in_range_invalid and i in (10, 2500, 4999):
                out.append((MODEL, INVALID[[10, 2500, 4999].index(i)], base + i))
        out += [(MODEL, message(MODEL, i, row), end + i) for i, row in noise.iterrows()]
        return out

    helpers.produce(kafka_bootstrap, topics["features_topic"], stream(helpers.feature_message, True))
    helpers.produce(kafka_bootstrap, topics["labelled_topic"], stream(helpers.labelled_message, False))
    output, report = directory / "triggers.jsonl", directory / "report.html"
    start_text = f"{start / 1000:.3f}"  # epoch seconds
    end_text = dt.datetime.fromtimestamp(end / 1000, dt.timezone.utc).isoformat().replace("+00:00", "Z")
    result = helpers.driftline(
        "replay", "--config", str(config), "--topic", topics["features_topic"], "--topic",
        topics["labelled_topic"], "--from", start_text, "--to", end_text, "--output", str(output),
        "--report", str(report), cwd=directory)
    assert result.returncode == 0, result.stderr
    return Run(directory, config, topics, frame, dt.datetime.fromtimestamp(start / 1000, dt.timezone.utc),
               dt.datetime.fromtimestamp(end / 1000, dt.timezone.utc), result.stdout,
               helpers.read_lines(output), report)


def test_replay_of_a_time_range_gives_the_backtest_triggers_of_the_same_rows(run: Run) -> None:
    import pandas as pd

    reference = pd.read_csv(run.directory / "reference.csv")
    expected = backtest(reference, run.frame, h.COLUMNS, "prediction", "actual", "regression",
                        DetectorConfig(**helpers.DETECTORS))
    assert {t["source"] for t in expected} == {"features", "labelled"} and len(expected) >= 4
    key = lambda t: (t["source"], t["offset"])  # noqa: E731
    got = [{k: t[k] for k in helpers.BACKTEST_FIELDS} for t in sorted(run.triggers, key=key)]
    assert got == sorted(expected, key=key)
    # Where each fired: the event of that row, in the topic of its source.
    for trigger in run.triggers:
        assert trigger["model_id"] == MODEL and trigger["model_version"] == "1"
        assert trigger["topic"] == run.topics[f"{trigger['source']}_topic"]
        assert len(trigger["trigger_id"]) == 32
        event_time = dt.datetime.fromisoformat(trigger["event_time"])
        assert event_time == h.START + dt.timedelta(milliseconds=trigger["offset"])
    assert len({t["trigger_id"] for t in run.triggers}) == len(run.triggers)
    times = [t["event_time"] for t in run.triggers]
    assert times == sorted(times)
    # Nothing outside the range was read; the invalid records were counted, not fatal.
    assert run.stdout.startswith(f"{2 * ROWS + len(INVALID)} records, {2 * ROWS} events replayed, 3 invalid")
    assert "malformed_json 1" in run.stdout and "missing_field 1" in run.stdout
    assert "unknown_model 1" in run.stdout


def test_the_report_is_one_html_file_with_the_plots_and_the_trigger_table(run: Run) -> None:
    report = Report(run.report.read_text(encoding="utf-8"))
    assert report.doctype and not report.errors
    assert not report.images and report.plots[0] == f"overview-{MODEL}"  # interactive, not PNGs
    rows = report.table_with("trigger_id")
    assert [r["trigger_id"] for r in rows] == [t["trigger_id"] for t in run.triggers]
    for row, trigger in zip(rows, run.triggers):
        assert row["severity"] == trigger["severity"] and row["source"] == trigger["source"]
        assert trigger["root_cause"][0]["signal"] in row["root cause"]
    assert any("f3" in r["root cause"] for r in rows)
    summary = dict(row for row in report.tables[0] if len(row) == 2)
    assert summary["records read"] == str(2 * ROWS + len(INVALID))
    dependence = {r["column"]: r for r in report.table_with("effective sample size")}
    assert set(h.COLUMNS) <= set(dependence) and dependence["f3"]["source"] == "reference"
    assert summary["triggers written"] == str(len(run.triggers))


def figures(text: str) -> dict[str, list[dict]]:
    """Each plotly figure's traces, by the id of its div."""
    found = re.findall(r'Plotly\.newPlot\(\s*"([^"]+)",\s*(\[.*?\]),\s*\{', text, re.S)
    return {div: json.loads(data) for div, data in found}


def values(array) -> np.ndarray:
    """A trace's numbers: a list, or plotly's typed array ({"dtype", "bdata"})."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
    return np.asarray(array, dtype=float)


def test_the_report_draws_each_feature_trigger_s_columns_against_the_reference(run: Run) -> None:
    """Per trigger naming columns, one panel per column: the reference's density and the
    window's (the events up to the trigger), both drawn from data."""
    text = run.report.read_text(encoding="utf-8")
    assert "were not recorded" not in text
    named = [t for t in run.triggers if t["columns"]]
    assert named and {t["source"] for t in named} == {"features"}
    panels = [traces for div, traces in figures(text).items() if div.startswith(f"trigger-{MODEL}-")
              and any(t.get("name") == "reference" for t in traces)]
    assert len(panels) == len(named)
    for traces, trigger in zip(panels, named):  # the report lists a model's feature triggers first, in order
        for name in ("reference", "window"):
            drawn = [t for t in traces if t["name"] == name]
            assert len(drawn) == len(trigger["columns"])
            assert all(values(t["y"]).sum() > 0 for t in drawn)
    # f3 moved by 1.5 sd: at its last trigger, the window (all after the move) sits to the right
    traces, trigger = [(traces, t) for traces, t in zip(panels, named) if "f3" in t["columns"]][-1]
    j = trigger["columns"].index("f3")
    centre = {name: float(np.average(values(t["x"]), weights=values(t["y"])))
              for name in ("reference", "window") for t in [[t for t in traces if t["name"] == name][j]]}
    assert 1.0 < centre["window"] - centre["reference"] < 2.0, centre


def test_backtest_writes_the_same_report(run: Run) -> None:
    run.frame.to_csv(run.directory / "stream.csv", index=False)
    config = run.directory / "detectors.toml"
    config.write_text("[detectors]\n" + "".join(f"{k} = {v}\n" for k, v in helpers.DETECTORS.items()))
    result = helpers.driftline("backtest", "--config", str(config), "--reference", "reference.csv",
                               "--stream", "stream.csv", "--output", "bt.jsonl", "--report", "bt.html",
                               cwd=run.directory)
    assert result.returncode == 0, result.stderr
    report = Report((run.directory / "bt.html").read_text(encoding="utf-8"))
    assert report.doctype and not report.errors and not report.images
    assert report.plots[0] == "overview-backtest"
    lines = helpers.read_lines(run.directory / "bt.jsonl")
    assert [r["offset"] for r in report.table_with("root cause")] == [str(t["offset"]) for t in lines]
    replayed = [{k: t[k] for k in helpers.BACKTEST_FIELDS} for t in run.triggers]
    assert lines == sorted(replayed, key=lambda t: (t["offset"], t["source"]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--from": "2026-01-02T00:00:00Z", "--to": "2026-01-01T00:00:00Z"}, "must be before --to"),
        ({"--from": "yesterday"}, "--from 'yesterday': not a time"),
        ({"--to": "2026-01-01T00:00:00"}, "give a time zone"),
        ({"--topic": "no-such-topic-role"}, "is neither the features topic"),
        ({"--model": "nobody"}, "model 'nobody' is not configured"),
        ({"--output": "missing-dir/t.jsonl"}, "does not exist"),
    ],
)
def test_bad_arguments_give_one_clear_line(run: Run, change: dict, message: str) -> None:
    arguments = {"--topic": run.topics["features_topic"], "--from": "2026-01-01T00:00:00Z",
                 "--to": "2026-01-02T00:00:00Z", "--output": "out.jsonl", **change}
    result = helpers.driftline("replay", "--config", str(run.config),
                               *[x for pair in arguments.items() for x in pair], cwd=run.directory)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("driftline: ") and message in line, line


def test_a_topic_missing_on_the_broker_gives_one_clear_line(run: Run, kafka_bootstrap: str) -> None:
    name = f"t_absent_{uuid.uuid4().hex[:8]}"  # topics never created
    config = h.write_config(run.directory, kafka_bootstrap, name, [MODEL], run.directory / "reference.csv")
    topic = h.topics_for(name)["features_topic"]
    result = helpers.driftline("replay", "--config", str(config), "--topic", topic, "--from", "0", "--to",
                               "2000000000", "--output", "out.jsonl", cwd=run.directory)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line == f"driftline: topic {topic!r} does not exist on {kafka_bootstrap}"


def test_replay_of_batch_records_gives_the_backtest_triggers_and_each_firing_event(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """Batch records (the worker's other input format): several events share an offset,
    so a trigger is placed by the event's index in its record, not by the offset alone."""
    import pandas as pd

    name = f"t_replay_batch_{uuid.uuid4().hex[:8]}"
    reference = h.write_reference(tmp_path / "reference.csv")
    topics = h.create_topics(kafka_bootstrap, name)
    config = h.write_config(tmp_path, kafka_bootstrap, name, [MODEL], reference, detector=helpers.DETECTORS)
    frame = helpers.rows(3000, shift_at=1000, concept_at=2000, seed=7)
    base = helpers.now_ms() - 600_000
    size = 50
    for topic, message in ((topics["features_topic"], helpers.feature_message),
                           (topics["labelled_topic"], helpers.labelled_message)):
        events = [message(MODEL, i, row) for i, row in frame.iterrows()]
        records = [(MODEL, b"[" + b",".join(events[i:i + size]) + b"]", base + i)
                   for i in range(0, len(events), size)]
        helpers.produce(kafka_bootstrap, topic, records)
    output = tmp_path / "triggers.jsonl"
    result = helpers.driftline(
        "replay", "--config", str(config), "--topic", topics["features_topic"], "--topic",
        topics["labelled_topic"], "--from", f"{(base - 1) / 1000:.3f}", "--to", f"{(base + 60_000) / 1000:.3f}",
        "--output", str(output), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    triggers = helpers.read_lines(output)
    expected = backtest(pd.read_csv(reference), frame, h.COLUMNS, "prediction", "actual", "regression",
                        DetectorConfig(**helpers.DETECTORS))
    assert {t["source"] for t in expected} == {"features", "labelled"}
    key = lambda t: (t["source"], t["offset"])  # noqa: E731
    assert [{k: t[k] for k in helpers.BACKTEST_FIELDS} for t in sorted(triggers, key=key)] == sorted(expected, key=key)
    for trigger in triggers:  # the record holding the firing event, and that event's time
        assert trigger["kafka_offset"] == trigger["offset"] // size
        event_time = dt.datetime.fromisoformat(trigger["event_time"])
        assert event_time == h.START + dt.timedelta(milliseconds=trigger["offset"])
    assert len({t["trigger_id"] for t in triggers}) == len(triggers)
