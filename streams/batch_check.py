"""`driftline check`: the design document's one-shot decision on files.

    driftline check --reference-data REF --recent-data RECENT
        [--recent-predictions P.npy --recent-actuals A.npy] [--r2 X] [--rmse Y]
        [--accuracy Z] [--multiple-testing holm|bh|none] [--json]

Prints the design's decision banner, or with `--json` one object holding the decision
and every metric. Unlike the original, the per-column KS p-values are corrected for the
number of columns tested (Holm by default); `--multiple-testing none` restores the old
behaviour.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

import orjson

from detectors import AutomaticRetrainingOrchestrator, RetrainingTrigger, format_decision_banner
from schemas.errors import UsageError
from schemas.tables import read_array, read_table, require_same_columns
from schemas.settings import Settings


# NaN and infinities become null; numpy scalars and arrays are numbers and lists.
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference-data", required=True, help="training data, CSV or Parquet")
    parser.add_argument("--recent-data", required=True, help="recent inputs, CSV or Parquet")
    parser.add_argument("--recent-predictions", help=".npy array of recent predictions")
    parser.add_argument("--recent-actuals", help=".npy array of the matching actuals")
    parser.add_argument("--r2", type=float, help="the model's baseline R2")
    parser.add_argument("--rmse", type=float, help="the model's baseline RMSE")
    parser.add_argument("--accuracy", type=float, help="the model's baseline accuracy")
    parser.add_argument(
        "--multiple-testing", choices=["holm", "bh", "none"],
        help="correction of the per-column p-values (default: detectors.multiple_testing)",
    )
    parser.add_argument(
        "--target-column", action="append", default=None,
        help="column of the reference not expected in the recent data (repeatable; "
        "default: prediction and actual)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace, settings: Settings) -> int:
    trigger = check(args, settings)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(trigger_document(trigger), option=_JSON_OPTIONS) + b"\n")
    else:
        print(format_decision_banner(trigger))
    return 0


def check(args: argparse.Namespace, settings: Settings) -> RetrainingTrigger:
    reference = read_table(args.reference_data)
    recent = read_table(args.recent_data)
    ignored = set(args.target_column or ("prediction", "actual"))
    shared = sorted((set(reference.columns) | set(recent.columns)) - ignored)
    require_same_columns(reference, args.reference_data, recent, args.recent_data, shared)

    predictions = actuals = None
    if (args.recent_predictions is None) != (args.recent_actuals is None):
        raise UsageError("--recent-predictions and --recent-actuals go together")
    if args.recent_predictions is not None:
        predictions = read_array(args.recent_predictions)
        actuals = read_array(args.recent_actuals)
        if len(predictions) != len(actuals):
            raise UsageError(
                f"{args.recent_predictions} has {len(predictions)} values but "
                f"{args.recent_actuals} has {len(actuals)}"
            )
    baseline = {k: v for k, v in (("r2", args.r2), ("rmse", args.rmse), ("accuracy", args.accuracy)) if v is not None}

    config = settings.detectors
    if args.multiple_testing:
        config = dataclasses.replace(config, multiple_testing=args.multiple_testing)
    orchestrator = AutomaticRetrainingOrchestrator(
        data_drift_threshold=config.data_drift_threshold,
        performance_threshold=config.r2_threshold,
        min_samples_for_retraining=config.min_samples,
        config=config,
    )
    return orchestrator.should_retrain(
        reference[shared], recent[shared], predictions, actuals, baseline or None
    )


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
