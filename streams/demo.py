"""`make demo`: the whole loop on a synthetic model, in about three minutes.

Starts the monitor worker and the retrainer, serves a model with a simulated inference
service, injects a covariate shift and then a change of concept, and shows each step as
it happens: drift detected (the design's banner), the trigger on `retrain-requests`, the
retrain validated and promoted, the monitor re-baselined, the error back to its
baseline. Ends with the design's queries on `model_retraining_events` (schema `demo`).
Everything of one run (topics, consumer groups, model store, schema) is its own, so runs
never see each other. Kafka and PostgreSQL must run (`make up` starts them).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psycopg
from confluent_kafka import Consumer
from psycopg import sql

from detectors import RetrainingTrigger, format_decision_banner
from retrain.models_cli import bootstrap
from schemas.messages import RetrainOutcome, RetrainRequest, decode
from schemas.migrate import apply_migrations
from schemas.settings import CONFIG_ENV_VAR, Settings
from streams.simulate import InferenceSimulator, Progress, Schedule
from streams.workload import Workload

MODEL = "demo"
SCHEMA = "demo"
ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".driftline" / "demo"
SCHEDULE = Schedule(rate=500, events=50_000, covariate_shift_at=10_000, concept_change_at=27_500)
STATUS_EVERY_EVENTS = 2_500
SETTLE_SECONDS = 45  # after the last event, for the last retrain to finish

RECENT = """SELECT
    triggered_at, severity, trigger_type, execution_attempted, execution_successful,
    retraining_model_version, improvement_r2_percent, improvement_rmse_percent, trigger_reason
FROM model_retraining_events
ORDER BY triggered_at"""


def say(text: str = "") -> None:
    print(text, flush=True)


def write_config(run_id: str) -> Path:
    WORK.mkdir(parents=True)
    Workload(seed=11).frame(4000).to_csv(WORK / "reference.csv", index=False)
    topics = {name: f"demo-{run_id}-{name}" for name in
              ("features", "predictions", "actuals", "labelled", "retrain-requests", "retrain-events", "dead-letters")}
    config = WORK / "driftline.toml"
    config.write_text(f"""\
model_store_path = "{WORK / 'models'}"

[kafka]
features_topic = "{topics['features']}"
predictions_topic = "{topics['predictions']}"
actuals_topic = "{topics['actuals']}"
labelled_topic = "{topics['labelled']}"
retrain_requests_topic = "{topics['retrain-requests']}"
retrain_events_topic = "{topics['retrain-events']}"
dead_letter_topic = "{topics['dead-letters']}"

[postgres]
db_schema = "{SCHEMA}"

[detectors]
cooldown = 3000

[monitor]
app_id = "driftline-demo-{run_id}"
partitions = 1
data_dir = "{WORK / 'worker'}"
join_ttl_seconds = 30

[retrain]
group_id = "driftline-demo-{run_id}-retrainer"
cooldown_seconds = 10
post_trigger_rows = 2000
post_trigger_wait_seconds = 30

[models.{MODEL}]
reference_path = "{WORK / 'reference.csv'}"
task = "regression"
""")
    return config


def fresh_schema(settings: Settings) -> None:
    with psycopg.connect(settings.postgres.dsn.get_secret_value(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        apply_migrations(conn, SCHEMA)


def start(command: str, config: Path) -> subprocess.Popen[bytes]:
    log = (WORK / f"{command}.log").open("wb")
    env = {**os.environ, CONFIG_ENV_VAR: str(config)}
    return subprocess.Popen([sys.executable, "-m", "streams.cli", command], stdout=log, stderr=log, env=env, cwd=ROOT)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class LoopWatcher(threading.Thread):
    """Prints triggers and retrain outcomes as they reach their topics."""

    def __init__(self, settings: Settings, progress: Progress, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.settings, self.progress, self.stop = settings, progress, stop
        self.outcomes: list[RetrainOutcome] = []
        self.triggers: list[RetrainRequest] = []

    def run(self) -> None:
        kafka = self.settings.kafka
        consumer = Consumer({**kafka.client_config(), "group.id": f"{self.settings.monitor.app_id}-demo-watch",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([kafka.retrain_requests_topic, kafka.retrain_events_topic])
        try:
            while not self.stop.is_set():
                message = consumer.poll(0.2)
                if message is None or message.error():
                    continue
                if message.topic() == kafka.retrain_requests_topic:
                    self.on_trigger(decode(RetrainRequest, message.value()))
                else:
                    self.on_outcome(decode(RetrainOutcome, message.value()))
        finally:
            consumer.close()

    def on_trigger(self, request: RetrainRequest) -> None:
        self.triggers.append(request)
        decision = request.decision
        say(f"\n[event {self.progress.events:>6}] drift detected on model {request.model_id} "
            f"(serving version {request.model_version}, {self.progress.phase} phase)")
        say(format_decision_banner(RetrainingTrigger(True, decision.reason, decision.severity, decision.confidence)))
        causes = ", ".join(f"{c.signal}:{c.column}" if c.column else c.signal for c in decision.root_cause[:4])
        say(f"root cause: {causes}")
        say(f"-> trigger {request.trigger_id} published on {self.settings.kafka.retrain_requests_topic}")

    def on_outcome(self, outcome: RetrainOutcome) -> None:
        self.outcomes.append(outcome)
        if outcome.outcome == "promoted":
            improvement = outcome.metrics.get("improvement_rmse_percent")
            detail = f", RMSE {improvement:+.1f}% against version {outcome.previous_version}" if improvement is not None else ""
            say(f"[event {self.progress.events:>6}] retrained, validated and promoted version "
                f"{outcome.new_version}{detail}; the monitor re-baselines on its reference")
        else:
            say(f"[event {self.progress.events:>6}] trigger {outcome.trigger_id}: {outcome.outcome} ({outcome.reason})")


def rebaselines(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("driftline_rebaselines_total{")))


def summary(settings: Settings) -> None:
    say("\nmodel_retraining_events (schema demo):")
    with psycopg.connect(settings.postgres.dsn.get_secret_value()) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(SCHEMA)))
        rows = conn.execute(RECENT).fetchall()
    say(f"  {'triggered_at':<19}  {'severity':<8}  {'trigger_type':<24} attempted ok    version  dR2%    dRMSE%  reason")
    for at, severity, kind, attempted, ok, version, r2, rmse, reason in rows:
        number = lambda v: f"{v:+7.1f}" if v is not None else "      -"  # noqa: E731
        say(f"  {at:%Y-%m-%d %H:%M:%S}  {severity:<8}  {kind:<24} {str(attempted):<9} {str(ok):<5} "
            f"{version or '-':<8} {number(r2)} {number(rmse)}  {(reason or '')[:60]}")


def main() -> int:
    began = time.monotonic()
    run_id = str(int(time.time()))
    shutil.rmtree(WORK, ignore_errors=True)
    config = write_config(run_id)
    settings = Settings.load(config)
    fresh_schema(settings)
    say(f"driftline demo: model '{MODEL}', a simulated inference service at {SCHEDULE.rate:.0f} requests/s;")
    say(f"covariate shift at event {SCHEDULE.covariate_shift_at}, change of concept at event "
        f"{SCHEDULE.concept_change_at}. Logs and settings in {WORK.relative_to(ROOT)}/.")
    version = bootstrap(settings, MODEL)
    say(f"trained version {version} on {WORK.relative_to(ROOT)}/reference.csv and promoted it")

    worker, retrainer = start("worker", config), start("retrainer", config)
    say(f"started the monitor (pid {worker.pid}, metrics http://127.0.0.1:{settings.monitor.metrics_port}/metrics) "
        f"and the retrainer (pid {retrainer.pid}, metrics http://127.0.0.1:{settings.retrain.metrics_port}/metrics)")
    stop_watching = threading.Event()
    simulator = InferenceSimulator(settings, MODEL, Workload(seed=11), SCHEDULE)
    watcher = LoopWatcher(settings, simulator.progress, stop_watching)
    watcher.start()
    baseline_mae = {"value": None}
    seen_rebaselines = {"count": 0}

    def on_tick(progress: Progress) -> None:
        if progress.events % STATUS_EVERY_EVENTS:
            return
        mae = progress.mae(1000)
        if baseline_mae["value"] is None:
            baseline_mae["value"] = mae
        count = rebaselines(settings.monitor.metrics_port)
        if count > seen_rebaselines["count"]:
            seen_rebaselines["count"] = count
            say(f"[event {progress.events:>6}] the monitor re-baselined ({count} so far)")
        say(f"[event {progress.events:>6}] {progress.phase:<10} serving version {progress.version}  "
            f"MAE of the last 1000: {mae:.3f} (baseline {baseline_mae['value']:.3f})")

    try:
        for process, name in ((worker, "worker"), (retrainer, "retrainer")):
            if process.poll() is not None:
                say(f"the {name} exited at start; see {WORK / (name + '.log')}")
                return 1
        simulator.run(threading.Event(), on_tick)
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline and len(watcher.outcomes) < len(watcher.triggers):
            time.sleep(0.5)
        promoted = [o for o in watcher.outcomes if o.outcome == "promoted"]
        final = simulator.progress
        say(f"\nserved {final.events} requests; {len(watcher.triggers)} trigger(s), {len(promoted)} promotion(s); "
            f"now serving version {final.version}, MAE of the last 1000: {final.mae(1000):.3f} "
            f"(baseline {baseline_mae['value']:.3f})")
        summary(settings)
    finally:
        stop_watching.set()
        stop(worker)
        stop(retrainer)
    say(f"\ndemo finished in {time.monotonic() - began:.0f} s; stopped the worker and the retrainer.")
    return 0 if promoted else 1


if __name__ == "__main__":
    sys.exit(main())
