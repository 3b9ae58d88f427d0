"""`driftline backtest --retrain`'s driftline policy equals the live loop on the same events
(issue 23). One short scenario of `bench.loop`'s kind (regression, a covariate shift then a
change of concept) runs through `LoopRun`: the real worker and retrainer, the simulated
inference service, the real broker and database. The events the live run saw are read
back from its topics (features with the version that served each, the labelled records,
in offset order) and replayed by `LoopReplay` with the run's settings and reference. The
replay must fire the same triggers at the same events with the same labelled windows,
give each the same fate (retrained, superseded, stale, cooldown, ...), train on the same
rows, hold out the same rows, and promote or reject in the same order with the same
validation figures; its promoted models must predict what the live ones served.

What the events alone cannot tell, the replay is given (`LoopTiming`), from the live
run's own records:
- the worker's micro-batches (its saved states, one per batch in this test: each input's
  last offset per batch). A batch takes its feature events, then its labelled records:
  where the labels fall between feature events decides a window's ends and where a
  promotion re-baselines the monitor (the label delay as the join and the worker saw it). A labelled trigger's row
  is the last feature row of its batch: where in the batch its record came is not kept;
- per retrain, how many labelled records were on the topic when the retrainer read them
  (it reads the topic's end at a moment of its own clock), and for a trigger of the
  features alone the first one (its `post_trigger_rows_ready` log line). The replay
  checks each read against its own `post_trigger_rows` rule;
- when the retrainer answered it (the batch of the last trigger it received before the
  outcome, by its `trigger_received` log line): a trigger received while its model
  retrains waits as the follow-up;
- per promotion, the row from which the inference service served the new version and
  the batch at whose start the worker re-baselined (the first saved state naming it).
Everything else is the replay's own, on the product's code: the detectors, the windows'
starts, the policy, the change point, the split, the training and the validation.

Tolerances, named: the retrainer's cooldown compares the triggers' publication times
(wall clock), the replay their events' times; they differ by the worker's lag (a second
at its start-up, less after), so a trigger whose distance to the last retrain straddles
the cooldown by less than that would be judged differently (this scenario's are seconds
away from it). The replay has no promotion watch: the change of concept comes late
enough that the first promotion's watch is over, and a run that rolled back fails here
(as `bench.loop` requires of this kind of scenario).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from retrain import datasets
from retrain.model_store import open_model_store
from schemas.messages import FeatureEvent, LabelledRecord, RetrainOutcome, RetrainRequest, decode
from schemas.settings import ModelSettings, Settings
from streams.demo import LoopRun, Scenario
from streams.loop_backtest import LabelledStream, LiveRetrain, LoopReplay, LoopTiming, PolicyRun
from streams.model_state import ModelState, decode_state
from streams.references import profile_from_settings

pytestmark = pytest.mark.services
# Two promotions: after the shift (on a trigger of the features alone, as a rule: the
# worker starts behind and fires before it has a label) and after the change of concept
# (a labelled trigger, its window split at the change). The change comes after the first
# promotion's watch (`retrain.watch_rows` labelled events) is over: a model promoted for the
# shift and judged on the new concept would be rolled back.
SCENARIO = Scenario("replay_matches", events=20_000, covariate_shift_at=2_000, concept_change_at=14_000)
LABELLED_TYPES = {"concept_drift", "performance_degradation"}  # the labelled signals' (detectors.fusion)
# The retrainer's reasons of a skip, by their first words, and the replay's causes.
SKIP_CAUSES = {"superseded": "superseded", "stale": "stale", "cooldown": "cooldown", "severity": "severity",
               "too few": "samples"}


@dataclass
class Live:
    """What the live run wrote, read back from its topics (offset order)."""

    settings: Settings
    model: ModelSettings
    model_id: str
    features: list[FeatureEvent]  # the feature topic's offset is the row
    labelled: list[LabelledRecord]  # the labelled topic's offset is the delivery index
    label_rows: np.ndarray  # the row of each labelled record
    states: list[ModelState]  # the worker's, one per micro-batch
    triggers: list[RetrainRequest]
    outcomes: dict[str, RetrainOutcome]  # by trigger_id
    retrainer_log: Path


def read_topic(settings: Settings, topic: str) -> list[bytes]:
    """Every record of partition 0 of `topic` (the run's topics have one), to its end."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": f"{topic}-readback",
                         "enable.auto.commit": False})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, low)])
        values: list[bytes] = []
        last, deadline = low - 1, time.monotonic() + 30
        while last < high - 1:
            assert time.monotonic() < deadline, f"{topic}: offset {high - 1} not reached"
            for message in consumer.consume(10_000, timeout=0.5):  # waits the timeout out unless 10,000 come
                assert message.error() is None, message.error()
                values.append(message.value())
                last = message.offset()
        return values
    finally:
        consumer.close()


def read_live(run: LoopRun) -> Live:
    settings = run.settings
    kafka = settings.kafka
    features = [decode(FeatureEvent, v) for v in read_topic(settings, kafka.features_topic)]
    assert [e.event_id for e in features] == [f"{run.model}-{row}" for row in range(len(features))]
    labelled = [decode(LabelledRecord, v) for v in read_topic(settings, kafka.labelled_topic)]
    label_rows = np.array([int(r.event_id.rsplit("-", 1)[1]) for r in labelled])
    # The replay hands labels over in row order: the join must have kept it.
    assert np.all(np.diff(label_rows) > 0)
    outcomes = [decode(RetrainOutcome, v) for v in read_topic(settings, kafka.retrain_events_topic)]
    return Live(settings, settings.models[run.model], run.model, features, labelled, label_rows,
                [decode_state(v) for v in read_topic(settings, settings.monitor.state_topic)],
                [decode(RetrainRequest, v) for v in read_topic(settings, kafka.retrain_requests_topic)],
                {o.trigger_id: o for o in outcomes}, run.work / "retrainer.log")


# -- what the live run saw, in the replay's terms ------------------------------------------------
def batches(live: Live) -> list[tuple[int, int]]:
    """Each micro-batch's end: (feature events, labelled records) the worker had processed."""
    kafka = live.settings.kafka
    ends = []
    for state in live.states:
        done = {topic: p.last_offset + 1 for topic, p in state.progress.items()}
        ends.append((done.get(kafka.features_topic, 0), done.get(kafka.labelled_topic, 0)))
    assert ends == sorted(ends)
    return ends


def place(request: RetrainRequest) -> tuple[str, int]:
    """A trigger as `LoopTiming` names it: a feature event's row, or the labelled record's
    offset (its delivery index)."""
    window = request.window
    if not set(request.decision.trigger_types) <= LABELLED_TYPES:
        return "features", window.features.ranges[0].end
    return "labelled", window.labelled.ranges[0].end


def batch_of(live: Live, request: RetrainRequest) -> int:
    """The index of the micro-batch in which a trigger fired."""
    source, at = place(request)
    return next(i for i, end in enumerate(batches(live)) if end[source == "labelled"] > at)


def source_and_row(live: Live, request: RetrainRequest) -> tuple[str, int]:
    """Where a trigger fired: a feature event's row, or for a labelled record the last
    feature row the worker had then (the replay's row of a labelled trigger: where in its
    micro-batch the record came is not recorded, the batch is)."""
    source, at = place(request)
    return source, at if source == "features" else batches(live)[batch_of(live, request)][0] - 1


def log_entries(path: Path, event: str) -> list[dict]:
    """The structured log lines of `event` in a process's log."""
    entries = (json.loads(line) for line in path.read_text().splitlines() if line.startswith("{"))
    return [entry for entry in entries if entry.get("event") == event]


def labels_read(live: Live) -> dict[str, tuple[int, int]]:
    """The labelled records each retrain read, [first, end), by trigger_id (the
    retrainer's `post_trigger_rows_ready` log lines)."""
    spans = {}
    for ready in log_entries(live.retrainer_log, "post_trigger_rows_ready"):
        (span,) = ready["labelled"]
        spans[ready["trigger_id"]] = span["start"], span["end"] + 1
    return spans


def answered_at(live: Live, outcome: RetrainOutcome) -> tuple[int, int]:
    """The micro-batch end after which the retrainer had the outcome: that of the last
    trigger it received before (its `trigger_received` log line against the outcome's
    `completed_at`, one process's clock; a trigger received while its model retrains
    waits as the follow-up)."""
    received = {entry["trigger_id"]: dt.datetime.fromisoformat(entry["timestamp"])
                for entry in log_entries(live.retrainer_log, "trigger_received")}
    before = [batch_of(live, r) for r in live.triggers if received[r.trigger_id] < outcome.completed_at]
    return batches(live)[max(before)]


def timing(live: Live) -> LoopTiming:
    ends, read = batches(live), labels_read(live)
    retrains = {}
    for request in live.triggers:
        if request.trigger_id not in read:
            continue  # skipped before reading
        outcome = live.outcomes[request.trigger_id]
        first, labels_end = read[request.trigger_id]
        serves_from, rebaselined_at = len(live.features), None  # None: not within the run
        if outcome.outcome == "promoted":
            serves_from = next((row for row, e in enumerate(live.features) if e.model_version == outcome.new_version),
                               serves_from)
            batch = next((i for i, s in enumerate(live.states) if s.promotion_id == request.trigger_id), None)
            if batch is not None:  # re-baselined at the start of that micro-batch
                rebaselined_at = ends[batch - 1] if batch else (0, 0)
        labels_start = first if request.window.labelled is None else None  # else the replay's own window
        retrains[place(request)] = LiveRetrain(labels_end, serves_from, answered_at(live, outcome),
                                                rebaselined_at, labels_start)
    return LoopTiming(ends, retrains)


def replay(live: Live, workdir: Path) -> PolicyRun:
    """The live run's events replayed with its settings; the reference model's
    predictions are version 1's, as the live store holds it."""
    model, settings = live.model, live.settings
    historical = datasets.historical_frame(model)
    columns = datasets.feature_columns(model, historical)
    rows = batches(live)[-1][0]  # as far as the worker got
    features = pd.DataFrame([e.features for e in live.features[:rows]])[columns]
    actual = np.full(rows, np.nan)
    kept = live.label_rows < rows
    actual[live.label_rows[kept]] = [r.actual for r, k in zip(live.labelled, kept) if k]
    first_version = open_model_store(settings).load_model(live.model_id, "1")
    reference_predictions = first_version.predict(features)
    served_by_first = np.array([e.model_version == "1" for e in live.features[:rows]])
    recorded = np.array([e.prediction for e in live.features[:rows]])
    np.testing.assert_array_equal(reference_predictions[served_by_first], recorded[served_by_first])
    times = pd.DatetimeIndex(pd.to_datetime([e.timestamp for e in live.features[:rows]], utc=True))
    stream = LabelledStream(features, actual, reference_predictions, times, model.task)
    loop = LoopReplay(stream, historical, profile_from_settings(model, settings.detectors), model, settings, workdir)
    return loop.driftline(timing=timing(live))


# -- the comparison --------------------------------------------------------------------------------
def cause(outcome: RetrainOutcome) -> str:
    if outcome.outcome != "skipped":
        return outcome.outcome
    return next((c for words, c in SKIP_CAUSES.items() if outcome.reason.startswith(words)), outcome.reason)


def live_triggers(live: Live) -> list[tuple]:
    """(source, row, labelled record it fired at, its window's labelled records [first,
    last], severity, types) per trigger."""
    out = []
    for request in live.triggers:
        source, row = source_and_row(live, request)
        label = place(request)[1] if source == "labelled" else None
        labelled = request.window.labelled
        window = [labelled.ranges[0].start, labelled.ranges[0].end] if labelled is not None else None
        out.append((source, row, label, window, request.decision.severity, request.decision.trigger_types))
    return out


def replayed_triggers(run: PolicyRun) -> list[tuple]:
    return [(t["source"], t["offset"], t.get("label"), t["labelled_window"], t["severity"], t["trigger_types"])
            for t in run.triggers]


def live_retrains(live: Live) -> list[tuple]:
    """Per trigger, in the order the retrainer settled them: where it fired, what became
    of it, the rows it trained on and held out ([first, last]), the validation's words."""
    out = []
    for outcome in live.outcomes.values():
        request = next(r for r in live.triggers if r.trigger_id == outcome.trigger_id)
        spans = [None, None]
        for i, window in enumerate((outcome.training, outcome.holdout)):
            if window is not None:
                (span,) = window.labelled
                spans[i] = [int(live.label_rows[span.start]), int(live.label_rows[span.end])]
        reason = outcome.reason if outcome.outcome in ("promoted", "rejected") else None
        source, at = place(request)
        out.append((*source_and_row(live, request), at if source == "labelled" else None, cause(outcome), *spans,
                    reason))
    return out


def replayed_retrains(run: PolicyRun) -> list[tuple]:
    triggers = {t["trigger_id"]: t for t in run.triggers}
    return [(triggers[r.trigger_id]["source"], r.trigger_row, triggers[r.trigger_id].get("label"),
             r.outcome if r.attempted else r.cause, r.training_rows, r.holdout_rows,
             r.reason if r.outcome in ("promoted", "rejected") else None) for r in run.retrains]


def test_the_replay_fires_retrains_and_promotes_as_the_live_loop(kafka_bootstrap, postgres_dsn, tmp_path: Path,
                                                                unique_name: str) -> None:
    # A state saved after every batch (`commit_interval_seconds` shorter than any batch):
    # the replay takes the worker's micro-batches from its saved states.
    run = LoopRun(SCENARIO, tmp_path / "loop", schema=unique_name, monitor={"commit_interval_seconds": 1e-6})
    try:
        run.run()
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(unique_name)))
    live = read_live(run)
    outcomes = [(o.outcome, o.reason) for o in live.outcomes.values()]
    assert not [o for o in outcomes if o[0] == "rolled_back"], outcomes
    assert [o for o in outcomes if o[0] == "promoted"], outcomes
    replayed = replay(live, tmp_path / "replay")

    assert replayed_triggers(replayed) == live_triggers(live)
    assert sorted(replayed_retrains(replayed), key=str) == sorted(live_retrains(live), key=str)
    # the retrains and promotions in the same order
    assert [r[:4] for r in replayed_retrains(replayed) if r[3] in ("promoted", "rejected", "failed")] == \
        [r[:4] for r in live_retrains(live) if r[3] in ("promoted", "rejected", "failed")]
    # the promoted model is the live one: the same predictions from the row it served from
    np.testing.assert_array_equal(replayed.served, [e.prediction for e in live.features[:len(replayed.served)]])
