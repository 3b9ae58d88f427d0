"""The design document's scheduled batch path: DAG `automatic_model_retraining`.

Every 6 hours (``0 */6 * * *``, no catch-up, one run at a time)::

    analyze_retraining_need >> check_retraining_decision >> execute_retraining
                                        |                          |
                                        +--------------------------+--> log_retraining_completion

- analyze_retraining_need: reads the reference and recent files and makes the decision
  with ``RetrainingExecutor.detect`` (the detection step of ``driftline retrain``, the
  design's ``AutomaticRetrainingOrchestrator.should_retrain`` with the settings'
  thresholds); returns the decision as ``driftline check --json`` prints it.
- check_retraining_decision: the branch; ``execute_retraining`` when retraining is
  needed, else straight to ``log_retraining_completion`` (``execute_retraining`` is
  skipped).
- execute_retraining: ``RetrainingExecutor.execute_full_retraining_pipeline``, the code
  of ``driftline retrain``: prepares the data, trains in a separate process, validates,
  promotes, and writes the ``model_retraining_events`` row. Fails when the row could not
  be written or the retrain failed (the row then says why). Not retried: a batch trigger
  gets a fresh id, so a retry would be a second retrain.
- log_retraining_completion (trigger rule ``none_failed_min_one_success``: it runs after
  a retrain and after the skip, not after a failure): after a retrain it reads the row
  back from PostgreSQL and logs it; after the skip it logs the decision. "No drift" is
  not a retraining event, so it writes no row (the table counts triggers; a row every
  six hours would distort the design's trigger-frequency and success-rate queries); the
  task's return value (XCom) and log are the record of a run that found nothing.

Configuration, read when a task runs (never at parse time):

- DAG params (``airflow dags trigger -c '{...}'``, the trigger form in the UI), each
  falling back to the Airflow Variable ``driftline_<param>`` when left empty:
  ``reference_data``, ``recent_data``, ``recent_predictions``, ``recent_actuals``,
  ``target_column``/``prediction_column`` (never monitored as features; default the
  model's ``actual_column``/``prediction_column``), ``r2``/``rmse``/``accuracy`` (the
  model's *current* metrics, compared with a baseline) and ``baseline_r2``/
  ``baseline_rmse``/``baseline_accuracy`` (that baseline; else the model's configured
  baseline, the model store's record of the serving version, or the reference's own
  metrics when it holds predictions), ``model``, ``project_root`` (the
  model store is resolved against it), ``config_file`` (a driftline TOML file),
  ``db_schema``, and ``detectors`` / ``retrain`` (objects overriding fields of those
  settings sections: thresholds such as ``data_drift_threshold``, ``multiple_testing``,
  ``min_severity``, ``min_recent_samples``).
- Everything else, and the PostgreSQL DSN (a secret, so never a param), the way every
  driftline entry point reads it: ``DRIFTLINE_*`` environment variables of the worker
  (``DRIFTLINE_POSTGRES__DSN``) or the TOML file.

Bad input (a missing file, an invalid threshold) fails a task at once; other errors
(PostgreSQL unreachable) are retried once, five minutes later.

Only the standard library and ``airflow.sdk`` are imported here; numpy, pandas and
driftline are imported inside the task callables.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, task
from airflow.sdk.exceptions import AirflowFailException

DAG_ID = "automatic_model_retraining"
SCHEDULE = "0 */6 * * *"
VARIABLE_PREFIX = "driftline_"
log = logging.getLogger("driftline.airflow")

_TEXT = ["null", "string"]
_NUMBER = ["null", "number"]
PARAMS = {
    "reference_data": Param(None, type=_TEXT, description="training data, CSV or Parquet"),
    "recent_data": Param(None, type=_TEXT, description="recent data, CSV or Parquet (with the target column to retrain)"),
    "recent_predictions": Param(None, type=_TEXT, description=".npy of recent predictions"),
    "recent_actuals": Param(None, type=_TEXT, description=".npy of the matching actuals"),
    "target_column": Param(None, type=_TEXT, description="the target column, never monitored as a feature "
                           "(default: the model's actual_column, else 'actual')"),
    "prediction_column": Param(None, type=_TEXT, description="the prediction column, never monitored as a feature "
                               "(default: the model's prediction_column, else 'prediction')"),
    **{name: Param(None, type=_NUMBER, description=f"the model's current {label}, compared with its baseline "
                   f"(baseline_{name}, else the model's configured baseline, the model store's record of the serving "
                   f"version, or the reference's own {label} from its prediction and target columns); default: "
                   f"computed from recent_predictions and recent_actuals")
       for name, label in (("r2", "R2"), ("rmse", "RMSE"), ("accuracy", "accuracy"))},
    **{f"baseline_{name}": Param(None, type=_NUMBER, description=f"the model's baseline {label}, which the current "
                                 f"{label} ({name}) is compared with")
       for name, label in (("r2", "R2"), ("rmse", "RMSE"), ("accuracy", "accuracy"))},
    "model": Param(None, type=_TEXT, description="configured model id (default: the only one)"),
    "project_root": Param(None, type=_TEXT, description="folder the model store path is relative to"),
    "config_file": Param(None, type=_TEXT, description="driftline TOML settings file"),
    "db_schema": Param(None, type=_TEXT, description="PostgreSQL schema of model_retraining_events"),
    "detectors": Param({}, type="object", description="overrides of the detectors settings (thresholds)"),
    "retrain": Param({}, type="object", description="overrides of the retrain settings"),
}
REQUIRED = ("reference_data", "recent_data")


# -- helpers, called inside the tasks ---------------------------------------------------------
def _param(params: dict[str, Any], name: str) -> Any:
    """The DAG param, else the Airflow Variable driftline_<name>, else None."""
    value = params.get(name)
    if value in (None, "", {}):
        from airflow.sdk import Variable

        value = Variable.get(VARIABLE_PREFIX + name, default=None, deserialize_json=name in ("detectors", "retrain"))
    if value in (None, "") and name in REQUIRED:
        raise ValueError(f"set the DAG param {name!r} or the Airflow Variable {VARIABLE_PREFIX + name!r}")
    return value


def _settings(params: dict[str, Any]):
    """driftline's Settings: environment and TOML file as for every entry point, then the
    params on top."""
    from schemas.settings import Settings

    overrides: dict[str, Any] = {}
    for section in ("detectors", "retrain"):
        if fields := _param(params, section):
            overrides[section] = dict(fields)
    if schema := _param(params, "db_schema"):
        overrides["postgres"] = {"db_schema": schema}
    return Settings.load(_param(params, "config_file"), **overrides)


def _executor(params: dict[str, Any], report=None):
    """The design's batch executor, the one `driftline retrain` runs."""
    from retrain import RetrainingExecutor

    return RetrainingExecutor(
        _param(params, "project_root") or ".", settings=_settings(params), model_id=_param(params, "model"),
        report=report, target_column=_param(params, "target_column"),
        prediction_column=_param(params, "prediction_column"),
    )


def _inputs(params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the design's batch API, read from the files."""
    from schemas.tables import read_array, read_table

    predictions, actuals = _param(params, "recent_predictions"), _param(params, "recent_actuals")
    if (predictions is None) != (actuals is None):
        raise ValueError("recent_predictions and recent_actuals go together")
    metrics = {k: float(v) for k in ("r2", "rmse", "accuracy") if (v := _param(params, k)) is not None}
    baseline = {k: float(v) for k in ("r2", "rmse", "accuracy") if (v := _param(params, f"baseline_{k}")) is not None}
    return {
        "reference_data": read_table(_param(params, "reference_data")),
        "recent_data": read_table(_param(params, "recent_data")),
        "recent_predictions": read_array(predictions) if predictions else None,
        "recent_actuals": read_array(actuals) if actuals else None,
        "current_metrics": metrics or None,
        "baseline_metrics": baseline or None,
    }


@contextlib.contextmanager
def _failing_without_retry_on_bad_input() -> Iterator[None]:
    """A missing file, a bad param or an invalid setting will not mend on a retry."""
    from pydantic import ValidationError

    from detectors import DetectorError
    from retrain.errors import RetrainError
    from schemas.errors import UsageError

    try:
        yield
    except (UsageError, DetectorError, RetrainError, ValidationError, ValueError, FileNotFoundError) as error:
        raise AirflowFailException(f"{type(error).__name__}: {error}") from error


def _jsonable(document: dict[str, Any]) -> dict[str, Any]:
    """numpy values, NaN and infinities made plain JSON, as `driftline check --json` does."""
    import json

    import orjson

    return json.loads(orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))


# -- the DAG ----------------------------------------------------------------------------------
with DAG(
    dag_id=DAG_ID,
    description="driftline: check drift on files every 6 hours and retrain when needed",
    schedule=SCHEDULE,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=2),
    params=PARAMS,
    default_args={"owner": "driftline", "retries": 1, "retry_delay": dt.timedelta(minutes=5)},
    tags=["driftline", "retraining"],
    doc_md=__doc__,
) as dag:

    @task(task_id="analyze_retraining_need", execution_timeout=dt.timedelta(minutes=30))
    def analyze_retraining_need(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The decision on the files, as `driftline check --json` prints it."""
        from detectors import format_decision_banner
        from streams.batch_check import trigger_document

        params = params or {}
        with _failing_without_retry_on_bad_input():
            trigger = _executor(params).detect(**_inputs(params))
        log.info("%s", format_decision_banner(trigger))
        return _jsonable(trigger_document(trigger))

    @task.branch(task_id="check_retraining_decision")
    def check_retraining_decision(ti=None) -> str:
        decision = ti.xcom_pull(task_ids="analyze_retraining_need")
        if decision["triggered"]:
            log.info("retraining needed: %s, %s", decision["severity"], decision["reason"])
            return "execute_retraining"
        log.info("no retraining: %s", decision["reason"])
        return "log_retraining_completion"

    @task(task_id="execute_retraining", retries=0, execution_timeout=dt.timedelta(hours=1))
    def execute_retraining(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """`driftline retrain` on the same files: prepare, train, validate, promote, log."""
        params = params or {}
        lines: list[str] = []

        def report(step) -> None:
            lines.append(step.line())
            log.info("%s", step.line())

        with _failing_without_retry_on_bad_input():
            executor, inputs = _executor(params, report=report), _inputs(params)
        result = executor.execute_full_retraining_pipeline(**inputs)
        record = result.outcome
        summary = {
            "steps": lines,
            "logged": result.logged,
            "outcome": record.outcome if record else "not_triggered",
            "reason": record.reason if record else result.steps[0].detail,
            "trigger_id": record.trigger.trigger_id if record else None,
            "severity": record.trigger.severity if record else None,
            "previous_version": record.previous_version if record else None,
            "new_version": record.new_version if record else None,
        }
        if not result.succeeded:  # as `driftline retrain` exits 1: a failed retrain or no row
            raise RuntimeError("retraining pipeline failed:\n" + "\n".join(lines))
        return _jsonable(summary)

    @task(task_id="log_retraining_completion", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def log_retraining_completion(params: dict[str, Any] | None = None, ti=None) -> dict[str, Any]:
        """After a retrain: the row, read back. After the skip: the no-retrain outcome."""
        decision = ti.xcom_pull(task_ids="analyze_retraining_need")
        executed = ti.xcom_pull(task_ids="execute_retraining")
        if executed is None:
            summary = {"retrained": False, "promoted": False, "outcome": "no_retraining_needed", "reason": decision["reason"],
                       "severity": decision["severity"], "confidence": decision["confidence"]}
            log.info("retraining completion: not needed (%s)", decision["reason"])
            return summary
        summary = {"retrained": executed["outcome"] in ("promoted", "rejected"),
                   "promoted": executed["outcome"] == "promoted", **executed}
        if executed["trigger_id"] is not None:
            from retrain.repository import RetrainEventRepository

            settings = _settings(params or {})
            repository = RetrainEventRepository(
                settings.postgres.dsn.get_secret_value(), settings.postgres.db_schema,
                settings.retrain.db_connect_timeout_seconds,
            )
            try:
                row = repository.find(executed["trigger_id"])
            finally:
                repository.close()
            if row is None:
                raise RuntimeError(f"no model_retraining_events row for trigger {executed['trigger_id']}")
            summary.update(event_id=row["id"], execution_successful=row["execution_successful"],
                           retraining_model_version=row["retraining_model_version"])
        log.info("retraining completion: %s", summary)
        return _jsonable(summary)

    decided = check_retraining_decision()
    executed = execute_retraining()
    completed = log_retraining_completion()
    analyze_retraining_need() >> decided >> [executed, completed]
    executed >> completed
