"""`driftline backtest`: a stream file's rows, in order, through the streaming core.

    driftline backtest --reference REF --stream STREAM --output TRIGGERS.jsonl
        [--config FILE] [--prediction-column prediction] [--actual-column actual]
        [--task auto|regression|classification] [--feature-column NAME ...]
        [--report REPORT.html [--sample-every N]] [--label-delay N] [--timestamp-column NAME]
        [--score-column SCORE]
        [--retrain [--schedule-every N|DURATION ...] [--summary SUMMARY.json]
         [--model ID] [--cooldown-rows N] [--schedule-history ROWS] [--metric M]]

The same `ModelMonitor` the Kafka worker runs, with the same settings, so a backtest
says what the worker would have done. Feature columns are the columns other than the
prediction and the actual unless named; rows with both a prediction and an actual also
feed the labelled signals. Writes one JSON line per trigger, `offset` being the 0-based
row of the stream at which it fired. `--report` also writes the HTML report of
`streams/report.py` (the statistics sampled every `--sample-every` rows).
`--label-delay N` hands each actual over N rows after its prediction, as the join does
live (a labelled trigger fires at the row where its label arrived). A `timestamp` column
(`--timestamp-column`) is the rows' event time, never a feature.
`--score-column` names a binary classifier's positive-class probability: the
reference's (with its predictions and actuals) sets up the estimated performance, the
stream's (with its predictions) feeds it, label or no label (see README: "Performance
estimated without labels").

`--retrain` replays the whole retraining loop instead (`streams/loop_backtest.py`): the
driftline policy, `never` and each `--schedule-every` calendar schedule; the banner ends
with one line per policy, `--summary` writes them as JSON and `--report` adds the served
metric of every policy over time.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.errors import TableError, UsageError

if TYPE_CHECKING:  # loaded when the command runs (`--help` stays light)
    from schemas.settings import Settings
    import numpy as np
    import pandas as pd

    from detectors import Decision, DetectorConfig
    from streams.report import Timeline

# Rows per micro-batch; decisions do not depend on it, only the speed does.
BATCH_ROWS = 10_000
# An integer target with at most this many distinct values is taken for class labels.
MAX_AUTO_CLASSES = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", required=True, help="reference (training) data, CSV or Parquet")
    parser.add_argument("--stream", required=True, help="the rows to replay, in order, CSV or Parquet")
    parser.add_argument("--output", required=True, help="where to write the triggers (JSON lines)")
    parser.add_argument("--prediction-column", default="prediction")
    parser.add_argument("--actual-column", default="actual")
    parser.add_argument("--task", choices=["auto", "regression", "classification"], default="auto")
    parser.add_argument("--feature-column", action="append", dest="feature_columns",
                        help="a feature to monitor (repeatable; default: all but prediction and actual)")
    parser.add_argument("--score-column", help="a binary classifier's positive-class probability: "
                        "its performance is then estimated without labels (CBPE)")
    parser.add_argument("--report", help="also write an HTML report with plots here")
    parser.add_argument("--sample-every", type=int, default=None, metavar="N",
                        help="report: sample the statistics every N rows (default: the KS stride)")
    parser.add_argument("--label-delay", type=int, default=0, metavar="N",
                        help="hand each actual over N rows after its prediction (default 0)")
    parser.add_argument("--timestamp-column", default="timestamp",
                        help="the rows' event time, when the file has it (never a feature)")
    loop = parser.add_argument_group("the retraining loop (--retrain)")
    loop.add_argument("--retrain", action="store_true",
                      help="replay the whole loop: driftline's policy against never and calendar schedules")
    loop.add_argument("--schedule-every", action="append", default=[], metavar="N|DURATION",
                      help="a calendar schedule: every N rows, or a duration on the timestamp column "
                           "(30d, 12h); repeatable")
    loop.add_argument("--summary", help="write the policies and driftline's retrains here (JSON)")
    loop.add_argument("--model", help="train as [models.ID] of --config does (trainer, train_command)")
    loop.add_argument("--cooldown-rows", type=int, default=None, metavar="N",
                      help="the retrainer's cooldown in rows instead of [retrain] cooldown_seconds")
    loop.add_argument("--schedule-history", type=int, default=None, metavar="ROWS",
                      help="labelled rows a calendar retrain trains on (default: the reference's rows)")
    loop.add_argument("--metric", choices=["auto", "accuracy", "mae", "rmse"], default="auto",
                      help="the served model's metric (default: accuracy, or MAE for regression)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.tables import read_table, require_same_columns

    reference = _read("--reference", args.reference, read_table)
    stream = _read("--stream", args.stream, read_table)
    if args.label_delay < 0:
        raise UsageError("--label-delay must be at least 0")
    labels = [c for c in (args.prediction_column, args.actual_column, args.timestamp_column, args.score_column)
              if c in stream.columns]
    for name, frame in (("--reference", reference), ("--stream", stream)):
        if args.score_column and args.score_column not in frame.columns:
            raise UsageError(f"--score-column {args.score_column!r} is not a column of {name}")
    features = args.feature_columns or [c for c in stream.columns if c not in labels]
    require_same_columns(reference, args.reference, stream, args.stream, features)
    task = args.task if args.task != "auto" else infer_task(stream, reference, args.actual_column)
    sample_every = args.sample_every or settings.detectors.ks_stride
    if sample_every < 1:
        raise UsageError("--sample-every must be at least 1")
    if args.retrain:
        from streams.loop_backtest import run_command  # the retrainer's modules, only for --retrain

        return run_command(args, settings, reference, stream, features, task, sample_every)
    if args.summary or args.schedule_every:
        raise UsageError("--summary and --schedule-every need --retrain")
    if args.report:
        from streams.report import Timeline, write_report  # the plotting library, only for a report
    timeline = Timeline("backtest", task, x_label="row",
                        labelled_warmup=settings.detectors.concept_baseline_size) if args.report else None

    triggers = backtest(
        reference, stream, features, args.prediction_column, args.actual_column, task, settings.detectors,
        timeline=timeline, sample_every=sample_every, label_delay=args.label_delay,
        score_column=args.score_column,
    )
    write_triggers(Path(args.output), triggers)
    if timeline is not None:
        write_report(args.report, f"driftline backtest of {args.stream}", [
            ("reference", str(args.reference)), ("stream", f"{args.stream} ({len(stream)} rows)"),
            ("task", task), ("triggers", str(len(triggers))),
            ("detector settings", ", ".join(f"{k}={v}" for k, v in settings.detectors.to_dict().items())),
        ], [timeline], triggers)
    print(summary(len(stream), triggers, args.output))
    return 0


def _read(option: str, path: str, reader) -> Any:
    try:
        return reader(path)
    except TableError as error:
        raise UsageError(f"{option}: {error}") from None


def infer_task(stream: pd.DataFrame, reference: pd.DataFrame, actual_column: str) -> str:
    import numpy as np
    import pandas as pd

    frame = stream if actual_column in stream.columns else reference
    if actual_column not in frame.columns:
        return "regression"
    actual = frame[actual_column].dropna()
    if not pd.api.types.is_numeric_dtype(actual) or pd.api.types.is_bool_dtype(actual):
        return "classification"
    integral = bool(np.all(np.mod(actual.to_numpy(dtype=float), 1.0) == 0.0))
    return "classification" if integral and actual.nunique() <= MAX_AUTO_CLASSES else "regression"


def backtest(
    reference: pd.DataFrame,
    stream: pd.DataFrame,
    features: list[str],
    prediction_column: str,
    actual_column: str,
    task: str,
    config: DetectorConfig,
    *,
    timeline: Timeline | None = None,
    sample_every: int = BATCH_ROWS,
    label_delay: int = 0,
    score_column: str | None = None,
) -> list[dict[str, Any]]:
    """Every trigger of the streaming core over `stream`, in row order; with a
    `timeline`, the monitor's snapshot every `sample_every` rows goes into it. Each
    actual reaches the monitor `label_delay` rows after its prediction (never, when
    that is past the end). `score_column`: see the module docstring."""
    import numpy as np

    from detectors import ModelMonitor, ReferenceProfile

    profile = ReferenceProfile.from_frame(
        reference,
        feature_columns=features,
        prediction_column=prediction_column if prediction_column in reference.columns else None,
        actual_column=actual_column if actual_column in reference.columns else None,
        config=config,
        score_column=score_column,
    )
    monitor = ModelMonitor(profile, config, task)
    outputs = model_outputs(stream, prediction_column, score_column, monitor)
    # every row's prediction, labelled or not: the prediction drift needs no label
    stream_predictions = stream[prediction_column].to_numpy() if prediction_column in stream.columns else None
    numeric, categorical = monitor_inputs(stream, profile)

    labelled_rows = np.zeros(0, dtype=np.int64)
    if prediction_column in stream.columns and actual_column in stream.columns:
        present = stream[prediction_column].notna() & stream[actual_column].notna()
        labelled_rows = np.flatnonzero(present.to_numpy())
        predictions = _labels(stream[prediction_column].to_numpy()[labelled_rows], task, "--prediction-column")
        actuals = _labels(stream[actual_column].to_numpy()[labelled_rows], task, "--actual-column")

    triggers: list[dict[str, Any]] = []
    step = sample_every if timeline is not None else BATCH_ROWS
    for start in range(0, len(stream), step):
        stop = min(start + step, len(stream))
        batch_categorical = {c: v[start:stop] for c, v in categorical.items()} or None
        for decision in monitor.update_features(numeric[start:stop], batch_categorical,
                                                None if stream_predictions is None else stream_predictions[start:stop],
                                                estimated_errors=None if outputs is None else outputs[start:stop]):
            triggers.append(trigger_line(decision, decision.offset, "features"))
        if timeline is not None:
            timeline.sample_features(stop - 1, monitor.snapshot())
        first, last = np.searchsorted(labelled_rows + label_delay, [start, stop])
        if last > first:
            for decision in monitor.update_labelled(predictions[first:last], actuals[first:last]):
                triggers.append(trigger_line(decision, int(labelled_rows[decision.offset]) + label_delay, "labelled"))
            if timeline is not None:
                timeline.sample_labelled(int(labelled_rows[last - 1]) + label_delay, monitor.snapshot())
    triggers.sort(key=lambda t: (t["offset"], t["source"]))
    if timeline is not None:
        from detectors.api import column_dependence

        columns = {**{c: numeric[:, j] for j, c in enumerate(profile.numeric_columns)}, **categorical}
        _describe(timeline, profile, columns, triggers, config,
                  predictions[:config.concept_baseline_size] if len(labelled_rows) else None,
                  actuals[:config.concept_baseline_size] if len(labelled_rows) else None)
        timeline.dependence = column_dependence(profile, config, monitor.dependence)
    return triggers


def model_outputs(stream: pd.DataFrame, prediction_column: str, score_column: str | None, monitor) -> np.ndarray | None:
    """The stream's estimated error per row (from its predictions and scores), or None
    when the model has no performance estimate or the stream no predictions."""
    if monitor.estimate is None or prediction_column not in stream.columns:
        return None
    import numpy as np

    predictions = stream[prediction_column].to_numpy()
    if monitor.estimate.estimator.kind == "dle":
        predictions = stream[prediction_column].to_numpy(dtype=np.float64, na_value=np.nan)
    scores = stream[score_column].to_numpy(dtype=np.float64, na_value=np.nan) if score_column else None
    numeric = stream[list(monitor.profile.numeric_columns)].to_numpy(dtype=np.float64, na_value=np.nan)
    return monitor.estimated_errors(numeric, predictions, scores)


def monitor_inputs(frame: pd.DataFrame, profile) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The monitored columns as the worker decodes them: a float matrix of the numeric
    columns, the categorical ones as text (None: missing)."""
    import numpy as np

    numeric = frame[list(profile.numeric_columns)].to_numpy(dtype=np.float64, na_value=np.nan)
    categorical = {c: frame[c].astype("string").to_numpy(dtype=object, na_value=None)
                   for c in profile.categorical_columns}
    return numeric, categorical


def _describe(timeline: Timeline, profile, columns: dict[str, np.ndarray], triggers: list[dict[str, Any]],
              config: DetectorConfig, first_predictions, first_actuals) -> None:
    """The report's marks, with the named columns' reference and window values for the
    first triggers (`columns`: each monitored column's values, row by row), and the error
    baseline (the reference's errors, else the first labelled events', as the monitor
    learns it)."""
    import numpy as np

    from detectors.prediction_error import prediction_errors
    from streams.report import MAX_TRIGGER_DETAILS, column_distributions

    if profile.errors is not None and len(profile.errors):
        timeline.baseline["mae"] = float(np.mean(profile.errors))
    elif first_predictions is not None and len(first_predictions):
        task = "regression" if profile.task == "regression" and timeline.task == "regression" else "classification"
        timeline.baseline["mae"] = float(np.nanmean(prediction_errors(task, first_predictions, first_actuals)))
    for k, trigger in enumerate(triggers):
        distributions = {}
        if k < MAX_TRIGGER_DETAILS:
            stop = trigger["offset"] + 1
            recent = {c: columns[c][:stop] for c in trigger["columns"] if c in columns}
            distributions = column_distributions(profile, config, trigger["columns"], recent)
        timeline.mark(trigger["offset"], trigger, distributions)


def _labels(values: np.ndarray, task: str, option: str) -> np.ndarray:
    """Regression targets as floats; class labels (numbers or text) as the numeric codes
    the worker gives them (`streams.decoding.label_values`: equal labels, equal codes)."""
    import numpy as np

    from streams.decoding import label_values

    if task == "regression":
        try:
            return values.astype(np.float64)
        except (TypeError, ValueError):
            raise UsageError(
                f"{option}: a regression backtest needs numbers (found {_first_text(values)!r}); "
                "class labels need --task classification"
            ) from None
    if values.dtype.kind in "iufb":  # numeric class labels: their codes are the numbers
        return values.astype(np.float64)
    items = [v.item() if hasattr(v, "item") else v for v in values]
    try:
        return label_values(items)
    except (TypeError, ValueError):
        raise UsageError(f"{option}: class labels must be text or numbers (found {_first_text(values)!r})") from None


def _first_text(values: np.ndarray) -> Any:
    for value in values:
        try:
            float(value)
        except (TypeError, ValueError):
            return value
    return values[0] if len(values) else None


def trigger_line(decision: Decision, offset: int, source: str) -> dict[str, Any]:
    """A trigger's JSON line (`driftline replay` adds where in Kafka it fired)."""
    return {
        "offset": offset,
        "source": source,
        "trigger_types": list(decision.trigger_types),
        "severity": decision.severity,
        "confidence": decision.confidence,
        "columns": list(decision.columns),
        "reason": decision.reason,
        "root_cause": decision.root_cause,
        **({"expected_impact": decision.expected_impact} if decision.expected_impact is not None else {}),
    }


def write_triggers(path: Path, triggers: list[dict[str, Any]]) -> None:
    import orjson

    try:
        with path.open("wb") as out:
            for trigger in triggers:
                out.write(orjson.dumps(trigger, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror})") from None


def summary(rows: int, triggers: list[dict[str, Any]], output: str) -> str:
    if not triggers:
        return f"{rows} rows, no trigger (wrote {output})"
    kinds = Counter(kind for t in triggers for kind in t["trigger_types"])
    lines = [f"{rows} rows, {len(triggers)} trigger(s), first at row {triggers[0]['offset']} (wrote {output})"]
    lines += [f"  row {t['offset']:>8}  {t['severity']:<8} {t['reason']}" for t in triggers]
    lines.append("  by type: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    return "\n".join(lines)
