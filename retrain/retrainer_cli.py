"""`driftline retrainer`: runs the retrain consumer (`retrain.consumer.Retrainer`) until
SIGTERM or SIGINT.

Light on purpose: its options are read, and `--help` answered, without Kafka, PostgreSQL
or pandas; `run` imports the consumer."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading

    from retrain import metrics
    from retrain.consumer import Retrainer
    from schemas.logs import configure_logging

    configure_logging(settings.log_level, settings.log_repeats)
    if not args.no_metrics:
        metrics.serve(settings.retrain.metrics_port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    Retrainer(settings, stop).run()
    return 0
