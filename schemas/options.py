"""The options `driftline check` and `driftline retrain` share with the design's batch
path (and the Airflow DAG's parameters): columns, current metrics and their baselines,
and files named by an option. One definition, so the two commands say the same thing."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from schemas.errors import TableError, UsageError

METRIC_HELP = {"r2": "R2", "rmse": "RMSE", "accuracy": "accuracy"}
CURRENT_HELP = ("the model's current {0}, compared with its baseline (--baseline-{1}, else the "
                "reference's own {0} from its prediction and target columns); default: computed from "
                "--recent-predictions and --recent-actuals")
BASELINE_HELP = "the model's baseline {0}, which the current {0} (--{1}) is compared with"


def add_column_arguments(parser: argparse.ArgumentParser) -> None:
    """`--target-column` and `--prediction-column`."""
    parser.add_argument(
        "--target-column", metavar="NAME",
        help="the target (true value) column, never monitored as a feature (default: the configured "
        "model's actual_column, else 'actual')",
    )
    parser.add_argument(
        "--prediction-column", metavar="NAME",
        help="the model's prediction column, never monitored as a feature (default: the configured "
        "model's prediction_column, else 'prediction')",
    )


def add_metric_arguments(parser: argparse.ArgumentParser) -> None:
    """The current metrics and their baselines."""
    for name, label in METRIC_HELP.items():
        parser.add_argument(f"--{name}", type=float, metavar="X", help=CURRENT_HELP.format(label, name))
    for name, label in METRIC_HELP.items():
        parser.add_argument(f"--baseline-{name}", type=float, metavar="X", help=BASELINE_HELP.format(label, name))


def current_from(args: argparse.Namespace) -> dict[str, float]:
    return {k: v for k in METRIC_HELP if (v := getattr(args, k)) is not None}


def baseline_from(args: argparse.Namespace) -> dict[str, float]:
    return {k: v for k in METRIC_HELP if (v := getattr(args, f"baseline_{k}")) is not None}


def require_baselines(current: dict[str, float], baseline: Any, prediction: str, target: str) -> None:
    """A current metric needs a baseline of the same name: one line naming the options."""
    for name in METRIC_HELP:
        if name in current and name not in baseline:
            raise UsageError(
                f"--{name} is the model's current {METRIC_HELP[name]} and needs a baseline to compare with: "
                f"give --baseline-{name}, or reference data with its prediction ({prediction!r}, "
                f"--prediction-column) and target ({target!r}, --target-column) columns"
            )


def read_option(option: str, path: Any, reader: Callable[[Any], Any]) -> Any:
    """A file named by `option`, with the option in the error."""
    try:
        return reader(path)
    except TableError as error:
        raise UsageError(f"{option}: {error}") from None
