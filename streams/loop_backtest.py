"""`driftline backtest --retrain`: the whole retraining loop replayed over a labelled file.

Each policy serves the stream from its first row to its last, in row order:

- `driftline`: the streaming core fires (`ModelMonitor`, as the worker runs it); each
  trigger goes through the retrainer's own steps: the policy (`retrain.policy`: minimum
  severity, stale triggers, the cooldown between trigger times, one retrain in flight
  with one follow-up that newer triggers supersede), the wait for `post_trigger_rows`
  labelled rows after the trigger's window, the data preparation
  (`retrain.datasets.prepare_for_training`: change point, `old_concept_share`, holdout),
  the configured trainer in its own process and the validation (`retrain.job.RetrainJob`,
  with a model store of the run's own). A promoted model serves from the end of the
  micro-batch in which its trigger's data was complete: it re-scores the rows after, and
  the monitor re-baselines on its profile, as the worker does on a promotion.
- `never`: the reference model all along (the file's prediction column).
- `every N` (rows) or `every 30d` (a duration on the timestamp column): a calendar
  retrain on the newest labelled rows (as many as the reference has, unless
  `schedule_history` says otherwise), prepared, trained and validated by the same code.

Labels are handed over `label_delay` rows after their prediction, as the join does live;
a retrain sees only the labels delivered before it. The training takes no rows of time
(a live retrain takes seconds). Time is the file's timestamp column, or one second per row
without one: the retrainer's cooldown and `post_trigger_wait_seconds` are measured on it
(`cooldown_rows` counts the cooldown in rows instead). A trigger still waiting for its
evidence when the file ends is skipped: a model trained then would serve no row.

A trigger names the version that served the event it fired at, as the worker's does: a
labelled trigger on a prediction of the replaced version is stale. `LoopTiming` makes the
replay follow a live run of the same events (the worker's micro-batches, when each retrain
read its labels, served and reached the monitor), to compare the two.

The reference model is version 1 of each policy's store, as its recorded predictions
(`RecordedPredictions`), so that the first challenger is validated against it as any
later one is against its champion. Policies that train on identical rows share one fit
(`retrain.job.FittedModels`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from detectors import Decision, ModelMonitor, ReferenceProfile
from detectors.cbpe import positive_index
from retrain import datasets
from retrain.job import FittedModels, RetrainJob
from retrain.model_store import FileModelStore
from retrain.outcome import Trigger
from retrain.policy import Verdict, superseded
from retrain.preparation import EVENT_ID, EVENT_TIME, OFFSET, PARTITION, PREDICTION
from schemas.errors import UsageError
from schemas.settings import ModelSettings, Settings
from streams.backtest import monitor_inputs, trigger_line
from streams.decoding import label_values
from streams.model_state import REPLACED_VERSIONS_KEPT
from streams.references import profile_from_store

LOOP_BATCH_ROWS = 100  # rows per micro-batch; a promotion serves from a batch's end
REFERENCE_VERSION = "1"
POLL_SECONDS = 0.02
ONE_SECOND_PER_ROW = pd.Timestamp("2000-01-01", tz="UTC")  # the clock of a file without timestamps


# -- the stream and its policies --------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """A calendar schedule: every `rows` rows, or every `period` of the file's time."""

    name: str
    rows: int | None = None
    period: pd.Timedelta | None = None

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """A number of rows, or a duration (pandas' spelling; `d` for days too).

        >>> Schedule.parse("1000").rows, Schedule.parse("30d").period
        (1000, Timedelta('30 days 00:00:00'))
        """
        text = text.strip()
        if text.isdigit():
            if int(text) < 1:
                raise UsageError("--schedule-every: a number of rows must be at least 1")
            return cls(f"every {int(text)}", rows=int(text))
        try:
            period = pd.Timedelta(re.sub(r"(?<=\d)d\b", "D", text))  # pandas spells days "D"
        except ValueError:
            raise UsageError(f"--schedule-every: {text!r} is neither a number of rows nor a duration (30d, 12h)") from None
        if period <= pd.Timedelta(0):
            raise UsageError("--schedule-every: the duration must be positive")
        return cls(f"every {text}", period=period)

    def rows_at(self, times: pd.DatetimeIndex) -> list[int]:
        """The rows at which the schedule retrains (before serving that row)."""
        if self.rows is not None:
            return list(range(self.rows, len(times), self.rows))
        if not len(times):
            return []
        marks = pd.date_range(times[0] + self.period, times[-1], freq=self.period)
        return sorted(set(int(i) for i in times.searchsorted(marks) if 0 < i < len(times)))


@dataclass
class LabelledStream:
    """The file as the replay sees it: features, the actual, the reference model's
    prediction, each row's time, and when each label is handed over."""

    features: pd.DataFrame
    actual: np.ndarray  # raw values (numbers or class labels); NaN/None: unlabelled
    reference_predictions: np.ndarray
    times: pd.DatetimeIndex
    task: str
    label_delay: int = 0
    # a binary classifier's positive-class probability per row (the file's --score-column)
    reference_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        present = pd.notna(self.actual) & pd.notna(self.reference_predictions)
        self.labelled_rows = np.flatnonzero(present)  # in delivery order (a constant delay keeps row order)
        self.actual_codes = label_values(_items(self.actual))

    def __len__(self) -> int:
        return len(self.features)

    def delivered_before(self, row: int) -> int:
        """How many labels were handed over before `row` is served."""
        return int(np.searchsorted(self.labelled_rows + self.label_delay, row, side="left"))


@dataclass
class Retrain:
    """One retrain (or a trigger that did not retrain) of a policy."""

    policy: str
    row: int  # its model serves from this row when promoted
    outcome: str  # promoted, rejected, failed, skipped
    reason: str
    cause: str = ""  # of a skip: severity, stale, cooldown, superseded, samples, end of file
    training_rows: list[int] | None = None  # [first, last] stream row of the recent training rows
    holdout_rows: list[int] | None = None
    trigger_id: str | None = None
    trigger_row: int | None = None
    trigger_types: list[str] = field(default_factory=list)
    severity: str | None = None
    training_seconds: float = 0.0

    @property
    def attempted(self) -> bool:
        return self.outcome != "skipped"


@dataclass
class PolicyRun:
    name: str
    served: np.ndarray  # the served model's prediction of every row
    scores: np.ndarray | None = None  # and its positive-class probability, when the file has scores
    retrains: list[Retrain] = field(default_factory=list)
    triggers: list[dict[str, Any]] = field(default_factory=list)  # driftline's, as `backtest` writes them

    @property
    def attempted(self) -> list[Retrain]:
        return [r for r in self.retrains if r.attempted]

    @property
    def promotions(self) -> int:
        return sum(r.outcome == "promoted" for r in self.retrains)


class RecordedPredictions:
    """The reference model as the predictions the file records for its rows: `predict`
    looks each row up by its feature values (a row never seen raises KeyError)."""

    def __init__(self, features: pd.DataFrame, predictions: np.ndarray) -> None:
        self.columns = list(features.columns)
        self.table = dict(zip(_row_keys(features), _items(predictions)))

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return np.array([self.table[key] for key in _row_keys(features[self.columns])])


def _row_keys(frame: pd.DataFrame) -> np.ndarray:
    normal = frame.apply(lambda c: c.astype(np.float64) if pd.api.types.is_numeric_dtype(c) else c.astype(str))
    return pd.util.hash_pandas_object(normal, index=False).to_numpy()


def _items(values: np.ndarray) -> list[Any]:
    return [v.item() if hasattr(v, "item") else v for v in values]


# -- the replay ----------------------------------------------------------------------------------
class LoopReplay:
    """Replays the policies over one stream, each with its own model store under
    `workdir`, sharing fits (`FittedModels`)."""

    def __init__(
        self,
        stream: LabelledStream,
        reference: pd.DataFrame,
        profile: ReferenceProfile,
        model: ModelSettings,
        settings: Settings,
        workdir: Path,
        *,
        schedule_history: int | None = None,
        cooldown_rows: int | None = None,
        progress: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self.stream = stream
        self.reference = reference
        self.profile = profile
        self.model = model
        self.settings = settings
        self.retrain = settings.retrain
        # The cooldown in rows: the policy then reads a clock of one second per row.
        self.cooldown_rows = cooldown_rows
        retrain = self.retrain if cooldown_rows is None else self.retrain.model_copy(
            update={"cooldown_seconds": float(cooldown_rows)})
        self.policy = datasets.policy_from(retrain)
        self.workdir = Path(workdir)
        self.fitted = FittedModels(self.workdir / "fitted")
        self.columns = list(stream.features.columns)
        self.schedule_history = schedule_history or len(reference)
        target = model.actual_column
        # The model's history, for the retrainer's "historical + recent" (none without its target).
        self.historical = reference if target in reference.columns else \
            pd.DataFrame({**{c: reference[c].iloc[:0] for c in self.columns}, target: pd.Series(dtype=object)})
        self.progress = progress

    # -- policies ----------------------------------------------------------------------
    def never(self) -> PolicyRun:
        self.progress(len(self.stream))
        return PolicyRun("never", self.stream.reference_predictions.copy())

    def scheduled(self, schedule: Schedule) -> PolicyRun:
        run = PolicyRun(schedule.name, self.stream.reference_predictions.copy())
        store = self._store(run.name)
        model_id = policy_model_id(run.name)
        done = 0
        for row in schedule.rows_at(self.stream.times):
            delivered = self.stream.delivered_before(row)
            rows = self.stream.labelled_rows[max(0, delivered - self.schedule_history):delivered]
            trigger = Trigger(trigger_id=f"{model_id}@{row}", model_id=model_id,
                              model_version=store.current_version(model_id) or REFERENCE_VERSION,
                              trigger_types=[], severity="scheduled", reason=run.name, metrics={},
                              triggered_at=self.time_at(row).to_pydatetime())
            retrain = self._retrain(run, store, trigger, rows, row, historical=self.historical.iloc[:0])
            run.retrains.append(retrain)
            self.progress(row - done)
            done = row
        self.progress(len(self.stream) - done)
        return run

    def driftline(self, timeline=None, sample_every: int = LOOP_BATCH_ROWS, timing: LoopTiming | None = None
                  ) -> PolicyRun:
        """`timing`: a live run's (`LoopTiming`), for a replay of its events."""
        return _DriftlineRun(self, timeline, sample_every, timing).run()

    # -- shared steps --------------------------------------------------------------------
    def _store(self, name: str) -> FileModelStore:
        """The policy's own store, the reference model as its current version 1."""
        model_id = policy_model_id(name)
        store = FileModelStore(self.workdir / "stores" / model_id, keep_versions=2)
        artifact = self.workdir / f"{model_id}-reference.joblib"
        recorded = pd.concat([self.reference[self.columns], self.stream.features], ignore_index=True)
        predictions = np.concatenate([self._reference_predictions(), self.stream.reference_predictions])
        joblib.dump(RecordedPredictions(recorded, predictions), artifact)
        version = store.add_version(model_id, artifact, {"trigger_id": "reference"})
        store.write_profile(model_id, version, self.profile.to_bytes())
        store.promote(model_id, version)
        return store

    def _reference_predictions(self) -> np.ndarray:
        column = self.model.prediction_column
        if column in self.reference.columns:
            return self.reference[column].to_numpy()
        return np.full(len(self.reference), None, dtype=object)

    def time_at(self, row: int) -> pd.Timestamp:
        return self.stream.times[min(row, len(self.stream) - 1)]

    def policy_time(self, row: int) -> dt.datetime:
        """When a trigger at `row` was raised, for the cooldown."""
        if self.cooldown_rows is not None:
            return (ONE_SECOND_PER_ROW + pd.Timedelta(seconds=row)).to_pydatetime()
        return self.time_at(row).to_pydatetime()

    def recent_frame(self, rows: np.ndarray, served: np.ndarray) -> pd.DataFrame:
        """The labelled records of `rows` as the retrainer reads them back from the
        labelled topic (`retrain.preparation.records_to_frame`'s columns): the served
        prediction beside the actual, the row as the offset."""
        stream = self.stream
        frame = stream.features.iloc[rows].reset_index(drop=True)
        frame.insert(0, EVENT_TIME, stream.times[rows])
        frame.insert(0, EVENT_ID, [str(r) for r in rows])
        frame[self.model.actual_column] = stream.actual[rows]
        frame[PREDICTION] = served[rows]
        frame[PARTITION] = 0
        frame[OFFSET] = rows
        return frame

    def _retrain(self, run: PolicyRun, store: FileModelStore, trigger: Trigger, rows: np.ndarray, row: int, *,
                 historical: pd.DataFrame, profile_since: Any = None) -> Retrain:
        """Prepares, trains, validates; a promoted model serves `run` from `row` on."""
        recent = self.recent_frame(rows, run.served)
        decision, prepared = datasets.prepare_for_training(
            self.model, self.retrain, self.policy, historical, recent, self.columns,
            profile_since=profile_since, trigger_types=trigger.trigger_types,
        )
        base = {"policy": run.name, "row": row, "trigger_id": trigger.trigger_id,
                "trigger_types": list(trigger.trigger_types), "severity": trigger.severity}
        if prepared is None:
            return Retrain(outcome="skipped", reason=decision.reason, cause=decision.cause, **base)
        job = RetrainJob(trigger, self.model, self.retrain, store, prepared, self.settings.detectors, self.fitted)
        job.start()
        record = job.wait(POLL_SECONDS)
        if record.outcome == "promoted" and row < len(self.stream):  # else it serves no row
            served = store.load_model(trigger.model_id, record.new_version)
            run.served[row:] = _predict(served, self.stream.features.iloc[row:], self.stream.task)
            if run.scores is not None:
                run.scores[row:] = _positive_scores(served, self.stream.features.iloc[row:])
        execution = record.execution
        return Retrain(outcome=record.outcome, reason=record.reason,
                       training_rows=_row_span(execution.get("training_window")),
                       holdout_rows=_row_span(execution.get("holdout_window")),
                       training_seconds=float(execution.get("training_seconds", 0.0)), **base)


def policy_model_id(name: str) -> str:
    """A policy's model id in its store.

    >>> policy_model_id("every 30d")
    'every-30d'
    """
    return "".join(c if c.isalnum() else "-" for c in name).strip("-") or "policy"


def _predict(model: Any, features: pd.DataFrame, task: str) -> np.ndarray:
    predicted = np.asarray(model.predict(features))
    return predicted.astype(np.float64) if task == "regression" else predicted.astype(object)


def _positive_scores(model: Any, features: pd.DataFrame) -> np.ndarray:
    """A promoted binary classifier's probability of the positive class (as the file's
    scores), or NaN (no estimate) when it gives no probabilities."""
    column = positive_index(list(getattr(model, "classes_", [])))
    if column is None or not hasattr(model, "predict_proba"):
        return np.full(len(features), np.nan)
    return np.asarray(model.predict_proba(features), dtype=np.float64)[:, column]


def _row_span(window: dict[str, Any] | None) -> list[int] | None:
    """[first, last] stream row of a window's labelled rows (their offsets are rows)."""
    if not window or not window.get("labelled"):
        return None
    spans = window["labelled"]
    return [min(s["start"] for s in spans), max(s["end"] for s in spans)]


@dataclass(frozen=True)
class LiveRetrain:
    """When a retrain of a live run read its data and took effect (`LoopTiming`)."""

    labels_end: int  # labelled rows (in delivery order) on the topic when it read its data
    serves_from: int  # the row from which its model served, when promoted
    # Micro-batch ends (rows, labels), None: not within the run. `answered_at`: the
    # retrainer had its outcome once the worker's triggers up to there were published
    # (they were follow-ups, the later ones are not); `rebaselined_at`: the monitor
    # re-baselined on its promotion before the micro-batch after it.
    answered_at: tuple[int, int] | None = None
    rebaselined_at: tuple[int, int] | None = None
    labels_start: int | None = None  # a trigger of the features alone: the first labelled row it read


@dataclass(frozen=True)
class LoopTiming:
    """What a live run's timing was, for a replay of the same events that follows it
    (`tests/streams/test_replay_matches_loop.py`). Without it the replay keeps its own:
    micro-batches of `LOOP_BATCH_ROWS` rows, labels handed over `label_delay` rows late,
    each retrain reading the labels delivered when `post_trigger_rows` followed its
    trigger and served from the end of that micro-batch.

    The live worker's micro-batches interleave feature events and labelled records as
    they arrived, and a live retrain reads the labelled topic's records while the worker
    goes on, then trains for seconds while events keep flowing: neither follows from the
    events alone."""

    batches: Sequence[tuple[int, int]]  # each micro-batch's end: (rows, labelled rows) the monitor had
    # By trigger: ("features", its row) or ("labelled", the label it fired at, as a delivery index).
    retrains: dict[tuple[str, int], LiveRetrain]


@dataclass
class _Pending:
    """A trigger admitted to retrain, waiting for its evidence (or the follow-up), then
    (live) its retrain until the retrainer answered it."""

    trigger: Trigger
    row: int  # where it fired
    lab_start: int  # its labelled window, as delivery indices [start, end]
    lab_end: int
    event_time_end: Any
    live: LiveRetrain | None = None
    retrain: Retrain | None = None  # trained, its outcome not yet applied


class _DriftlineRun:
    """The monitor and the retrainer's policy over the stream, batch by batch."""

    def __init__(self, replay: LoopReplay, timeline, sample_every: int, timing: LoopTiming | None = None) -> None:
        self.replay, self.stream = replay, replay.stream
        config = replay.settings.detectors
        self.monitor = ModelMonitor(replay.profile, config, self.stream.task)
        self.monitor_version = REFERENCE_VERSION  # the version the monitor is baselined on
        self.replaced: list[str] = []  # the versions it re-baselined away from
        scores = self.stream.reference_scores
        self.run_ = PolicyRun("driftline", self.stream.reference_predictions.copy(),
                              scores=None if scores is None else scores.copy())
        self.served_codes = label_values(_items(self.run_.served))
        self.versions = np.full(len(self.stream), REFERENCE_VERSION, dtype=object)  # that served each row
        self.store = replay._store("driftline")
        self.model_id = policy_model_id("driftline")
        self.timeline, self.sample_every = timeline, sample_every
        self.timing = timing
        self.numeric, self.categorical = monitor_inputs(self.stream.features, replay.profile)
        self.lab_start = 0  # where the labelled window starts (ModelRuntime's), as a delivery index
        self.pending: _Pending | None = None
        self.follow_up: _Pending | None = None
        self.rebaselines: list[tuple[tuple[int, int], str]] = []  # live: (micro-batch end, version) to come
        self.last_attempt_at: dt.datetime | None = None
        self.wanted = replay.retrain.post_trigger_rows

    def batches(self) -> Sequence[tuple[int, int]]:
        """Each micro-batch's end: (rows, labels delivered)."""
        if self.timing is not None:
            return self.timing.batches
        stream = self.stream
        return [(stop, stream.delivered_before(stop))
                for stop in [*range(LOOP_BATCH_ROWS, len(stream), LOOP_BATCH_ROWS), len(stream)]]

    def run(self) -> PolicyRun:
        stream, labelled = self.stream, self.stream.labelled_rows
        start = first = 0
        batches = self.batches()
        for i, (stop, last) in enumerate(batches):
            before = self.monitor.events_seen
            cats = {c: v[start:stop] for c, v in self.categorical.items()} or None
            # the served model's outputs ride on the feature events, as live: the
            # prediction's drift and the estimated performance watch them
            scores = None if self.run_.scores is None else self.run_.scores[start:stop]
            for decision in self.monitor.update_features(self.numeric[start:stop], cats,
                                                         self.run_.served[start:stop], scores):
                row = start + decision.offset - before
                self._fired(decision, row, row, "features", lab_end=first - 1, feature_end=row)
            if last > first:
                rows = labelled[first:last]
                judged = self._judged(rows)
                before = self.monitor.labelled_seen
                for decision in self.monitor.update_labelled(self.served_codes[rows[judged]],
                                                             stream.actual_codes[rows[judged]]):
                    k = first + int(judged[decision.offset - before])
                    self._fired(decision, self._label_row(k, stop), int(labelled[k]), "labelled", lab_end=k,
                                feature_end=stop - 1)
            self._sample(start, stop, last)
            self._settle(stop, last, at_end=i == len(batches) - 1)
            self.replay.progress(stop - start)
            start, first = stop, last
        if self.follow_up is not None:
            self._skipped(self.follow_up, "the file ended while it waited behind a retrain", "end of file")
        return self.run_

    def _label_row(self, k: int, stop: int) -> int:
        """The row at which the `k`th label reached the monitor: `label_delay` rows after
        its prediction, or live the last row of its micro-batch."""
        if self.timing is not None:
            return stop - 1
        return int(self.stream.labelled_rows[k]) + self.stream.label_delay

    def _sample(self, start: int, stop: int, delivered: int) -> None:
        if self.timeline is None or start // self.sample_every == stop // self.sample_every and stop < len(self.stream):
            return
        snapshot = self.monitor.snapshot()
        self.timeline.sample_features(stop - 1, snapshot)
        if delivered:
            self.timeline.sample_labelled(self._label_row(delivered - 1, stop), snapshot)

    # -- triggers, as the consumer handles them ---------------------------------------------
    def _fired(self, decision: Decision, row: int, event_row: int, source: str, *, lab_end: int,
               feature_end: int) -> None:
        """A decision at `row`, on the event of `event_row`: it names the version that
        served that event, as the worker's trigger does."""
        replay, run = self.replay, self.run_
        version = self.versions[event_row]
        trigger_id = hashlib.sha256(
            f"{version}\x1f{self.monitor.profile.fingerprint}\x1f{source}\x1f{row}".encode()).hexdigest()[:32]
        line = trigger_line(decision, row, source)
        label = {"label": lab_end} if source == "labelled" else {}  # the label it fired at
        # The labelled rows (delivery indices) its window holds, as the worker's trigger's window.
        window = [self.lab_start, lab_end] if lab_end >= self.lab_start else None
        run.triggers.append({**line, **label, "labelled_window": window, "trigger_id": trigger_id,
                             "model_version": version})
        times = [replay.time_at(feature_end)]
        if lab_end >= self.lab_start:
            times.append(replay.time_at(int(self.stream.labelled_rows[lab_end])))
        trigger = Trigger(trigger_id=trigger_id, model_id=self.model_id, model_version=version,
                          trigger_types=list(decision.trigger_types), severity=decision.severity,
                          reason=decision.reason, metrics={}, triggered_at=replay.policy_time(row))
        place = (source, lab_end if source == "labelled" else row)
        live = self.timing.retrains.get(place) if self.timing is not None else None
        pending = _Pending(trigger, row, self.lab_start, lab_end, max(times), live)
        self.lab_start = lab_end + 1  # the window restarts
        if not replay.policy.eligible(trigger.severity):
            self._skipped(pending, f"severity {trigger.severity} is below the minimum {replay.policy.min_severity}",
                          "severity")
        elif self.pending is None:
            self._admit(pending, lab_end + 1)
        else:
            if self.follow_up is not None:
                decision = superseded(trigger_id, self.pending.trigger.trigger_id)
                self._skipped(self.follow_up, decision.reason, decision.cause)
            self.follow_up = pending

    def _admit(self, pending: _Pending, delivered: int) -> None:
        """The policy's checks (`RetrainPolicy.admit`); a trigger of the features alone
        waits for the labels handed over after it is admitted."""
        trigger = pending.trigger
        decision = self.replay.policy.admit(
            severity=trigger.severity, triggered_at=trigger.triggered_at, last_attempt_at=self.last_attempt_at,
            running=0, trigger_version=trigger.model_version,
            serving_version=self.store.current_version(self.model_id), trigger_types=trigger.trigger_types,
        )
        if decision.verdict is Verdict.SKIP:
            self._skipped(pending, decision.reason, decision.cause)
            return
        if pending.lab_end < pending.lab_start:
            if pending.live is not None and pending.live.labels_start is not None:
                delivered = pending.live.labels_start
            pending.lab_start, pending.lab_end = delivered, delivered - 1
        self.pending = pending

    def _settle(self, stop: int, delivered: int, *, at_end: bool) -> None:
        """Retrains the pending trigger once its evidence is there (`_evidence`), answers
        it (live: when the retrainer did), then admits the follow-up; re-baselines the
        monitor on a promotion (live: when the worker did)."""
        self._rebaseline_due(stop, delivered)
        while self.pending is not None:
            pending = self.pending
            if pending.retrain is None:
                end = self._evidence(pending, stop, delivered, at_end)
                if end is None:
                    if at_end:
                        self.pending = None
                        self._skipped(pending, f"the file ended before {self.wanted} labelled rows followed the trigger",
                                      "end of file")
                    return
                self._train(pending, stop, delivered, end)
            if pending.live is not None and not _reached(pending.live.answered_at, stop, delivered):
                return
            self.pending, follow_up, self.follow_up = None, self.follow_up, None
            if follow_up is not None:
                self._admit(follow_up, delivered)
        self._rebaseline_due(stop, delivered)

    def _evidence(self, pending: _Pending, stop: int, delivered: int, at_end: bool) -> int | None:
        """The end (a delivery index) of the labelled rows the retrain reads, once
        `post_trigger_rows` labels of rows served after it came past its window or
        `post_trigger_wait_seconds` passed since it fired (`_settled_window` of the
        consumer). None while waiting.

        Live, the labels the live retrain read, once the monitor has them too (at the end
        of the run, whatever it has): a read that the rule would not have allowed is an
        error, so a replay that does not follow the retrainer's rule fails there."""
        if pending.live is None:
            if self._waiting(pending, stop, delivered):
                return None
            return delivered if self.wanted else pending.lab_end + 1
        end = pending.live.labels_end
        if at_end:
            return end
        if delivered < end:
            return None
        if self.wanted and self._waiting(pending, stop, end):
            raise ValueError(f"the live retrain of the trigger at row {pending.row} read "
                             f"{self._labels_after_trigger(pending, end)} labels of rows served after it, fewer "
                             f"than post_trigger_rows ({self.wanted}), before post_trigger_wait_seconds passed")
        return end

    def _waiting(self, pending: _Pending, stop: int, delivered: int) -> bool:
        """Fewer than `post_trigger_rows` labels of rows served after the trigger past its
        window (`_labels_after_trigger`), and less than `post_trigger_wait_seconds` since it
        fired."""
        waited = (self.replay.time_at(stop - 1) - self.replay.time_at(pending.row)).total_seconds()
        return self._labels_after_trigger(pending, delivered) < self.wanted \
            and waited < self.replay.retrain.post_trigger_wait_seconds

    def _train(self, pending: _Pending, stop: int, delivered: int, end: int) -> None:
        """Prepares, trains, validates; a promoted model serves from the batch's end, or
        live from the row it served from (before any label of that row was handed over)."""
        serves_from = pending.live.serves_from if pending.live is not None else stop
        labelled = self.stream.labelled_rows
        if delivered and labelled[delivered - 1] >= serves_from:
            raise ValueError(f"the retrain of the trigger at row {pending.row} serves from row {serves_from}, "
                             f"but labels of its rows were handed over before its data was read")
        rows = labelled[pending.lab_start:end]
        retrain = self.replay._retrain(
            self.run_, self.store, pending.trigger, rows, serves_from,
            historical=self.replay.historical, profile_since=pending.event_time_end,
        )
        retrain.trigger_row = pending.row
        self.run_.retrains.append(retrain)
        pending.retrain = retrain
        if retrain.attempted:
            self.last_attempt_at = pending.trigger.triggered_at
        if retrain.outcome != "promoted":
            return
        version = self.store.current_version(self.model_id)
        self.versions[serves_from:] = version
        self.served_codes[serves_from:] = label_values(_items(self.run_.served[serves_from:]))
        if pending.live is None:
            self._rebaseline(version, delivered)
        elif (at := pending.live.rebaselined_at) is not None:
            if _reached(at, stop, delivered) and at != (stop, delivered):
                raise ValueError(f"the monitor re-baselined on the retrain of the trigger at row {pending.row} "
                                 f"before the replay could train it (the monitor had not the labels it read)")
            self.rebaselines.append((at, version))

    def _labels_after_trigger(self, pending: _Pending, delivered: int) -> int:
        """Labels delivered past the trigger's window of rows served at or after the one it
        fired at (`_labels_after_trigger` of the consumer): a late label shows nothing of a
        change that came after its prediction."""
        since = int(self.stream.times.searchsorted(pending.event_time_end))  # the first row served then
        first = max(pending.lab_end + 1, int(np.searchsorted(self.stream.labelled_rows, since)))
        return max(0, delivered - first)

    def _rebaseline_due(self, stop: int, delivered: int) -> None:
        """Live: the re-baselinings the worker made by the micro-batch end (stop, delivered)."""
        while self.rebaselines and _reached(self.rebaselines[0][0], stop, delivered):
            self._rebaseline(self.rebaselines.pop(0)[1], delivered)

    def _rebaseline(self, version: str, delivered: int) -> None:
        """The worker's re-baselining on a promotion: the promoted version's profile, the
        windows restart."""
        store = self.store
        self.monitor.rebaseline(profile_from_store(store.root, store.reference_profile_path(self.model_id, version)))
        self.lab_start = delivered
        self.replaced = [v for v in (*self.replaced, self.monitor_version) if v != version][-REPLACED_VERSIONS_KEPT:]
        self.monitor_version = version

    def _judged(self, rows: np.ndarray) -> np.ndarray:
        """Which of the delivered labels the labelled detectors judge: not those of a
        replaced version's predictions (`ModelRuntime._update_labelled`)."""
        if not self.replaced:
            return np.arange(len(rows))
        return np.flatnonzero(~np.isin(self.versions[rows], self.replaced))

    def _skipped(self, pending: _Pending, reason: str, cause: str) -> None:
        trigger = pending.trigger
        self.run_.retrains.append(Retrain(
            policy="driftline", row=pending.row, outcome="skipped", reason=reason, cause=cause, trigger_id=trigger.trigger_id,
            trigger_row=pending.row, trigger_types=list(trigger.trigger_types), severity=trigger.severity))


def _reached(end: tuple[int, int] | None, stop: int, delivered: int) -> bool:
    """Whether the micro-batch end (rows, labels) `end` is reached at (stop, delivered)."""
    return end is not None and stop >= end[0] and delivered >= end[1]


# -- results -----------------------------------------------------------------------------------
def metric_name(task: str, requested: str = "auto") -> str:
    if requested != "auto":
        if (requested == "accuracy") != (task == "classification"):
            raise UsageError(f"--metric {requested} does not fit a {task} task")
        return requested
    return "accuracy" if task == "classification" else "mae"


def row_errors(metric: str, stream: LabelledStream, run: PolicyRun) -> np.ndarray:
    """Per labelled row of the stream: 1 - correct (accuracy; labels compared as the
    monitor codes them, so 1 and 1.0 are one class), |error| (mae) or error² (rmse)."""
    rows = stream.labelled_rows
    if metric == "accuracy":
        return (label_values(_items(run.served[rows])) != stream.actual_codes[rows]).astype(np.float64)
    diff = run.served[rows].astype(np.float64) - stream.actual[rows].astype(np.float64)
    return np.abs(diff) if metric == "mae" else diff**2


def metric_value(metric: str, errors: np.ndarray) -> float:
    if not len(errors):
        return math.nan
    mean = float(np.mean(errors))
    return 1.0 - mean if metric == "accuracy" else math.sqrt(mean) if metric == "rmse" else mean


def metric_over_time(metric: str, errors: np.ndarray, rows: np.ndarray, window: int, every: int
                     ) -> tuple[list[int], list[float]]:
    """The metric over the last `window` labelled rows, every `every` rows."""
    cumulative = np.concatenate([[0.0], np.cumsum(errors)])
    xs, ys = [], []
    for k in range(min(window, len(errors)), len(errors) + 1, max(1, every)):
        xs.append(int(rows[k - 1]))
        ys.append(metric_value(metric, np.array([(cumulative[k] - cumulative[max(0, k - window)]) / min(k, window)])))
    return xs, ys


def summary_json(metric: str, stream: LabelledStream, runs: Sequence[PolicyRun]) -> dict[str, Any]:
    policies = [{"name": run.name, "value": metric_value(metric, row_errors(metric, stream, run)),
                 "retrains": len(run.attempted), "promotions": run.promotions} for run in runs]
    driftline = next((run for run in runs if run.name == "driftline"), None)
    retrains = [{"row": r.row, "trigger_id": r.trigger_id, "trigger_types": r.trigger_types,
                 "severity": r.severity, "training_rows": r.training_rows, "promoted": r.outcome == "promoted"}
                for r in (driftline.attempted if driftline else [])]
    return {"metric": metric, "policies": policies, "retrains": retrains}


def banner_lines(summary: dict[str, Any]) -> list[str]:
    width = max(len(p["name"]) for p in summary["policies"])
    return [f"  {p['name']:<{width}}  {summary['metric']} {p['value']:.4f}  retrains {p['retrains']:>3}  "
            f"promotions {p['promotions']:>3}" for p in summary["policies"]]


def skips(run: PolicyRun) -> str:
    """driftline's triggers that did not retrain, by cause."""
    causes = Counter(r.cause for r in run.retrains if not r.attempted)
    if not causes:
        return f"{len(run.triggers)} trigger(s), none skipped"
    return f"{len(run.triggers)} trigger(s), skipped: " + ", ".join(f"{n} {c}" for c, n in sorted(causes.items()))


def progress_bar(total: int, enabled: bool) -> Any:
    """tqdm on a terminal (stderr), nothing elsewhere."""
    from tqdm import tqdm

    return tqdm(total=total, unit="row", unit_scale=True, desc="replay", file=sys.stderr,
                disable=not (enabled and sys.stderr.isatty()), leave=False)


def run_policies(replay: LoopReplay, schedules: Sequence[Schedule], timeline=None,
                 sample_every: int = LOOP_BATCH_ROWS) -> list[PolicyRun]:
    """driftline, never, then each schedule."""
    return [replay.driftline(timeline, sample_every), replay.never(), *(replay.scheduled(s) for s in schedules)]


def scratch_folder(parent: str | None = None) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="driftline-loop-", dir=parent)


# -- the command ---------------------------------------------------------------------------------
def run_command(args, settings: Settings, reference: pd.DataFrame, frame: pd.DataFrame, features: list[str],
                task: str, sample_every: int) -> int:
    """`driftline backtest --retrain` (its arguments: `streams.backtest.add_arguments`)."""
    from streams.backtest import summary, write_triggers

    for option, column in (("--actual-column", args.actual_column), ("--prediction-column", args.prediction_column)):
        if column not in frame.columns:
            raise UsageError(f"--retrain needs the stream's {option} ({column!r}): it has no such column")
    if args.cooldown_rows is not None and args.cooldown_rows < 0:
        raise UsageError("--cooldown-rows must be at least 0")
    if args.schedule_history is not None and args.schedule_history < 1:
        raise UsageError("--schedule-history must be at least 1")
    schedules = [Schedule.parse(text) for text in args.schedule_every]
    times = stream_times(frame, args.timestamp_column, needed=any(s.period is not None for s in schedules))
    model = model_settings(args, settings, task, features)
    frame = frame.reset_index(drop=True)
    scores = frame[args.score_column].to_numpy(dtype=np.float64, na_value=np.nan) if args.score_column else None
    stream = LabelledStream(frame[features], _targets(frame[args.actual_column], task, "--actual-column"),
                            _targets(frame[args.prediction_column], task, "--prediction-column"), times, task,
                            args.label_delay, reference_scores=scores)
    metric = metric_name(task, args.metric)
    profile = ReferenceProfile.from_frame(
        reference, feature_columns=features,
        prediction_column=args.prediction_column if args.prediction_column in reference.columns else None,
        actual_column=args.actual_column if args.actual_column in reference.columns else None,
        config=settings.detectors,
        score_column=args.score_column if args.score_column in reference.columns else None,
    )
    from schemas.logs import configure_logging

    configure_logging(settings.log_level, settings.log_repeats)  # on stderr, as every command's
    # Each training's start is in the banner's counts: on a terminal it would tear the bar.
    logging.getLogger("retrain.job").setLevel(logging.WARNING)
    timeline = None
    if args.report:
        from streams.report import Timeline

        timeline = Timeline("driftline", task, x_label="row", labelled_warmup=settings.detectors.concept_baseline_size)
    with progress_bar(len(stream) * (2 + len(schedules)), enabled=True) as bar, \
            scratch_folder(settings.retrain.work_dir) as folder:
        replay = LoopReplay(stream, reference, profile, model, settings, Path(folder),
                            schedule_history=args.schedule_history, cooldown_rows=args.cooldown_rows,
                            progress=bar.update)
        runs = run_policies(replay, schedules, timeline, sample_every)
    triggers = runs[0].triggers
    write_triggers(Path(args.output), triggers)
    result = summary_json(metric, stream, runs)
    if args.summary:
        _write_json(Path(args.summary), result)
    if args.report:
        _write_loop_report(args, settings, stream, runs, metric, timeline, triggers, result)
    print(summary(len(stream), triggers, args.output))
    print(f"retraining loop replayed ({model.trainer or ('train_command' if model.train_command else 'built-in')} "
          f"trainer, label delay {args.label_delay} rows); {skips(runs[0])}:")
    print("\n".join(banner_lines(result)))
    return 0


def stream_times(frame: pd.DataFrame, column: str, *, needed: bool) -> pd.DatetimeIndex:
    """The rows' event times (UTC), else one second per row."""
    if column not in frame.columns:
        if needed:
            raise UsageError(f"--schedule-every with a duration needs the timestamp column {column!r}")
        return pd.DatetimeIndex(ONE_SECOND_PER_ROW + pd.to_timedelta(np.arange(len(frame)), unit="s"))
    try:
        times = pd.DatetimeIndex(pd.to_datetime(frame[column], utc=True))
    except (ValueError, TypeError) as error:
        raise UsageError(f"--timestamp-column {column!r}: not times ({error})") from None
    if times.hasnans:
        raise UsageError(f"--timestamp-column {column!r}: a row has no time")
    if needed and not times.is_monotonic_increasing:
        raise UsageError(f"--timestamp-column {column!r}: the rows are not in time order")
    return times


def model_settings(args, settings: Settings, task: str, features: list[str]) -> ModelSettings:
    """The model as the retrainer sees it: `--model`'s trainer, else the built-in one."""
    trainer: dict[str, Any] = {}
    if args.model is not None:
        configured = settings.models.get(args.model)
        if configured is None:
            raise UsageError(f"--model {args.model}: no [models.{args.model}] in the configuration")
        trainer = {"trainer": configured.trainer, "train_command": configured.train_command}
    return ModelSettings(reference_path=Path(args.reference), task=task, feature_columns=features,
                         prediction_column=args.prediction_column, actual_column=args.actual_column,
                         score_column=args.score_column, **trainer)


def _targets(column: pd.Series, task: str, option: str) -> np.ndarray:
    if task == "classification":
        return column.to_numpy(dtype=object)
    try:
        return pd.to_numeric(column).to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError):
        raise UsageError(f"{option}: a regression backtest needs numbers; class labels need --task classification") from None


def _write_json(path: Path, document: dict[str, Any]) -> None:
    import orjson

    try:
        path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror})") from None


def _write_loop_report(args, settings: Settings, stream: LabelledStream, runs: Sequence[PolicyRun], metric: str,
                       timeline, triggers: list[dict[str, Any]], result: dict[str, Any]) -> None:
    from streams.report import PolicyChart, write_report

    window = max(50, min(1000, len(stream.labelled_rows) // 20))
    every = max(1, len(stream.labelled_rows) // 2000)
    series = {run.name: metric_over_time(metric, row_errors(metric, stream, run), stream.labelled_rows, window, every)
              for run in runs}
    retrains = {run.name: [{"row": r.row, "outcome": r.outcome, "training_rows": r.training_rows, "reason": r.reason}
                           for r in run.attempted] for run in runs}
    for trigger in triggers:
        timeline.mark(trigger["offset"], trigger)
    rows = [("reference", str(args.reference)), ("stream", f"{args.stream} ({len(stream)} rows)"),
            ("task", stream.task), ("label delay", f"{args.label_delay} rows")]
    rows += [(p["name"], f"{metric} {p['value']:.4f}, {p['retrains']} retrain(s), {p['promotions']} promotion(s)")
             for p in result["policies"]]
    write_report(args.report, f"driftline backtest --retrain of {args.stream}", rows, [timeline], triggers,
                 PolicyChart(metric, window, series, retrains))
