"""The loop's purpose, measured: is the served model good again soon after a real change,
with few retrains, and silent on stationary data?

`python -m bench.loop [--quick] [--scenario NAME ...] [--stationary-minutes M]` drives the
real worker and retrainer (subprocesses) on the real broker and database with the
simulated inference service (`streams.demo.LoopRun`), scenario by scenario, and prints
one table. For each change it reports:
- detection delay: events from the onset to the event the first trigger fired at;
- time to recovery: events and seconds from the onset until the served model's error
  over the last 1,000 requests is within 1.2x of an oracle's (the built-in trainer fitted
  on 5,000 rows of the post-change data alone, scored on 5,000 fresh ones), and the same
  against the pre-change baseline (the first version's error before the change);
- triggers, retrains started, promotions, rejected or failed retrains, skipped triggers
  (superseded, stale, cooldown), rollbacks, retrains started on stationary data, and the
  worker's largest input lag while a retrain ran.
`bad_challenger` retrains with bench/bad_challenger.py, whose first retrained model beats
the champion on the holdout and serves worse: the monitor's watch of that promotion must
roll it back within `retrain.watch_rows` + 500 of its own labelled events (the labelled
topic's records between the two outcomes of predictions the bad version served: the watch
judges only those, and the replaced version's late labels come first; the table shows all
records too), the error then back within 1.2x of the old champion's;
every other scenario must roll nothing back.
A classifier's error is its error rate; "recovered" is then within 2 points of the oracle.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import uuid
from collections import Counter
from dataclasses import dataclass

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from retrain.builtin_trainer import train
from retrain.datasets import policy_from
from schemas.messages import LabelledRecord, decode
from schemas.settings import KafkaSettings, RetrainSettings
from streams.demo import ROOT, Scenario, Timeline, LoopRun, RECOVERY_FACTOR, WINDOW
from streams.workload import Phase

RATE = 500.0
ORACLE_ROWS = 5_000
CLASSIFICATION_POINTS = 0.02  # "within 2 points of the oracle's accuracy"
TARGET_EVENTS = {"covariate": 5_000, "concept": 6_000, "covariate+concept": 6_000}
MAX_PROMOTIONS_PER_CHANGE = 2
ROLLBACK_SLACK_EVENTS = 500
HARMLESS_COLUMN = 4  # x4: the workload's target ignores it
LATE_LABEL_EVENTS = 5_000  # labels that many events after their prediction
LATE_LABEL_POST = 16_000  # events after the change: the retrain waits for post-change labels
LABEL_TRIGGER_TYPES = ("concept_drift", "performance_degradation")  # the labels' evidence


def scenarios(quick: bool, stationary_minutes: float) -> list[Scenario]:
    pre, post = (3_000, 8_000) if quick else (5_000, 12_000)
    stationary = int((2 if quick else stationary_minutes) * 60 * RATE)
    return [
        Scenario("stationary", events=stationary, rate=RATE),
        Scenario("covariate", events=pre + post, covariate_shift_at=pre, rate=RATE),
        Scenario("concept", events=pre + post, concept_change_at=pre, rate=RATE),
        Scenario("both", events=pre + 2 * post, covariate_shift_at=pre, concept_change_at=pre + post, rate=RATE),
        Scenario("classification", events=pre + post, concept_change_at=pre, task="classification", rate=RATE),
        Scenario("bad_challenger", events=pre + 2 * post, covariate_shift_at=pre, rate=RATE,
                 train_command=(sys.executable, str(ROOT / "bench" / "bad_challenger.py"), "{data}", "{output}",
                                "{target}", "{task}", "{work}/trainings")),
        *late_label_scenarios(pre),
        *harmless_scenarios(pre, post),
    ]


def harmless_scenarios(pre: int, post: int) -> list[Scenario]:
    """x4, a column the target ignores, moves 1.5 sd: drift that does no harm, without
    and with the performance estimated before labels, on the same scored reference."""
    harmless = {"events": pre + post, "covariate_shift_at": pre, "rate": RATE, "scored_reference": True,
                "shifted_columns": (HARMLESS_COLUMN,)}
    return [Scenario("harmless", **harmless), Scenario("harmless_estimated", **harmless, estimate=True)]


def late_label_scenarios(pre: int) -> list[Scenario]:
    """A covariate shift with labels LATE_LABEL_EVENTS late, on the same scored reference:
    retraining on the labels' evidence only, on every trigger (input drift this loud is
    CRITICAL under the design's rule), and with the performance estimated before labels."""
    late = {"events": pre + LATE_LABEL_POST, "covariate_shift_at": pre, "rate": RATE, "scored_reference": True,
            "actual_delay_seconds": LATE_LABEL_EVENTS / RATE}
    return [Scenario("late_labels_label_only", **late, retrain_on=LABEL_TRIGGER_TYPES),
            Scenario("late_labels", **late), Scenario("late_labels_estimated", **late, estimate=True)]


def oracle_error(scenario: Scenario, phase: Phase) -> float:
    """The windowed error an oracle reaches: trained on post-change rows only."""
    workload = scenario.workload
    fitted = train(workload.frame(ORACLE_ROWS, phase, seed=1001), "actual", task=scenario.task, seed=0)
    fresh = workload.frame(ORACLE_ROWS, phase, seed=1002)
    predicted = fitted.predict(fresh.drop(columns=["actual"]))
    if scenario.task == "classification":
        return float(np.mean(predicted != fresh["actual"].to_numpy()))
    return float(np.mean(np.abs(predicted - fresh["actual"].to_numpy())))


@dataclass
class Change:
    scenario: str
    phase: str
    onset: int
    delay: int | None
    oracle: float
    baseline: float
    recovered: tuple[int, float] | None  # (events, seconds) after the onset
    recovered_vs_baseline: tuple[int, float] | None
    promotions: int
    target_met: bool


def changes(scenario: Scenario, timeline: Timeline) -> list[Change]:
    out = []
    onsets = scenario.onsets
    before = onsets[0][0] if onsets else scenario.events
    baseline = timeline.error_at(before)
    for i, (onset, phase) in enumerate(onsets):
        end = onsets[i + 1][0] if i + 1 < len(onsets) else None
        oracle = oracle_error(scenario, phase)
        yardstick = (oracle + CLASSIFICATION_POINTS) / RECOVERY_FACTOR if scenario.task == "classification" else oracle
        delay = next((_fired_at(r) - onset for _, r in timeline.triggers
                      if _fired_at(r) >= onset and (end is None or _fired_at(r) < end)), None)

        def after(tick):
            return None if tick is None else (tick.events - onset, tick.seconds - timeline.seconds_at(onset))

        recovered = after(timeline.recovery(onset, yardstick, end))
        promotions = sum(1 for at, o in timeline.outcomes
                         if o.outcome == "promoted" and at >= onset and (end is None or at < end))
        target = TARGET_EVENTS.get(phase, 6_000)
        met = recovered is not None and recovered[0] <= target and promotions <= MAX_PROMOTIONS_PER_CHANGE
        out.append(Change(scenario.name, phase, onset, delay, oracle, baseline, recovered,
                          after(timeline.recovery(onset, baseline, end)), promotions, met))
    return out


def _fired_at(request) -> int:
    """The simulator's event index the trigger fired at: its window's last offset (one
    partition, one record per event)."""
    window = request.window.features or request.window.labelled
    return window.ranges[-1].end if window and window.ranges else -1


def counts(scenario: Scenario, timeline: Timeline) -> dict[str, object]:
    outcomes = [o for _, o in timeline.outcomes]
    started = [o for o in outcomes if o.outcome in ("promoted", "rejected", "failed")]
    first_onset = scenario.onsets[0][0] if scenario.onsets else math.inf
    by_id = {r.trigger_id: _fired_at(r) for _, r in timeline.triggers}
    trigger_at = {r.trigger_id: at for at, r in timeline.triggers}
    lags = []
    for at, outcome in timeline.outcomes:
        if outcome.outcome in ("promoted", "rejected", "failed") and outcome.trigger_id in trigger_at:
            lags += [t.worker_lag for t in timeline.ticks if trigger_at[outcome.trigger_id] <= t.events <= at
                     and t.worker_lag is not None]
    return {
        "triggers": len(timeline.triggers),
        "retrains": len(started),
        "promotions": sum(o.outcome == "promoted" for o in outcomes),
        "rejected/failed": sum(o.outcome in ("rejected", "failed") for o in outcomes),
        "skipped": sum(o.outcome == "skipped" for o in outcomes),
        "rollbacks": sum(o.outcome == "rolled_back" for o in outcomes),
        "stationary retrains": sum(1 for o in started if by_id.get(o.trigger_id, math.inf) < first_onset),
        "max lag in retrains": int(max(lags)) if lags else 0,
    }


@dataclass
class Rollback:
    version: str
    promoted_at: int  # simulator events when the promotion, then its rollback, were seen
    rolled_back_at: int
    labelled: int  # labelled records the join produced from the promotion to the rollback
    labelled_own: int  # of those, the promoted version's (what its watch judges)
    champion_error: float  # the old champion's windowed error when the bad version was promoted
    error_after: float  # once the window is wholly served by the restored version

    @property
    def target_met(self) -> bool:
        return (self.labelled_own <= RetrainSettings().watch_rows + ROLLBACK_SLACK_EVENTS
                and self.error_after <= RECOVERY_FACTOR * self.champion_error)


def rollbacks(timeline: Timeline, kafka: KafkaSettings) -> list[Rollback]:
    promoted = {o.new_version: (at, o) for at, o in timeline.outcomes if o.outcome == "promoted"}
    found = []
    for at, o in timeline.outcomes:
        if o.outcome != "rolled_back" or o.previous_version not in promoted:
            continue
        promoted_at, promotion = promoted[o.previous_version]
        # the simulated service follows the champion at its next request batch
        served = next((t.events for t in timeline.ticks if t.events >= at and t.version == o.new_version), None)
        after = math.nan if served is None else timeline.error_at(served + WINDOW)
        labelled, own = labelled_between(kafka, promotion.completed_at, o.completed_at, o.previous_version)
        found.append(Rollback(o.previous_version, promoted_at, at, labelled, own, timeline.error_at(promoted_at),
                              after))
    return found


def labelled_between(kafka: KafkaSettings, start: dt.datetime, end: dt.datetime, version: str) -> tuple[int, int]:
    """Records appended to the labelled topic between two moments (their broker
    timestamps): all of them, and those of predictions `version` served. The watch judges
    the promoted version on its own labelled events; the replaced version's late labels
    come first."""
    consumer = Consumer({**kafka.client_config(), "group.id": f"bench-loop-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        topic = kafka.labelled_topic
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions

        def offsets(moment: dt.datetime) -> list[TopicPartition]:
            asked = [TopicPartition(topic, p, int(moment.timestamp() * 1000)) for p in partitions]
            found = consumer.offsets_for_times(asked, timeout=30)
            return [TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else
                                   consumer.get_watermark_offsets(tp, timeout=30)[1]) for tp in found]

        starts, ends = offsets(start), offsets(end)
        total = sum(b.offset - a.offset for a, b in zip(starts, ends))
        return total, _records_of_version(consumer, starts, ends, version)
    finally:
        consumer.close()


def _records_of_version(consumer: Consumer, starts: list[TopicPartition], ends: list[TopicPartition],
                        version: str) -> int:
    remaining = {tp.partition: end.offset for tp, end in zip(starts, ends) if end.offset > tp.offset}
    consumer.assign([tp for tp in starts if tp.partition in remaining])
    count = 0
    while remaining:
        messages = consumer.consume(500, timeout=10)
        if not messages:
            raise RuntimeError(f"the labelled topic ended before offsets {remaining}")
        for message in messages:
            if message.error() or message.partition() not in remaining \
                    or message.offset() >= remaining[message.partition()]:
                continue
            count += decode(LabelledRecord, message.value()).model_version == version
            if message.offset() + 1 >= remaining[message.partition()]:
                del remaining[message.partition()]
    return count


def _change_target(scenario: Scenario, change: Change) -> str:
    """A bad challenger's target is its rollback (the rollback table); labels 5,000 late,
    the comparison with and without the estimate (the late-label table)."""
    if scenario.train_command:
        return "- (see the rollback)"
    if scenario.actual_delay_seconds * scenario.rate >= LATE_LABEL_EVENTS:
        return "- (see labels late)"
    return "met" if change.target_met else "NOT met"


def _events(value: tuple[int, float] | None) -> str:
    return f"{value[0]:,} ev / {value[1]:.0f} s" if value else "not recovered"


def table(results: list[tuple[Scenario, Timeline]], rolled_back: dict[str, list[Rollback]]) -> str:
    lines = ["| scenario | change at | detection delay | recovered (<= 1.2x oracle) | vs pre-change baseline "
             "| oracle / baseline error | promotions | target |",
             "|---|---|---|---|---|---|---|---|"]
    for scenario, timeline in results:
        found = changes(scenario, timeline)
        if not found:
            c = counts(scenario, timeline)
            met = c["triggers"] == 0 and c["retrains"] == 0
            lines.append(f"| {scenario.name} ({scenario.events:,} events) | - | - | - | - | - | "
                         f"{c['promotions']} | {'met' if met else 'NOT met'} (0 triggers, 0 retrains) |")
        for change in found:
            lines.append(
                f"| {scenario.name} | {change.phase} @ {change.onset:,} | "
                f"{'-' if change.delay is None else f'{change.delay:,} ev'} | {_events(change.recovered)} | "
                f"{_events(change.recovered_vs_baseline)} | {change.oracle:.3f} / {change.baseline:.3f} | "
                f"{change.promotions} | {_change_target(scenario, change)} |")
    lines += ["", "| scenario | triggers | retrains started | promotions | rejected/failed | skipped | rollbacks "
              "| retrains on stationary data | max worker lag during retrains (messages) | wall time |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for scenario, timeline in results:
        c = counts(scenario, timeline)
        lines.append(f"| {scenario.name} | {c['triggers']} | {c['retrains']} | {c['promotions']} | "
                     f"{c['rejected/failed']} | {c['skipped']} | {c['rollbacks']} | {c['stationary retrains']} | "
                     f"{c['max lag in retrains']:,} | {timeline.seconds:.0f} s |")
    lines += ["", "| scenario | bad version promoted at | rolled back at | labelled events between: all / the bad "
              "version's | error: old champion / after the rollback | target |", "|---|---|---|---|---|---|"]
    for scenario, timeline in results:
        found = rolled_back[scenario.name]
        expected = bool(scenario.train_command)
        if not found:
            lines.append(f"| {scenario.name} | - | - | - | - | {'NOT met' if expected else 'met'} "
                         f"({'a rollback' if expected else '0 rollbacks'}) |")
        for r in found:
            met = expected and r.target_met and len(found) == 1
            lines.append(f"| {scenario.name} | version {r.version} @ {r.promoted_at:,} | {r.rolled_back_at:,} | "
                         f"{r.labelled:,} / {r.labelled_own:,} | {r.champion_error:.3f} / {r.error_after:.3f} | "
                         f"{'met' if met else 'NOT met'} |")
    return "\n".join(lines + late_label_table(results) + harmless_table(results))


def late_label_table(results: list[tuple[Scenario, Timeline]]) -> list[str]:
    """The late-label runs side by side: what the estimate changes."""
    late = [(s, t) for s, t in results if s.actual_delay_seconds * s.rate >= LATE_LABEL_EVENTS]
    if not late:
        return []
    lines = ["", f"| labels {LATE_LABEL_EVENTS:,} events late | retrains on | first trigger it retrains on "
             "| recovered (<= 1.2x oracle) | vs pre-change baseline | retrains | promotions | target |",
             "|---|---|---|---|---|---|---|---|"]
    label_only = next((changes(s, t)[0].recovered for s, t in late if s.retrain_on), None)
    for scenario, timeline in late:
        change = changes(scenario, timeline)[0]
        policy = policy_from(RetrainSettings(retrain_on=list(scenario.retrain_on)))
        acted = next(((_fired_at(r) - change.onset, r.decision) for _, r in timeline.triggers
                      if _fired_at(r) >= change.onset and policy.retrains_on(r.decision.trigger_types)), None)
        fired = f"+{acted[0]:,} ev {acted[1].severity} {'+'.join(acted[1].trigger_types)}" if acted else "-"
        acts_on = "the labels" if scenario.retrain_on else "every trigger, estimate " + (
            "on" if scenario.estimate else "off")
        c = counts(scenario, timeline)
        lines.append(f"| {scenario.name} | {acts_on} | {fired} | {_events(change.recovered)} | "
                     f"{_events(change.recovered_vs_baseline)} | {c['retrains']} | {c['promotions']} | "
                     f"{_late_target(scenario, change, label_only)} |")
    return lines


def _late_target(scenario: Scenario, change: Change, label_only: tuple[int, float] | None) -> str:
    """With the estimate: recovered no later than the run on the labels' evidence only."""
    if not scenario.estimate:
        return "- (the comparison)"
    met = change.recovered is not None and (label_only is None or change.recovered[0] <= label_only[0])
    return "met" if met else "NOT met"


def harmless_table(results: list[tuple[Scenario, Timeline]]) -> list[str]:
    """The harmless-drift runs side by side: with the estimate, no retrain (the target)."""
    harmless = [(s, t) for s, t in results if s.shifted_columns == (HARMLESS_COLUMN,)]
    if not harmless:
        return []
    lines = ["", "| harmless drift (x4, unused, moves 1.5 sd) | estimate | triggers by severity | retrains "
             "| error before / at the end | target |", "|---|---|---|---|---|---|"]
    for scenario, timeline in harmless:
        severities = Counter(r.decision.severity for _, r in timeline.triggers)
        by_severity = ", ".join(f"{n} {s}" for s, n in sorted(severities.items())) or "none"
        retrains = counts(scenario, timeline)["retrains"]
        onset = scenario.onsets[0][0]
        target = ("met" if retrains == 0 and set(severities) <= {"LOW"} else "NOT met") if scenario.estimate \
            else "- (no estimate: the design's rule)"
        lines.append(f"| {scenario.name} | {'on' if scenario.estimate else 'off'} | {by_severity} | {retrains} | "
                     f"{timeline.error_at(onset):.3f} / {timeline.error_at(scenario.events):.3f} | {target} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.loop", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter scenarios (2 minutes stationary)")
    parser.add_argument("--scenario", action="append", help="run only these (repeatable)")
    parser.add_argument("--stationary-minutes", type=float, default=30.0)
    args = parser.parse_args(argv)
    chosen = [s for s in scenarios(args.quick, args.stationary_minutes)
              if not args.scenario or s.name in args.scenario]
    results = []
    rolled_back: dict[str, list[Rollback]] = {}
    for scenario in chosen:
        print(f"bench.loop: {scenario.name}, {scenario.events:,} events at {scenario.rate:.0f}/s ...", flush=True)
        run = LoopRun(scenario, ROOT / ".driftline" / "bench-loop" / scenario.name, schema=f"bench_loop_{scenario.name}")
        results.append((scenario, run.run()))
        rolled_back[scenario.name] = rollbacks(results[-1][1], run.settings.kafka)
    print(f"\nbench.loop: the served model's error over the last {WINDOW} requests; "
          f"{'quick' if args.quick else 'full'} run\n")
    print(table(results, rolled_back))
    return 0


if __name__ == "__main__":
    sys.exit(main())
