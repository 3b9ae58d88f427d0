"""`driftline worker`: runs the streaming monitor (a faust worker) until stopped."""

from __future__ import annotations

import argparse
import gc

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # faust and the monitor load when the worker runs, not for --help
    from schemas.settings import MonitorSettings, Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-create-topics",
        action="store_true",
        help="do not create missing input/output topics (they must exist)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    from schemas.logs import configure_logging
    from streams.app import MonitorApp
    from streams.kafka_clients import ensure_topics

    configure_logging(settings.log_level, settings.log_repeats)
    kafka, monitor = settings.kafka, settings.monitor
    if not args.no_create_topics:
        counts = ensure_topics(
            kafka,
            [
                kafka.features_topic,
                kafka.predictions_topic,
                kafka.actuals_topic,
                kafka.labelled_topic,
                kafka.retrain_requests_topic,
                kafka.retrain_events_topic,
                kafka.dead_letter_topic,
            ],
            partitions=monitor.partitions,
            replication_factor=monitor.replication_factor,
        )
        # A model's state goes to the partition number of its inputs.
        ensure_topics(
            kafka, [monitor.state_topic], partitions=counts[kafka.features_topic],
            replication_factor=monitor.replication_factor,
            config={"cleanup.policy": "compact", "max.message.bytes": str(monitor.state_max_bytes),
                    "segment.bytes": str(monitor.state_segment_bytes)},
        )
    monitor.data_dir.mkdir(parents=True, exist_ok=True)
    tune_gc(monitor)
    service = MonitorApp(settings)
    worker = faust.Worker(service.app, loglevel=settings.log_level, override_logging=False)
    worker.execute_from_commandline()  # returns by raising SystemExit with the exit code
    return 0


def tune_gc(monitor: MonitorSettings) -> None:
    """The worker's process-wide collector settings (see `MonitorSettings.gc_threshold`);
    objects alive after start-up (modules, references) are not scanned again."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(monitor.gc_threshold, older, oldest)
