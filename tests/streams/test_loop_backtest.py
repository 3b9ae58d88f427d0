"""`driftline backtest --retrain` (issue 23) on a small synthetic file with one sudden change
of concept: the driftline policy retrains after it and its served error comes back,
`never` does not, calendar schedules retrain at their rows on the labels delivered by
then, and `--label-delay` withholds the labels. The trainings are real (the built-in
trainer in its own process, as the retrainer runs it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detectors import DetectorConfig, ReferenceProfile
from retrain.builtin_trainer import train
from schemas.settings import Settings
from streams.backtest import backtest
from streams.loop_backtest import (
    LabelledStream,
    LoopReplay,
    RecordedPredictions,
    Schedule,
    model_settings,
    run_policies,
    stream_times,
    summary_json,
)

CHANGE_AT = 1500  # the stream's row where the target's dependence on x0 flips
STREAM_ROWS = 4000
FEATURES = ["x0", "x1", "x2"]
PROGRESS: list[int] = []  # rows reported done by the replay in the fixture's run


def rows(rng: np.random.Generator, n: int, flipped: bool) -> pd.DataFrame:
    frame = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    frame["actual"] = (-2.0 if flipped else 2.0) * frame["x0"] + frame["x1"] + rng.normal(0, 0.3, n)
    return frame


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ref.csv and stream.csv, the prediction column being a model fitted on other rows."""
    root = tmp_path_factory.mktemp("loop")
    rng = np.random.default_rng(7)
    model = train(rows(rng, 2000, False), "actual", task="regression", seed=0)
    reference = rows(rng, 1500, False)
    stream = pd.concat([rows(rng, CHANGE_AT, False), rows(rng, STREAM_ROWS - CHANGE_AT, True)], ignore_index=True)
    for frame, name in ((reference, "ref.csv"), (stream, "stream.csv")):
        frame["prediction"] = model.predict(frame[FEATURES])
        frame.to_csv(root / name, index=False)
    return root


def replay(files: Path, tmp: Path, *, label_delay: int = 0, schedules=(), cooldown_rows: int = 1000, model=None):
    reference = pd.read_csv(files / "ref.csv")
    frame = pd.read_csv(files / "stream.csv")
    settings = Settings()
    args = type("Args", (), {"model": None, "reference": str(files / "ref.csv"), "prediction_column": "prediction",
                             "actual_column": "actual", "score_column": None})()
    model = model or model_settings(args, settings, "regression", FEATURES)
    stream = LabelledStream(frame[FEATURES], frame["actual"].to_numpy(), frame["prediction"].to_numpy(),
                            stream_times(frame, "timestamp", needed=False), "regression", label_delay)
    profile = ReferenceProfile.from_frame(reference, feature_columns=FEATURES, prediction_column="prediction",
                                          actual_column="actual", config=settings.detectors)
    loop = LoopReplay(stream, reference, profile, model, settings, tmp, cooldown_rows=cooldown_rows,
                      progress=lambda rows: PROGRESS.append(rows))
    return stream, run_policies(loop, [Schedule.parse(s) for s in schedules])


@pytest.fixture(scope="module")
def replayed(files: Path, tmp_path_factory: pytest.TempPathFactory):
    PROGRESS.clear()
    done = replay(files, tmp_path_factory.mktemp("work"), schedules=["1000", "2000"])
    done[0].progress = sum(PROGRESS)
    return done


def mean_error(served: np.ndarray, actual: np.ndarray, start: int, stop: int) -> float:
    return float(np.mean(np.abs(served[start:stop] - actual[start:stop])))


def test_driftline_retrains_after_the_change_and_its_error_comes_back(replayed) -> None:
    stream, (driftline, never, *_) = replayed
    promoted = [r for r in driftline.retrains if r.outcome == "promoted"]
    assert promoted, [(r.row, r.outcome, r.reason) for r in driftline.retrains]
    first = promoted[0]
    assert "vs current" in first.reason  # validated against the reference model's recorded predictions
    assert first.trigger_row >= CHANGE_AT and first.row < CHANGE_AT + 1500
    # trained on the new concept only: the change point cuts the window
    assert first.training_rows[0] >= CHANGE_AT - 50 and first.training_rows[1] < first.row
    actual = stream.actual
    before = mean_error(never.served, actual, 0, CHANGE_AT)
    assert mean_error(never.served, actual, first.row, STREAM_ROWS) > 5 * before
    assert mean_error(driftline.served, actual, first.row, STREAM_ROWS) < 2 * before
    assert np.array_equal(driftline.served[:first.row], never.served[:first.row])  # served from its promotion on
    assert not never.retrains


def test_progress_counts_every_row_of_every_policy(replayed) -> None:
    stream, runs = replayed
    assert stream.progress == len(stream) * len(runs)


def test_the_summary_has_the_issues_shape(replayed) -> None:
    stream, runs = replayed
    summary = json.loads(json.dumps(summary_json("mae", stream, runs)))
    assert set(summary) == {"metric", "policies", "retrains"} and summary["metric"] == "mae"
    assert [p["name"] for p in summary["policies"]] == ["driftline", "never", "every 1000", "every 2000"]
    for policy in summary["policies"]:
        assert set(policy) == {"name", "value", "retrains", "promotions"}
    never = summary["policies"][1]
    assert (never["retrains"], never["promotions"]) == (0, 0)
    assert summary["policies"][0]["value"] < never["value"]
    assert summary["retrains"] and summary["policies"][0]["retrains"] == len(summary["retrains"])
    for retrain in summary["retrains"]:
        assert set(retrain) == {"row", "trigger_id", "trigger_types", "severity", "training_rows", "promoted"}
        assert len(retrain["training_rows"]) == 2 and retrain["severity"] in ("MEDIUM", "HIGH", "CRITICAL")


def test_a_schedule_retrains_at_its_rows_on_the_labels_delivered(replayed) -> None:
    _, (_, _, every, every_other) = replayed
    assert [r.row for r in every.retrains] == [1000, 2000, 3000]
    for retrain in every.retrains:
        assert retrain.training_rows[0] >= retrain.row - 1500  # the reference's amount of history
        assert retrain.holdout_rows[1] == retrain.row - 1  # the newest label delivered before it
    assert all(r.training_seconds > 0 for r in every.retrains)


def test_policies_that_train_on_the_same_rows_share_the_fit(replayed) -> None:
    _, (_, _, every, every_other) = replayed
    (shared,) = every_other.retrains
    same = next(r for r in every.retrains if r.row == shared.row)
    assert shared.training_rows == same.training_rows and shared.training_seconds == 0.0


def test_the_reference_model_is_its_recorded_predictions() -> None:
    features = pd.DataFrame({"n": [1, 2, 3, 2], "x": [0.5, 1.5, 2.5, 1.5], "c": ["a", "b", None, "b"]})
    recorded = RecordedPredictions(features, np.array(["p", "q", "r", "q"], dtype=object))
    asked = features.iloc[[2, 0]].reset_index(drop=True).astype({"n": "float64"})  # as the cleaning may leave it
    assert list(recorded.predict(asked)) == ["r", "p"]
    with pytest.raises(KeyError):  # a row it never served: the validation then has no champion's score
        recorded.predict(pd.DataFrame({"n": [9], "x": [0.0], "c": ["a"]}))


def test_schedule_rows_by_count_and_by_duration() -> None:
    times = pd.DatetimeIndex(pd.Timestamp("2020-01-01", tz="UTC") + pd.to_timedelta(np.arange(100) * 6, unit="h"))
    assert Schedule.parse("30").rows_at(times) == [30, 60, 90]
    assert Schedule.parse("7d").rows_at(times) == [28, 56, 84]  # 4 rows a day
    assert Schedule.parse("7d").name == "every 7d"


def test_label_delay_withholds_the_labels(files: Path, tmp_path: Path) -> None:
    stream, (driftline, _) = replay(files, tmp_path, label_delay=400)
    assert stream.delivered_before(400) == 0 and stream.delivered_before(401) == 1
    attempted = [r for r in driftline.retrains if r.attempted]
    assert attempted
    for retrain in attempted:
        assert retrain.holdout_rows[1] <= retrain.row - 400 - 1  # no label it could not have had
    labelled = [t for t in driftline.triggers if t["source"] == "labelled"]
    assert labelled and labelled[0]["offset"] >= CHANGE_AT + 400


def test_the_monitor_backtest_fires_a_labelled_trigger_when_its_label_arrives(files: Path) -> None:
    reference, stream = pd.read_csv(files / "ref.csv"), pd.read_csv(files / "stream.csv")
    run = lambda delay: [t for t in backtest(reference, stream, FEATURES, "prediction", "actual", "regression",
                                             DetectorConfig(), label_delay=delay) if t["source"] == "labelled"]
    on_time, late = run(0), run(250)
    assert on_time and [t["offset"] + 250 for t in on_time if t["offset"] + 250 < STREAM_ROWS] == \
        [t["offset"] for t in late]


def test_the_command_prints_a_line_per_policy_and_writes_summary_and_report(files: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "backtest", "--reference", "ref.csv", "--stream", "stream.csv",
         "--output", "t.jsonl", "--retrain", "--schedule-every", "2000", "--cooldown-rows", "1000",
         "--summary", "summary.json", "--report", "loop.html"],
        cwd=files, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    tail = result.stdout.splitlines()[-3:]
    assert [line.split()[0] for line in tail] == ["driftline", "never", "every"]
    assert all("mae" in line and "retrains" in line and "promotions" in line for line in tail)
    summary = json.loads((files / "summary.json").read_text())
    assert [p["name"] for p in summary["policies"]] == ["driftline", "never", "every 2000"]
    html = (files / "loop.html").read_text()
    assert "The served model, policy by policy" in html and "training windows" in html
    assert (files / "t.jsonl").read_text().count("\n") >= 1


def test_the_configured_trainer_trains(files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))  # for the training process
    settings = Settings(models={"m": {"reference_path": files / "ref.csv",
                                      "trainer": "tests.streams.loop_trainer:mean_of_target"}})
    args = type("Args", (), {"model": "m", "reference": str(files / "ref.csv"), "prediction_column": "prediction",
                             "actual_column": "actual", "score_column": None})()
    model = model_settings(args, settings, "regression", FEATURES)
    assert model.trainer == "tests.streams.loop_trainer:mean_of_target"
    stream, (driftline, _) = replay(files, tmp_path, model=model)
    promoted = [r for r in driftline.retrains if r.outcome == "promoted"]
    assert promoted  # after the flip a constant beats the old model
    stop = promoted[1].row if len(promoted) > 1 else len(stream)
    assert np.unique(driftline.served[promoted[0].row:stop]).size == 1  # the training rows' mean, served


def test_retrain_needs_the_labels(files: Path) -> None:
    pd.read_csv(files / "stream.csv").drop(columns="actual").to_csv(files / "unlabelled.csv", index=False)
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "backtest", "--reference", "ref.csv", "--stream", "unlabelled.csv",
         "--output", "t.jsonl", "--retrain"], cwd=files, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "--actual-column" in result.stderr
