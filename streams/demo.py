"""`make demo`: the whole loop on a synthetic model, in under three minutes.

Starts the monitor worker and the retrainer, serves a model with a simulated inference
service, injects a covariate shift and then a change of concept, and shows each step as
it happens: drift detected (the design's banner), the trigger on `retrain-requests`, the
retrain validated and promoted, the monitor re-baselined, the error back to its
baseline. Ends with a recovery timeline and the design's queries on
`model_retraining_events` (schema `demo`).

`LoopRun` is the loop itself, on topics, consumer groups, a model store and a schema of
its own (runs never see each other); `bench.loop` drives it through its scenarios.
Kafka and PostgreSQL must run (`make up` starts them).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from detectors import RetrainingTrigger, format_decision_banner
from retrain.models_cli import bootstrap
from schemas.messages import RetrainOutcome, RetrainRequest, decode
from schemas.migrate import apply_migrations
from schemas.settings import CONFIG_ENV_VAR, Settings
from streams.simulate import InferenceSimulator, Progress, Schedule
from streams.topics import ensure_monitor_topics
from streams.workload import FEATURES, Task, Workload

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 1000  # events of the served model's windowed error
RECOVERY_FACTOR = 1.2  # "recovered": windowed error within this factor of the yardstick
STATUS_EVERY_EVENTS = 2_500
SETTLE_SECONDS = 60  # after the last event, for the last retrain to finish
TICKS_PER_LAG_SAMPLE = 5
REFERENCE_ROWS = 4000
SCORED_SEED = 4242  # the scored reference's rows: not the training rows
SCORE_COLUMN = "score"


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass(frozen=True)
class Scenario:
    name: str
    events: int
    covariate_shift_at: int | None = None
    concept_change_at: int | None = None
    task: Task = "regression"
    rate: float = 500.0
    seed: int = 11
    # The model's train_command, "{work}" standing for the run's folder (default: the
    # built-in trainer), e.g. bench/bad_challenger.py.
    train_command: tuple[str, ...] = ()
    actual_delay_seconds: float = 1.0  # how late each label comes
    # The monitor's reference: the training rows (False), or fresh rows with version 1's
    # predictions, and a classifier's scores (True), as a team profiles a model it serves.
    scored_reference: bool = False
    estimate: bool = False  # the performance estimated before labels (DLE; CBPE needs scored_reference)
    shifted_columns: tuple[int, ...] = (0, 1)  # what the covariate shift moves (streams.workload)
    retrain_on: tuple[str, ...] = ()  # the retrainer's `retrain_on`: the trigger types it acts on

    @property
    def workload(self) -> Workload:
        return Workload(task=self.task, seed=self.seed, shifted=self.shifted_columns)

    @property
    def schedule(self) -> Schedule:
        return Schedule(rate=self.rate, events=self.events, covariate_shift_at=self.covariate_shift_at,
                        concept_change_at=self.concept_change_at, actual_delay_seconds=self.actual_delay_seconds)

    @property
    def onsets(self) -> list[tuple[int, str]]:
        """(event, phase from then on) of each change, in order."""
        changes = sorted(e for e in (self.covariate_shift_at, self.concept_change_at) if e is not None)
        return [(event, self.schedule.phase(event)) for event in changes]


@dataclass
class Tick:
    events: int
    seconds: float
    error: float  # windowed: MAE, or the error rate of a classifier
    version: str | None
    worker_lag: float | None  # sum over the worker's input partitions; None: not sampled


@dataclass
class Timeline:
    """What a run saw, in the simulator's event count at the time it saw it."""

    ticks: list[Tick] = field(default_factory=list)
    triggers: list[tuple[int, RetrainRequest]] = field(default_factory=list)
    outcomes: list[tuple[int, RetrainOutcome]] = field(default_factory=list)
    seconds: float = 0.0

    def error_at(self, events: int) -> float:
        """The windowed error of the last tick at or before `events`."""
        before = [t.error for t in self.ticks if t.events <= events]
        return before[-1] if before else math.nan

    def seconds_at(self, events: int) -> float:
        """Seconds from the run's start to the first tick at or after `events`."""
        return next((t.seconds for t in self.ticks if t.events >= events), math.nan)

    def recovery(self, onset: int, yardstick: float, end: int | None = None) -> Tick | None:
        """The first tick whose window is wholly after `onset` (and before `end`) with an
        error within RECOVERY_FACTOR of `yardstick`."""
        for tick in self.ticks:
            if tick.events >= onset + WINDOW and (end is None or tick.events <= end) \
                    and tick.error <= RECOVERY_FACTOR * yardstick:
                return tick
        return None


class LoopRun:
    """The worker, the retrainer and the simulated inference service of one scenario."""

    def __init__(self, scenario: Scenario, work: Path, *, schema: str, verbose: bool = False,
                 monitor: dict[str, object] | None = None) -> None:
        """`monitor`: more settings of the worker's `[monitor]` section."""
        self.scenario, self.work, self.schema, self.verbose = scenario, work, schema, verbose
        self.monitor = monitor or {}
        self.model = scenario.name.replace("_", "-")
        self.timeline = Timeline()
        self._lock = threading.Lock()

    # -- set-up ------------------------------------------------------------------------
    def write_config(self) -> Path:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        training = self.scenario.workload.frame(REFERENCE_ROWS)
        training.to_csv(self.work / "training.csv", index=False)
        training.to_csv(self.work / "reference.csv", index=False)  # scored_reference: replaced once version 1 exists
        train_command = [part.replace("{work}", str(self.work)) for part in self.scenario.train_command]
        trainer = f"train_command = {json.dumps(train_command)}\n" if train_command else ""
        scored_classifier = self.scenario.scored_reference and self.scenario.task == "classification"
        score_column = f'score_column = "{SCORE_COLUMN}"\n' if scored_classifier else ""
        run_id = f"{self.schema}-{time.time_ns()}"
        self.worker_port = _free_port()
        topics = {name: f"{run_id}-{name}" for name in
                  ("features", "predictions", "actuals", "labelled", "retrain-requests", "retrain-events",
                   "dead-letters")}
        more_monitor = "".join(f"{key} = {json.dumps(value)}\n" for key, value in self.monitor.items())
        config = self.work / "driftline.toml"
        config.write_text(f"""\
model_store_path = "{self.work / 'models'}"

[mlflow]
tracking_uri = "sqlite:///{self.work / 'mlflow.db'}"

[kafka]
features_topic = "{topics['features']}"
predictions_topic = "{topics['predictions']}"
actuals_topic = "{topics['actuals']}"
labelled_topic = "{topics['labelled']}"
retrain_requests_topic = "{topics['retrain-requests']}"
retrain_events_topic = "{topics['retrain-events']}"
dead_letter_topic = "{topics['dead-letters']}"

[postgres]
db_schema = "{self.schema}"

[detectors]
cooldown = 3000
loss_estimator = {str(self.scenario.estimate).lower()}

[monitor]
app_id = "{run_id}"
partitions = 1
metrics_port = {self.worker_port}
data_dir = "{self.work / 'worker'}"
join_ttl_seconds = 30
{more_monitor}
[retrain]
group_id = "{run_id}-retrainer"
metrics_port = {_free_port()}
cooldown_seconds = 10
post_trigger_rows = 1500
post_trigger_wait_seconds = 30
retrain_on = {list(self.scenario.retrain_on)!r}

[models.{self.model}]
reference_path = "{self.work / 'reference.csv'}"
training_data_path = "{self.work / 'training.csv'}"
task = "{self.scenario.task}"
{score_column}{trainer}""")
        return config

    def write_scored_reference(self, settings: Settings) -> None:
        """Fresh rows of the stationary phase with version 1's predictions (and, for a
        classifier, its positive class's probability): the monitor's reference."""
        from retrain.model_store import open_model_store

        store = open_model_store(settings)
        served = store.load_model(self.model, store.current_version(self.model))
        frame = self.scenario.workload.frame(REFERENCE_ROWS, seed=SCORED_SEED)
        features = frame[list(FEATURES)]
        frame["prediction"] = served.predict(features)
        if self.scenario.task == "classification":
            frame[SCORE_COLUMN] = served.predict_proba(features)[:, -1]
        frame.to_csv(self.work / "reference.csv", index=False)

    def fresh_schema(self, settings: Settings) -> None:
        with psycopg.connect(settings.postgres.dsn.get_secret_value(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
            apply_migrations(conn, self.schema)

    def start(self, command: str, config: Path) -> subprocess.Popen[bytes]:
        log = (self.work / f"{command}.log").open("wb")
        env = {**os.environ, CONFIG_ENV_VAR: str(config)}
        return subprocess.Popen([sys.executable, "-m", "streams.cli", command], stdout=log, stderr=log,
                                env=env, cwd=ROOT)

    # -- the run -----------------------------------------------------------------------
    def run(self, *, on_trigger: Callable[[int, RetrainRequest], None] | None = None,
            on_outcome: Callable[[int, RetrainOutcome], None] | None = None,
            on_tick: Callable[[Progress], None] | None = None) -> Timeline:
        config = self.write_config()
        self.settings = settings = Settings.load(config)
        self.fresh_schema(settings)
        ensure_monitor_topics(settings.kafka, settings.monitor)  # the broker creates none
        bootstrap(settings, self.model)
        if self.scenario.scored_reference:
            self.write_scored_reference(settings)
        worker, retrainer = self.start("worker", config), self.start("retrainer", config)
        began = time.monotonic()
        simulator = InferenceSimulator(settings, self.model, self.scenario.workload,
                                       self.scenario.schedule)
        stop_watching = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(simulator.progress, stop_watching, on_trigger, on_outcome),
                                   daemon=True)
        watcher.start()
        ticks = 0

        def tick(progress: Progress) -> None:
            nonlocal ticks
            ticks += 1
            lag = self._worker_lag() if ticks % TICKS_PER_LAG_SAMPLE == 0 else None
            self.timeline.ticks.append(Tick(progress.events, time.monotonic() - began, progress.mae(WINDOW),
                                            progress.version, lag))
            for process, name in ((worker, "worker"), (retrainer, "retrainer")):
                if process.poll() is not None:
                    raise RuntimeError(f"the {name} exited with {process.returncode}; see {self.work / (name + '.log')}")
            if on_tick is not None:
                on_tick(progress)

        try:
            simulator.run(threading.Event(), tick)
            deadline = time.monotonic() + SETTLE_SECONDS
            # the worker's last events and the retrainer's last outcome (external processes)
            while time.monotonic() < deadline and (not self._worker_caught_up() or self._open_triggers()):
                time.sleep(0.5)
        finally:
            stop_watching.set()
            watcher.join(timeout=5)
            for process in (worker, retrainer):
                _stop(process)
        self.timeline.seconds = time.monotonic() - began
        return self.timeline

    def _worker_caught_up(self) -> bool:
        """Whether the join has committed every prediction and actual, and the monitor
        every feature event and labelled record (committed offsets at the high watermarks)."""
        kafka, monitor = self.settings.kafka, self.settings.monitor
        return (_committed_to_end(kafka, monitor.app_id, (kafka.predictions_topic, kafka.actuals_topic))
                and _committed_to_end(kafka, monitor.monitor_group_id, (kafka.features_topic, kafka.labelled_topic)))

    def _open_triggers(self) -> bool:
        with self._lock:
            answered = {o.trigger_id for _, o in self.timeline.outcomes}
            return any(r.trigger_id not in answered for _, r in self.timeline.triggers)

    def _watch(self, progress: Progress, stop: threading.Event, on_trigger, on_outcome) -> None:
        kafka = self.settings.kafka
        consumer = Consumer({**kafka.client_config(), "group.id": f"{self.settings.monitor.app_id}-watch",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([kafka.retrain_requests_topic, kafka.retrain_events_topic])
        try:
            while not stop.is_set():
                message = consumer.poll(0.2)
                if message is None or message.error():
                    continue
                at = progress.events
                if message.topic() == kafka.retrain_requests_topic:
                    request = decode(RetrainRequest, message.value())
                    with self._lock:
                        self.timeline.triggers.append((at, request))
                    if on_trigger:
                        on_trigger(at, request)
                else:
                    outcome = decode(RetrainOutcome, message.value())
                    with self._lock:
                        self.timeline.outcomes.append((at, outcome))
                    if on_outcome:
                        on_outcome(at, outcome)
        finally:
            consumer.close()

    def _worker_lag(self) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.worker_port}/metrics", timeout=1) as response:
                text = response.read().decode()
        except OSError:
            return None
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("driftline_consumer_lag_messages{"))


def _committed_to_end(kafka, group: str, topics: tuple[str, ...]) -> bool:
    consumer = Consumer({**kafka.client_config(), "group.id": group, "enable.auto.commit": False})
    try:
        for topic in topics:
            partitions = [TopicPartition(topic, p) for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions]
            committed = consumer.committed(partitions, timeout=10)
            if any(done.offset < consumer.get_watermark_offsets(tp, timeout=10)[1]
                   for done, tp in zip(committed, partitions)):
                return False
        return True
    finally:
        consumer.close()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the demo --------------------------------------------------------------------------
DEMO = Scenario("demo", events=40_000, covariate_shift_at=8_000, concept_change_at=22_000)
SCHEMA = "demo"


def summary(settings: Settings) -> None:
    say("\nmodel_retraining_events (schema demo):")
    with psycopg.connect(settings.postgres.dsn.get_secret_value()) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(SCHEMA)))
        rows = conn.execute("""SELECT triggered_at, severity, trigger_type, execution_attempted,
            execution_successful, retraining_model_version, improvement_r2_percent,
            improvement_rmse_percent, trigger_reason FROM model_retraining_events
            ORDER BY triggered_at""").fetchall()
    say(f"  {'triggered_at':<19}  {'severity':<8}  {'trigger_type':<24} attempted ok    version  dR2%    dRMSE%  reason")
    for at, severity, kind, attempted, ok, version, r2, rmse, reason in rows:
        number = lambda v: f"{v:+7.1f}" if v is not None else "      -"  # noqa: E731
        say(f"  {at:%Y-%m-%d %H:%M:%S}  {severity:<8}  {kind:<24} {str(attempted):<9} {str(ok):<5} "
            f"{version or '-':<8} {number(r2)} {number(rmse)}  {(reason or '')[:60]}")


def recovery_lines(scenario: Scenario, timeline: Timeline, baseline: float) -> list[str]:
    """Per change: when the served model's error came back within RECOVERY_FACTOR of the
    pre-change baseline, and on which version."""
    lines = []
    onsets = scenario.onsets
    for i, (onset, phase) in enumerate(onsets):
        end = onsets[i + 1][0] if i + 1 < len(onsets) else None
        worst = max((t.error for t in timeline.ticks if t.events >= onset and (end is None or t.events <= end)),
                    default=math.nan)
        back = timeline.recovery(onset, baseline, end)
        where = (f"back within {RECOVERY_FACTOR}x at event {back.events} ({back.events - onset} events, "
                 f"{back.seconds - timeline.seconds_at(onset):.0f} s after the change), version {back.version}"
                 if back else "not back within the run")
        lines.append(f"  {phase:<18} at event {onset:>6}: error rose to {worst:.3f}; {where}")
    return lines


def main() -> int:
    began = time.monotonic()
    work = ROOT / ".driftline" / "demo"
    run = LoopRun(DEMO, work, schema=SCHEMA, verbose=True)
    say(f"driftline demo: model '{run.model}', a simulated inference service at {DEMO.rate:.0f} requests/s;")
    say(f"covariate shift at event {DEMO.covariate_shift_at}, change of concept at event "
        f"{DEMO.concept_change_at}. Logs and settings in {work.relative_to(ROOT)}/.")
    progress_of: dict[str, Progress] = {}
    baseline = {"value": math.nan}

    def on_trigger(at: int, request: RetrainRequest) -> None:
        decision = request.decision
        phase = DEMO.schedule.phase(at)
        say(f"\n[event {at:>6}] drift detected on model {request.model_id} "
            f"(serving version {request.model_version}, {phase} phase)")
        say(format_decision_banner(RetrainingTrigger(True, decision.reason, decision.severity, decision.confidence)))
        causes = ", ".join(f"{c.signal}:{c.column}" if c.column else c.signal for c in decision.root_cause[:4])
        say(f"root cause: {causes}")
        say(f"-> trigger {request.trigger_id} published on retrain-requests")

    def on_outcome(at: int, outcome: RetrainOutcome) -> None:
        if outcome.outcome == "promoted":
            improvement = outcome.metrics.get("improvement_rmse_percent")
            detail = (f", RMSE {improvement:+.1f}% against version {outcome.previous_version}"
                      if improvement is not None else "")
            say(f"[event {at:>6}] retrained, validated and promoted version {outcome.new_version}{detail}; "
                f"the monitor re-baselines on its reference")
        else:
            say(f"[event {at:>6}] trigger {outcome.trigger_id}: {outcome.outcome} ({outcome.reason})")

    def on_tick(progress: Progress) -> None:
        progress_of["last"] = progress
        if progress.events % STATUS_EVERY_EVENTS:
            return
        mae = progress.mae(WINDOW)
        if math.isnan(baseline["value"]) and progress.events >= WINDOW:
            baseline["value"] = mae
        say(f"[event {progress.events:>6}] {progress.phase:<18} serving version {progress.version}  "
            f"MAE of the last {WINDOW}: {mae:.3f} (baseline {baseline['value']:.3f})")

    try:
        timeline = run.run(on_trigger=on_trigger, on_outcome=on_outcome, on_tick=on_tick)
    except RuntimeError as error:
        say(str(error))
        return 1
    final = progress_of["last"]
    promoted = [o for _, o in timeline.outcomes if o.outcome == "promoted"]
    say("\nrecovery timeline (served model's MAE over the last "
        f"{WINDOW} requests against the baseline {baseline['value']:.3f}):")
    for line in recovery_lines(DEMO, timeline, baseline["value"]):
        say(line)
    say(f"\nserved {final.events} requests; {len(timeline.triggers)} trigger(s), {len(promoted)} promotion(s); "
        f"now serving version {final.version}, MAE of the last {WINDOW}: {final.mae(WINDOW):.3f} "
        f"(baseline {baseline['value']:.3f})")
    summary(run.settings)
    if run.settings.model_store == "mlflow":
        uri = run.settings.mlflow.tracking_uri
        say(f"\nmodels in MLflow at {uri}: registered model '{run.model}', alias champion = version "
            f"{final.version}, a run per retrain in experiment '{run.settings.mlflow.experiment}'. "
            f"To browse them: pip install mlflow; mlflow ui --backend-store-uri {uri}")
    say(f"\ndemo finished in {time.monotonic() - began:.0f} s; stopped the worker and the retrainer.")
    return 0 if promoted else 1


if __name__ == "__main__":
    sys.exit(main())
