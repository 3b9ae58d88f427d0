"""`driftline simulate`: an inference service on a synthetic workload, for the demo.

It serves the model's current version from the model store (reloading it when a new
version is promoted), writes each request's features to the features topic and its
prediction (with the features) to the predictions topic, and the ground truth to the
actuals topic `actual_delay_seconds` later. Drift comes at known events: a covariate
shift, then a change of concept (`streams/workload.py`).

    driftline simulate --model M [--rate 1000] [--events 60000]
        [--covariate-shift-at 15000] [--concept-change-at 35000] [--task regression]
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from schemas.errors import UsageError
from schemas.logs import get_logger
from schemas.messages import ActualEvent, FeatureEvent, PredictionEvent, encode

if TYPE_CHECKING:  # the service's libraries (numpy too) load when it runs, not for --help
    from schemas.settings import Settings
    from streams.workload import Phase, Workload

log = get_logger(__name__)

TICKS_PER_SECOND = 10


@dataclass(frozen=True)
class Schedule:
    """When the drift comes: each change from its event on (None: never)."""

    rate: float = 1000.0  # requests per second
    events: int = 60_000
    covariate_shift_at: int | None = 15_000
    concept_change_at: int | None = 35_000
    actual_delay_seconds: float = 1.0

    def phase(self, event: int) -> Phase:
        shifted = self.covariate_shift_at is not None and event >= self.covariate_shift_at
        changed = self.concept_change_at is not None and event >= self.concept_change_at
        if shifted and changed:
            return "covariate+concept"
        return "covariate" if shifted else "concept" if changed else "stationary"


@dataclass
class Progress:
    """What the simulator has done so far; the demo reads it to show the error."""

    events: int = 0
    version: str | None = None
    phase: Phase = "stationary"
    recent_errors: list[float] = field(default_factory=list)  # absolute errors, newest last

    def mae(self, last: int) -> float:
        import numpy as np

        errors = self.recent_errors[-last:]
        return float(np.mean(errors)) if errors else float("nan")


class InferenceSimulator:
    def __init__(self, settings: Settings, model_id: str, workload: Workload, schedule: Schedule) -> None:
        if model_id not in settings.models:
            raise UsageError(f"model {model_id!r} is not configured (settings.models)")
        self.settings = settings
        self.model_id = model_id
        self.workload = workload
        self.schedule = schedule
        import numpy as np
        from confluent_kafka import Producer

        from retrain.model_store import ModelStore

        self.store = ModelStore(settings.model_store_path, settings.retrain.keep_versions)
        self.producer = Producer(settings.kafka.producer_config(**{"linger.ms": 20}))
        self.rng = np.random.default_rng(workload.seed + 1)
        self.pending_actuals: list[tuple[float, int, bytes]] = []  # (due, sequence, message)
        self.progress = Progress()
        self._model = None

    def _current_model(self):
        version = self.store.current_version(self.model_id)
        if version is None:
            raise UsageError(f"model {self.model_id!r} has no current version; run `driftline models init {self.model_id}`")
        if version != self.progress.version:
            self._model = self.store.load_model(self.model_id, version)
            log.info("serving_version", model=self.model_id, version=version)
            self.progress.version = version
        return self._model

    def _send(self, topic: str, message: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, key=self.model_id.encode(), value=message)
                return
            except BufferError:  # the local queue is full: let it drain
                self.producer.poll(0.05)

    def step(self, count: int) -> None:
        """Serves `count` requests of the current phase, and releases the due actuals."""
        kafka = self.settings.kafka
        phase = self.schedule.phase(self.progress.events)
        if phase != self.progress.phase:
            log.info("drift_injected", model=self.model_id, phase=phase, at_event=self.progress.events)
            self.progress.phase = phase
        x = self.workload.features(count, phase, self.rng)
        actual = self.workload.target(x, phase, self.rng)
        import numpy as np
        import pandas as pd

        from detectors.prediction_error import prediction_errors
        from streams.workload import FEATURES

        frame = pd.DataFrame(x, columns=list(FEATURES))
        model = self._current_model()
        prediction = model.predict(frame)
        scores = _scores(model, frame, count)
        now = dt.datetime.now(dt.timezone.utc)
        known_at = now + dt.timedelta(seconds=self.schedule.actual_delay_seconds)
        version = self.progress.version
        due = time.monotonic() + self.schedule.actual_delay_seconds
        for i in range(count):
            event_id = f"{self.model_id}-{self.progress.events + i}"
            features = dict(zip(FEATURES, x[i].tolist()))
            header = {"model_id": self.model_id, "model_version": version, "event_id": event_id, "timestamp": now}
            # the model's output rides on the feature event too: the monitor estimates its
            # performance from it before the actual arrives
            output = {"prediction": _label(prediction[i]), "scores": scores[i]}
            self._send(kafka.features_topic, encode(FeatureEvent(**header, features=features, **output)))
            self._send(kafka.predictions_topic, encode(PredictionEvent(**header, features=features, **output)))
            truth = ActualEvent(**{**header, "timestamp": known_at}, actual=_label(actual[i]))
            heapq.heappush(self.pending_actuals, (due, self.progress.events + i, encode(truth)))
        errors = prediction_errors(self.workload.task, prediction, actual)
        self.progress.recent_errors = [*self.progress.recent_errors[-5000:], *errors.tolist()]
        self.progress.events += count
        self._release_actuals(time.monotonic())
        self.producer.poll(0)

    def _release_actuals(self, now: float) -> None:
        while self.pending_actuals and self.pending_actuals[0][0] <= now:
            _, _, message = heapq.heappop(self.pending_actuals)
            self._send(self.settings.kafka.actuals_topic, message)

    def run(self, stop: threading.Event, on_tick: Callable[[Progress], None] | None = None) -> Progress:
        per_tick = max(1, round(self.schedule.rate / TICKS_PER_SECOND))
        next_tick = time.monotonic()
        while self.progress.events < self.schedule.events and not stop.is_set():
            self.step(min(per_tick, self.schedule.events - self.progress.events))
            if on_tick is not None:
                on_tick(self.progress)
            next_tick += 1.0 / TICKS_PER_SECOND
            stop.wait(max(0.0, next_tick - time.monotonic()))
        while self.pending_actuals and not stop.is_set():
            self._release_actuals(time.monotonic())
            stop.wait(0.05)
        self.producer.flush(30)
        return self.progress


def _scores(model, frame, count: int) -> list[dict[str, float] | None]:
    """A classifier's probability per class of each request (labels as text), or None
    for each when the model gives none (a regression model)."""
    if not hasattr(model, "predict_proba"):
        return [None] * count
    proba = model.predict_proba(frame)
    names = [str(_label(c)) for c in model.classes_]
    return [dict(zip(names, map(float, row))) for row in proba.clip(0.0, 1.0)]


def _label(value: object) -> float | str:
    import numpy as np

    return float(value) if isinstance(value, (int, float, np.number)) else str(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Schedule()
    parser.add_argument("--model", required=True, help="a configured model id")
    parser.add_argument("--task", choices=["regression", "classification"], default="regression")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="requests per second")
    parser.add_argument("--events", type=int, default=defaults.events)
    parser.add_argument("--covariate-shift-at", type=_event_or_never, default=defaults.covariate_shift_at,
                        help="event of the input shift, or 'never'")
    parser.add_argument("--concept-change-at", type=_event_or_never, default=defaults.concept_change_at,
                        help="event of the change of concept, or 'never'")
    parser.add_argument("--actual-delay-seconds", type=float, default=defaults.actual_delay_seconds)
    parser.add_argument("--seed", type=int, default=0)


def _event_or_never(text: str) -> int | None:
    return None if text == "never" else int(text)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.logs import configure_logging

    from streams.topics import ensure_monitor_topics
    from streams.workload import Workload

    configure_logging(settings.log_level, settings.log_repeats)
    # It may start before the worker, and the broker creates no topic: same ones, same counts.
    ensure_monitor_topics(settings.kafka, settings.monitor)
    schedule = Schedule(args.rate, args.events, args.covariate_shift_at, args.concept_change_at, args.actual_delay_seconds)
    simulator = InferenceSimulator(settings, args.model, Workload(task=args.task, seed=args.seed), schedule)
    progress = simulator.run(threading.Event())
    log.info("simulation_done", events=progress.events, version=progress.version)
    return 0
