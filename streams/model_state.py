"""One model's monitoring state and how a micro-batch advances it.

The state saved per model holds the detectors' changing state (`ModelMonitor.state_to_bytes`,
without the reference profile: the profile is named by its fingerprint and by where it is
read from, `reference`) *and* the last input offset they include, per topic. That is
what makes recovery exact: after a crash the worker resumes from the committed offsets
(never past the saved state, see `streams/monitor_loop.py`) and skips every event the
state already holds, so each event is counted once and the decisions, and their trigger
ids, are those of an uninterrupted run.

Batch records (several events in one record, `streams/decoding.py`): offsets stay
record-granular. All events of a record are in the same micro-batch, so "the last
offset included" means the whole record; a trigger firing at event i of the record at
offset o has an id from (topic, partition, o, i), and a single-event record's id is
unchanged; a window whose trigger fired inside a record ends at that record, and the
next window starts at it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any
from operator import attrgetter, itemgetter

import msgspec
import numpy as np

from detectors import Decision, DetectorConfig, ModelMonitor, ReferenceProfile
from detectors.promotion_watch import TRIGGER_TYPE as PROMOTION_REGRESSION
from detectors.promotion_watch import PromotionWatch, regression_decision
from schemas.messages import (
    FeatureEvent,
    LabelledRecord,
    OffsetRange,
    RetrainOutcome,
    SchemaError,
    TopicWindow,
    Window,
)
from streams.decoding import Record, categorical_columns, label_values, model_outputs, numeric_matrix


# C-level accessors: these run once per event.
_second = itemgetter(1)
_features = attrgetter("features")
_timestamp = attrgetter("timestamp")
_prediction = attrgetter("prediction")
_actual = attrgetter("actual")
_model_version = attrgetter("model_version")


class TopicProgress(msgspec.Struct, kw_only=True):
    partition: int
    last_offset: int  # the last offset the detectors include
    window_start: int  # the first offset since the last trigger or re-baseline


class ModelState(msgspec.Struct, kw_only=True):
    model_id: str
    model_version: str
    fingerprint: str  # of the reference profile the monitor compares against
    # Where the reference profile is: None for the model's configured reference file,
    # else the promoted version's profile, relative to the model store.
    reference: str | None = None
    promotion_id: str | None = None  # trigger_id of the promotion last applied
    monitor: bytes  # ModelMonitor.state_to_bytes()
    events_seen: int = 0  # feature events the monitor holds (also inside `monitor`)
    labelled_seen: int = 0
    progress: dict[str, TopicProgress] = {}
    event_time_start: dt.datetime | None = None
    event_time_end: dt.datetime | None = None
    # The watch of the promotion last applied, while it runs (PromotionWatch.to_state()).
    watch: dict[str, Any] | None = None
    # Versions this model's monitor re-baselined away from, newest last (at most
    # REPLACED_VERSIONS_KEPT): their late labels are not evidence against the one serving.
    replaced_versions: list[str] = []
    # The versions the feature events named since the last re-baseline (the service's
    # names: its first version may serve a reference that driftline calls otherwise).
    served_versions: list[str] = []


REPLACED_VERSIONS_KEPT = 8
_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(ModelState)


def decode_state(data: bytes) -> ModelState:
    return _state_decoder.decode(data)


def promotion_watch(outcome: RetrainOutcome, task: str, rows: int, config: DetectorConfig) -> PromotionWatch | None:
    """The watch of a promotion by the retrainer, against the validation figures of the
    champion it replaced (`champion_*` in the outcome's metrics); None when it has none
    (a first version, a promotion by hand, a rollback)."""
    baseline = {key.removeprefix("champion_"): value for key, value in outcome.metrics.items()
                if key.startswith("champion_") and value is not None}
    watch = PromotionWatch(task, baseline, rows, config)
    return watch if watch.watching else None


def trigger_id(model_id: str, model_version: str, fingerprint: str, record: Record) -> str:
    """Same model, version, reference and stream position: the same id, on every replay."""
    parts = (model_id, model_version, fingerprint, record.topic, str(record.partition), str(record.offset))
    if record.index is not None:  # an event of a batch record: its position in the record
        parts += (str(record.index),)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Firing:
    """A decision, where in the stream it fired, and the window of data it saw."""

    trigger_id: str
    model_id: str
    model_version: str
    decision: Decision
    window: Window
    at: Record  # the event it fired at (for a batch record, with the event's index)
    event_time: dt.datetime


class ModelRuntime:
    """A live `ModelMonitor` with the bookkeeping that makes its state exact to the offset."""

    def __init__(
        self, state: ModelState, monitor: ModelMonitor, *, features_topic: str, labelled_topic: str
    ) -> None:
        self.state = state
        self.monitor = monitor
        self.features_topic = features_topic
        self.labelled_topic = labelled_topic
        self.watch = PromotionWatch.from_state(state.watch) if state.watch else None
        self.dirty = False

    @classmethod
    def fresh(
        cls, model_id: str, model_version: str, monitor: ModelMonitor, *,
        reference: str | None = None, promotion_id: str | None = None, **topics: str
    ) -> ModelRuntime:
        state = ModelState(
            model_id=model_id,
            model_version=model_version,
            fingerprint=monitor.profile.fingerprint,
            reference=reference,
            promotion_id=promotion_id,
            monitor=b"",
        )
        return cls(state, monitor, **topics)

    def to_bytes(self) -> bytes:
        state = self.state
        state.monitor = self.monitor.state_to_bytes()
        state.events_seen = self.monitor.events_seen
        state.labelled_seen = self.monitor.labelled_seen
        state.watch = self.watch.to_state() if self.watch is not None else None
        return _state_encoder.encode(state)

    def reset_to(self, data: bytes) -> None:
        """Back to a state this runtime saved with `to_bytes` (same reference profile)."""
        self.state = decode_state(data)
        self.watch = PromotionWatch.from_state(self.state.watch) if self.state.watch else None
        self.monitor = ModelMonitor.from_state(
            self.monitor.profile, self.state.monitor, config=self.monitor.config, task=self.monitor.task
        )

    # -- re-baselining -------------------------------------------------------------
    def rebaseline(
        self, profile: ReferenceProfile, model_version: str, promotion_id: str, reference: str,
        watch: PromotionWatch | None = None,
    ) -> None:
        """The new reference and baseline; windows restart, so the drift the new model
        was trained on does not trigger it again. `watch`: the promotion's watch, if any."""
        self.monitor.rebaseline(profile)
        self.watch = watch
        state = self.state
        replaced = dict.fromkeys((*state.replaced_versions, state.model_version, *state.served_versions))
        state.replaced_versions = [v for v in replaced if v != model_version][-REPLACED_VERSIONS_KEPT:]
        state.served_versions = []
        self.state.fingerprint = profile.fingerprint
        self.state.model_version = model_version
        self.state.promotion_id = promotion_id
        self.state.reference = reference
        self._restart_window()
        self.dirty = True

    def restart_monitor(self, monitor: ModelMonitor) -> None:
        """A new monitor for a state that cannot be restored (reference or detector
        settings changed): windows restart; offsets already counted stay skipped."""
        self.monitor = monitor
        self.state.fingerprint = monitor.profile.fingerprint
        self._restart_window()
        self.dirty = True

    def _restart_window(self) -> None:
        for progress in self.state.progress.values():
            progress.window_start = progress.last_offset + 1
        self.state.event_time_start = None
        self.state.event_time_end = None

    # -- batches -----------------------------------------------------------------------
    def unseen(self, items: Sequence[tuple[Record, FeatureEvent | LabelledRecord]]):
        """The events the state does not hold yet (all of them, except after a replay)."""
        if not items:
            return items
        progress = self.state.progress.get(items[0][0].topic)
        if progress is None:
            return items
        # A model's events of a topic come from one partition (the monitor loop
        # dead-letters the others), in offset order. An offset is only comparable within
        # its partition: after the topic gained partitions, the new one's are all unseen.
        if items[0][0].partition != progress.partition:
            return items
        first_new = 0
        while first_new < len(items) and items[first_new][0].offset <= progress.last_offset:
            first_new += 1
        return items[first_new:]

    def apply_features(
        self, items: Sequence[tuple[Record, FeatureEvent]]
    ) -> tuple[list[Firing], list[tuple[Record, SchemaError]]]:
        profile = self.monitor.profile
        rows = list(map(_features, map(_second, items)))
        numeric, bad = numeric_matrix(rows, profile.numeric_columns)
        rejected = []
        if bad.any():
            rejected = [
                (items[i][0], SchemaError("wrong_type", "a string in a numeric feature column"))
                for i in np.flatnonzero(bad)
            ]
            keep = np.flatnonzero(~bad)
            items = [items[i] for i in keep]
            rows = [rows[i] for i in keep]
            numeric = numeric[keep]
        if not items:
            return [], rejected
        categorical = categorical_columns(rows, profile.categorical_columns) or None
        # the model's outputs ride on the events: its estimated performance and its
        # prediction's drift watch them
        watched = self.monitor.estimate is not None or self.monitor.profile.prediction is not None
        predictions, scores = model_outputs(list(map(_second, items))) if watched else (None, None)
        if predictions is not None and self.monitor.estimate is not None and self.monitor.estimate.estimator.kind == "dle":
            predictions = np.array([np.nan if p is None or isinstance(p, str) else p
                                    for p in predictions], dtype=np.float64)
        self._note_served(items[0][1].model_version, items[-1][1].model_version)
        before = self.monitor.events_seen
        decisions = self.monitor.update_features(numeric, categorical, predictions, scores)
        return self._advance(items, decisions, before), rejected

    def apply_labelled(
        self, items: Sequence[tuple[Record, LabelledRecord]]
    ) -> tuple[list[Firing], list[tuple[Record, SchemaError]]]:
        if not items:
            return [], []
        events = list(map(_second, items))
        predictions = label_values(list(map(_prediction, events)))
        actuals = label_values(list(map(_actual, events)))
        before = self.monitor.labelled_seen
        decisions = self._update_labelled(events, predictions, actuals, before)
        if self.watch is None:
            return self._advance(items, decisions, before), []
        # Only the promoted version's own predictions judge it: labels arrive late, so the
        # first labelled events after a promotion still carry the replaced version's.
        served = np.flatnonzero(np.array(list(map(_model_version, events))) == self.state.model_version)
        verdict = self.watch.update_many(predictions[served], actuals[served])
        if verdict is None:
            return self._advance(items, decisions, before), []
        self.watch = None
        if verdict.regressed:
            regression = regression_decision(verdict, before + int(served[verdict.index]),
                                             self.state.model_version)
            decisions = sorted([*decisions, regression], key=attrgetter("offset"))
        return [self._regression_firing(f) if PROMOTION_REGRESSION in f.decision.trigger_types else f
                for f in self._advance(items, decisions, before)], []

    def _note_served(self, *versions: str) -> None:
        """The versions serving (a batch's first and last event's: versions change rarely)."""
        served = self.state.served_versions
        for version in versions:
            if version not in served:
                served[:] = [*served, version][-REPLACED_VERSIONS_KEPT:]

    def _update_labelled(self, events: list[LabelledRecord], predictions: np.ndarray, actuals: np.ndarray,
                         before: int) -> list[Decision]:
        """The labelled detectors on the events whose prediction a replaced version did not
        make: labels come late, and a replaced version's errors (worse, after the change
        that retrained it) would otherwise pass for a change of the serving version's
        concept. Decisions' offsets count the batch's events, all of them."""
        replaced = self.state.replaced_versions
        if not replaced:
            return self.monitor.update_labelled(predictions, actuals)
        own = np.flatnonzero(~np.isin(np.array(list(map(_model_version, events)), dtype=object), replaced))
        if len(own) == len(events):
            return self.monitor.update_labelled(predictions, actuals)
        decisions = self.monitor.update_labelled(predictions[own], actuals[own])
        return [replace(d, offset=before + int(own[d.offset - before])) for d in decisions]

    def _regression_firing(self, firing: Firing) -> Firing:
        """A promotion's regression names the promoted version (the one to roll back),
        and has an id of its own beside a detectors' decision at the same event."""
        own_id = hashlib.sha256(f"{firing.trigger_id}\x1f{PROMOTION_REGRESSION}".encode()).hexdigest()[:32]
        return replace(firing, model_version=self.state.model_version, trigger_id=own_id)

    def _advance(self, items, decisions: list[Decision], before: int) -> list[Firing]:
        """Moves the window along the batch; cuts it at each decision."""
        firings = []
        start = 0
        for decision in decisions:
            # Decision.offset counts the events given to this monitor since it was built.
            index = decision.offset - before
            self._extend_window(items[start : index + 1])
            record, event = items[index]
            firings.append(
                Firing(
                    trigger_id=trigger_id(
                        self.state.model_id, event.model_version, self.state.fingerprint, record
                    ),
                    model_id=self.state.model_id,
                    model_version=event.model_version,
                    decision=decision,
                    window=self._window(),
                    at=record,
                    event_time=event.timestamp,
                )
            )
            self._restart_window()
            start = index + 1
            if start < len(items) and items[start][0].offset == record.offset:
                # Fired inside a batch record: its later events are in the next window,
                # so that window starts at the same record (windows are record-granular).
                self.state.progress[record.topic].window_start = record.offset
        self._extend_window(items[start:])
        self.dirty = True
        return firings

    def _extend_window(self, items) -> None:
        if not items:
            return
        first, last = items[0][0], items[-1][0]
        progress = self.state.progress.get(first.topic)
        if progress is None or progress.partition != first.partition:
            progress = self.state.progress[first.topic] = TopicProgress(
                partition=first.partition, last_offset=first.offset - 1, window_start=first.offset
            )
        progress.last_offset = last.offset
        times = list(map(_timestamp, map(_second, items)))
        low, high = min(times), max(times)
        state = self.state
        state.event_time_start = low if state.event_time_start is None else min(low, state.event_time_start)
        state.event_time_end = high if state.event_time_end is None else max(high, state.event_time_end)

    def handled_through(self, record: Record) -> None:
        """Events set aside (dead-lettered) up to `record` are done with too: read again
        (after a restart, or a failed batch), they are skipped, not set aside twice."""
        progress = self.state.progress.get(record.topic)
        if progress is None or progress.partition != record.partition:
            self.state.progress[record.topic] = TopicProgress(
                partition=record.partition, last_offset=record.offset, window_start=record.offset + 1)
        else:
            progress.last_offset = max(progress.last_offset, record.offset)
        self.dirty = True

    def _window(self) -> Window:
        windows = {}
        for topic, progress in self.state.progress.items():
            if progress.last_offset >= progress.window_start:
                windows[topic] = TopicWindow(
                    topic=topic,
                    ranges=[
                        OffsetRange(
                            partition=progress.partition,
                            start=progress.window_start,
                            end=progress.last_offset,
                        )
                    ],
                )
        return Window(
            features=windows.get(self.features_topic),
            labelled=windows.get(self.labelled_topic),
            event_time_start=self.state.event_time_start,
            event_time_end=self.state.event_time_end,
        )
