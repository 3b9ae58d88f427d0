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
        help="do not create missing topics (they must exist); their partition counts are checked all the same",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    from schemas.logs import configure_logging
    from streams.app import MonitorApp
    from streams.topics import ensure_monitor_topics

    configure_logging(settings.log_level, settings.log_repeats)
    kafka, monitor = settings.kafka, settings.monitor
    # Refuses (one line, exit 2) existing topics of another partition count.
    ensure_monitor_topics(kafka, monitor, create=not args.no_create_topics)
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
