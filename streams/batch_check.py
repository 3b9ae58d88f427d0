"""`driftline check`: the design document's one-shot decision on files.

    driftline check --reference-data REF --recent-data RECENT
        [--target-column actual] [--prediction-column prediction]
        [--recent-predictions P.npy --recent-actuals A.npy]
        [--r2 X] [--rmse Y] [--accuracy Z]
        [--baseline-r2 X] [--baseline-rmse Y] [--baseline-accuracy Z]
        [--multiple-testing holm|bh|none] [--json]

Columns: every column of the reference but the target (`--target-column`) and the
prediction (`--prediction-column`) is a feature, and each must be in the recent data.
The target is never tested as a feature. Both default to the configured model's
`actual_column` and `prediction_column` when one model is configured, else `actual`
and `prediction`.

Metrics: `--r2/--rmse/--accuracy` are the model's *current* metrics (when absent, the
ones computed from `--recent-predictions` and `--recent-actuals`). Each is compared
with its baseline: `--baseline-r2/--baseline-rmse/--baseline-accuracy`, else the
configured model's `baseline`, else the reference's own metrics when the reference
holds the prediction and target columns. A current metric without a baseline is an
error.

Prints the design's decision banner, or with `--json` one object holding the decision
and every metric, and `dependence`: each column's serial dependence in the reference
(`detectors.api.column_dependence`). The banner is followed by one line when a column is
markedly dependent (a long-run variance factor over 2), since the batch tests take rows
for independent. Unlike the original, the per-column KS p-values are corrected for the
number of columns tested (Holm by default); `--multiple-testing none` restores the old
behaviour.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING, Any

from schemas.errors import UsageError
from schemas.options import (add_column_arguments, add_metric_arguments, baseline_from, current_from, read_option,
                             require_baselines)

if TYPE_CHECKING:  # the heavy imports happen when the command runs, not for --help
    from schemas.settings import Settings
    import pandas as pd

    from detectors import RetrainingTrigger

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference-data", required=True, help="training data, CSV or Parquet")
    parser.add_argument("--recent-data", required=True, help="recent inputs, CSV or Parquet")
    add_column_arguments(parser)
    parser.add_argument("--recent-predictions", help=".npy array of recent predictions")
    parser.add_argument("--recent-actuals", help=".npy array of the matching actuals")
    add_metric_arguments(parser)
    parser.add_argument(
        "--multiple-testing", choices=["holm", "bh", "none"],
        help="correction of the per-column p-values (default: detectors.multiple_testing)",
    )
    parser.add_argument("--score-column", help="a binary classifier's positive-class probability, in both "
                        "files (with the predictions): its accuracy is then estimated without labels")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace, settings: Settings) -> int:
    trigger = check(args, settings)
    if args.json:
        import orjson

        # NaN and infinities become null; numpy scalars and arrays are numbers and lists.
        options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
        sys.stdout.buffer.write(orjson.dumps(trigger_document(trigger), option=options) + b"\n")
    else:
        from detectors import format_decision_banner

        print(format_decision_banner(trigger))
        if note := prediction_note(trigger.metrics.get("prediction_drift")):
            print(note)
        if note := quality_note(trigger.metrics.get("data_quality")):
            print(note)
        if note := dependence_note(trigger.metrics.get("dependence")):
            print(note)
    return 0


def prediction_note(drift: dict[str, Any] | None) -> str | None:
    """One line on the prediction column's distribution, recent rows against the
    reference's (when both frames carry numeric predictions)."""
    if not drift:
        return None
    verdict = "drifted" if drift["drifted"] else "unchanged"
    return (f"Prediction drift ({drift['column']}): {verdict}, KS D = {drift['ks_statistic']:.3f}, "
            f"p = {drift['p_value_adjusted']:.2g} (adjusted); spread (sd) {drift['reference_std']:.3g} in the reference, "
            f"{drift['recent_std']:.3g} recently.")


def quality_note(quality: dict[str, Any] | None) -> str | None:
    """One line per column whose feed looks broken: values missing, stuck or of new levels."""
    signals = (quality or {}).get("signals") or []
    if not signals:
        return None
    names = {"missing": "values missing", "stuck": "stuck", "unseen_category": "new levels"}
    return "\n".join(f"Data quality ({s['column']}): {names[s['signal']]}: {s['detail']}." for s in signals)


def dependence_note(dependence: dict[str, Any] | None) -> str | None:
    """One line naming the markedly dependent columns of the reference, if any."""
    from detectors.api import MARKED_DEPENDENCE

    marked = [(name, c) for name, c in ((dependence or {}).get("columns") or {}).items()
              if c["factor"] > MARKED_DEPENDENCE]  # NaN (not estimated) is never marked
    if not marked:
        return None
    named = ", ".join(
        f"{name} {c['factor']:.1f}" + (f" ({c['effective_sample_size']:,.0f} effective of {c['rows']:,} rows)"
                                       if c["effective_sample_size"] == c["effective_sample_size"] else "")
        for name, c in marked)
    return (f"Serial dependence in the reference (long-run variance factor over {MARKED_DEPENDENCE:g}): {named}. "
            "The KS tests of check take rows as independent, so their p-values for these columns are too "
            "small; the streaming monitor (worker, backtest, replay) is calibrated to the factors.")


def columns_of(args: argparse.Namespace, settings: Settings) -> tuple[str, str]:
    """(target, prediction): the options, else the only configured model's, else defaults."""
    model = next(iter(settings.models.values())) if len(settings.models) == 1 else None
    target = args.target_column or (model.actual_column if model else "actual")
    prediction = args.prediction_column or (model.prediction_column if model else "prediction")
    if target == prediction:
        raise UsageError(f"--target-column and --prediction-column are both {target!r}")
    return target, prediction


def require_named_columns(args: argparse.Namespace, reference: pd.DataFrame, recent: pd.DataFrame) -> None:
    """A column named by an option must exist somewhere."""
    for option, name in (("--target-column", args.target_column), ("--prediction-column", args.prediction_column)):
        if name is not None and name not in reference.columns and name not in recent.columns:
            raise UsageError(f"{option} {name!r}: no such column in {args.reference_data} or {args.recent_data}")


def check(args: argparse.Namespace, settings: Settings) -> RetrainingTrigger:
    from detectors import AutomaticRetrainingOrchestrator, DetectorError
    from detectors.api import check_batch_inputs
    from schemas.tables import read_array, read_table

    reference = read_option("--reference-data", args.reference_data, read_table)
    recent = read_option("--recent-data", args.recent_data, read_table)
    target, prediction = columns_of(args, settings)
    require_named_columns(args, reference, recent)
    model = next(iter(settings.models.values())) if len(settings.models) == 1 else None

    config = settings.detectors
    if args.multiple_testing:
        config = dataclasses.replace(config, multiple_testing=args.multiple_testing)
    orchestrator = AutomaticRetrainingOrchestrator(
        data_drift_threshold=config.data_drift_threshold,
        performance_threshold=config.r2_threshold,
        min_samples_for_retraining=config.min_samples,
        config=config,
        baseline=baseline_from(args) or (model.baseline if model else None) or None,
        target_column=target,
        prediction_column=prediction,
        score_column=args.score_column,
    )
    features = orchestrator.features(reference)
    extra = [c for c in recent.columns
             if c not in reference.columns and c not in (target, prediction, args.score_column)]
    if extra:
        raise UsageError(
            f"column {extra[0]!r} is in {args.recent_data} but not in {args.reference_data} "
            f"(--reference-data; a target column is named with --target-column)"
        )
    try:
        check_batch_inputs(reference, recent, features, reference_name=args.reference_data,
                           recent_name=args.recent_data, target_option="--target-column")
    except DetectorError as error:
        raise UsageError(str(error)) from None

    predictions = actuals = None
    if (args.recent_predictions is None) != (args.recent_actuals is None):
        raise UsageError("--recent-predictions and --recent-actuals go together")
    if args.recent_predictions is not None:
        predictions = read_option("--recent-predictions", args.recent_predictions, read_array)
        actuals = read_option("--recent-actuals", args.recent_actuals, read_array)
        if len(predictions) != len(actuals):
            raise UsageError(
                f"--recent-predictions {args.recent_predictions} has {len(predictions)} values but "
                f"--recent-actuals {args.recent_actuals} has {len(actuals)}"
            )
    current = current_from(args)
    baseline, _ = orchestrator.baseline_for(reference)
    require_baselines(current, baseline, prediction, target)
    return orchestrator.should_retrain(reference, recent, predictions, actuals, current or None)


def trigger_document(trigger: RetrainingTrigger) -> dict[str, Any]:
    return {
        "triggered": trigger.triggered,
        "severity": trigger.severity,
        "confidence": trigger.confidence,
        "reason": trigger.reason,
        "drift_types": [str(getattr(t, "value", t)) for t in trigger.drift_types],
        "root_cause": trigger.root_cause,
        **trigger.metrics,
    }
