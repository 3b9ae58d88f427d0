"""The design's batch entry points, on the streaming retrainer's code:

    RetrainingExecutor(project_root=".").execute_full_retraining_pipeline(
        reference_data=..., recent_data=..., recent_predictions=..., recent_actuals=...,
        current_metrics=..., baseline_metrics=...)

    driftline retrain --reference-data REF --recent-data RECENT
        [--target-column actual] [--prediction-column prediction]
        [--recent-predictions P.npy --recent-actuals A.npy]
        [--r2 X --rmse Y --accuracy Z] [--baseline-r2 X --baseline-rmse Y --baseline-accuracy Z]
        [--model ID] [--log-file retraining_executor.log]

Both run the design's five steps and report each with a check mark or why it stopped.
A batch run is started by a person or a scheduler, so the cooldown and the concurrency
limit do not apply; the minimum severity and sample count do. When PostgreSQL cannot be
reached the retrain still completes (the model store is updated) and step 5 says, in
one line, that the row was not written; the command then exits with status 1, as it does
when the retrain fails. No drift, or a skip by the policy, exits with 0.

The target column (`--target-column`, `target_column=`; default the model's
`actual_column`, "actual") is what the model is trained to predict: the reference must
hold it, and so must the recent data unless `--recent-actuals` gives it. It is never
monitored as a feature, nor is the prediction column.

Current metrics (`--r2/--rmse/--accuracy`, `current_metrics=`) are the serving model's
metrics now (default: computed from the recent predictions and actuals). Each is
compared with its baseline, the first known of: `--baseline-*` (`baseline_metrics=`),
the configured model's `baseline`, the model store's record of the serving version
(its validation metrics), the reference's own metrics when it holds predictions. A
current metric without a baseline is an error.

`driftline retrain` also writes a plain-text log, one line per step and per event, to
`retraining_executor.log` (the design's troubleshooting file; `--log-file`), beside
its JSON logs on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrain.errors import RetrainError, UnknownModel
from schemas.errors import UsageError
from schemas.options import (add_column_arguments, add_metric_arguments, baseline_from, current_from,
                             read_option, require_baselines)

if TYPE_CHECKING:  # the heavy modules load when the pipeline runs, not for --help
    from schemas.settings import Settings
    import pandas as pd

    from detectors import RetrainingTrigger
    from retrain.outcome import OutcomeRecord, Trigger
    from retrain.policy import PolicyDecision
    from retrain.preparation import PreparedData

STEPS = (
    "Detecting drift/degradation",
    "Preparing training data",
    "Executing model training",
    "Validating new model",
    "Logging results",
)
BATCH_MODEL_ID = "default"  # the model of a batch run when none is configured or named
LOGGER = "retrain.executor"


@dataclass
class StepReport:
    number: int
    ok: bool | None  # None: not run
    detail: str = ""

    def line(self) -> str:
        mark = {True: "✓", False: "✗", None: "–"}[self.ok]
        text = f"{self.number}. {mark} {STEPS[self.number - 1]}"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass
class PipelineResult:
    steps: list[StepReport] = field(default_factory=list)
    trigger: RetrainingTrigger | None = None
    outcome: OutcomeRecord | None = None
    logged: bool = False

    @property
    def succeeded(self) -> bool:
        """Nothing failed: no retrain failure and the row is written (a skip is fine)."""
        return self.outcome is None or (self.logged and self.outcome.outcome != "failed")


class RetrainingExecutor:
    """The design's executor: detection, preparation, training, validation, logging.

    ``target_column`` / ``prediction_column`` override the model's ``actual_column`` /
    ``prediction_column`` (default "actual" and "prediction")."""

    def __init__(
        self,
        project_root: str | Path = ".",
        *,
        settings: Settings | None = None,
        model_id: str | None = None,
        report: Callable[[StepReport], None] | None = None,
        target_column: str | None = None,
        prediction_column: str | None = None,
    ) -> None:
        from retrain import datasets
        from retrain.model_store import open_model_store
        from schemas.settings import ModelSettings, Settings

        self.settings = settings or Settings.load()
        self.project_root = Path(project_root)
        self.model_id = model_id or (
            next(iter(self.settings.models)) if len(self.settings.models) == 1 else BATCH_MODEL_ID
        )
        if model_id is not None and model_id not in self.settings.models:
            raise UnknownModel(f"model {model_id!r} is not configured")
        model = self.settings.models.get(self.model_id) or ModelSettings(reference_path=self.project_root)
        columns = {"actual_column": target_column, "prediction_column": prediction_column}
        self.model = model.model_copy(update={k: v for k, v in columns.items() if v})
        store_root = self.settings.model_store_path
        self.store = open_model_store(
            self.settings, store_root if store_root.is_absolute() else self.project_root / store_root
        )
        self.policy = datasets.policy_from(self.settings.retrain)
        self.report = report or (lambda step: None)

    @property
    def target_column(self) -> str:
        return self.model.actual_column

    # -- the design's steps, usable one by one --------------------------------------------
    def orchestrator(self, reference_data: pd.DataFrame, baseline_metrics: dict[str, float] | None = None):
        """The design's decision engine with the settings' thresholds, the model's columns
        and the baseline of :meth:`baseline`."""
        from detectors import AutomaticRetrainingOrchestrator
        from retrain import datasets

        config = self.settings.detectors
        return AutomaticRetrainingOrchestrator(
            data_drift_threshold=config.data_drift_threshold,
            performance_threshold=config.r2_threshold,
            min_samples_for_retraining=self.settings.retrain.min_recent_samples,
            config=config,
            baseline=self.baseline(baseline_metrics) or None,
            target_column=self.model.actual_column,
            prediction_column=self.model.prediction_column,
            feature_columns=datasets.feature_columns(self.model, reference_data),
        )

    def baseline(self, baseline_metrics: dict[str, float] | None = None) -> dict[str, float]:
        """The baseline given, else the configured one, else the model store's record of
        the serving version ({} when none: the reference's own metrics may serve)."""
        if baseline_metrics:
            return {k: float(v) for k, v in baseline_metrics.items() if v is not None}
        if self.model.baseline:
            return dict(self.model.baseline)
        version = self.store.current_version(self.model_id)
        if version is None:
            return {}
        try:
            scores = (self.store.metadata(self.model_id, version).get("validation") or {}).get("new") or {}
        except (OSError, ValueError):
            return {}
        return {k: float(v) for k, v in scores.items() if k in ("r2", "rmse", "accuracy") and v is not None}

    def detect(
        self, reference_data, recent_data, recent_predictions=None, recent_actuals=None, current_metrics=None,
        baseline_metrics=None,
    ) -> RetrainingTrigger:
        """The design's decision: ``current_metrics`` are the model's metrics now,
        compared with the baseline (see the module)."""
        from retrain.errors import DataPreparationError

        try:
            orchestrator = self.orchestrator(reference_data, baseline_metrics)
        except DataPreparationError as error:
            raise DataPreparationError(f"reference data: {error}") from None
        return orchestrator.should_retrain(
            reference_data, recent_data, recent_predictions, recent_actuals, current_metrics
        )

    def prepare_training_data(
        self, reference_data: pd.DataFrame, recent_data: pd.DataFrame, recent_actuals: Any = None
    ) -> tuple[PolicyDecision, PreparedData | None]:
        """Historical (reference) plus recent rows; the recent target is the frame's target
        column or `recent_actuals`. (why not, None) when too few recent samples are valid."""
        import numpy as np

        from retrain import datasets
        from retrain.errors import DataPreparationError

        target = self.model.actual_column
        if target not in reference_data.columns:
            raise DataPreparationError(
                f"the reference (training) data has no target column {target!r} (name it with --target-column / target_column=)"
            )
        recent = recent_data
        if target not in recent.columns:
            if recent_actuals is None:
                raise DataPreparationError(
                    f"recent data has no target column {target!r} and no recent actuals were given "
                    f"(name it with --target-column / target_column=, or give --recent-actuals)"
                )
            recent = recent.assign(**{target: np.asarray(recent_actuals)})
        columns = datasets.feature_columns(self.model, reference_data)
        return datasets.prepare_for_training(
            self.model, self.settings.retrain, self.policy, reference_data, recent, columns
        )

    def execute_retraining(self, trigger: Trigger, prepared: PreparedData) -> OutcomeRecord:
        """Trains in a separate process, validates against the current model, promotes."""
        from retrain.job import RetrainJob

        job = RetrainJob(trigger, self.model, self.settings.retrain, self.store, prepared, self.settings.detectors)
        job.start()
        return job.wait(self.settings.retrain.poll_timeout_seconds)

    def log_retraining_event(self, record: OutcomeRecord) -> str | None:
        """Writes the row; returns why not when PostgreSQL cannot be reached."""
        import psycopg

        from retrain.repository import RetrainEventRepository
        from schemas.logs import redact_text

        repository = RetrainEventRepository(
            self.settings.postgres.dsn.get_secret_value(),
            self.settings.postgres.db_schema,
            self.settings.retrain.db_connect_timeout_seconds,
        )
        try:
            repository.insert(record.row())
            return None
        except psycopg.Error as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            problem = "unreachable" if isinstance(error, psycopg.OperationalError) else "error"
            return redact_text(f"PostgreSQL {problem}, row not written ({first_line})")
        finally:
            repository.close()

    # -- the whole pipeline ------------------------------------------------------------------
    def execute_full_retraining_pipeline(
        self,
        reference_data: pd.DataFrame,
        recent_data: pd.DataFrame,
        recent_predictions: Any = None,
        recent_actuals: Any = None,
        current_metrics: dict[str, float] | None = None,
        baseline_metrics: dict[str, float] | None = None,
    ) -> PipelineResult:
        """The design's five steps. ``current_metrics`` are the model's metrics now,
        ``baseline_metrics`` what they are compared with (see the module)."""
        from schemas.logs import get_logger

        get_logger(LOGGER).info("retraining_pipeline_started", model=self.model_id,
                                target_column=self.model.actual_column,
                                reference_rows=len(reference_data), recent_rows=len(recent_data))
        result = PipelineResult()
        detected = result.trigger = self.detect(
            reference_data, recent_data, recent_predictions, recent_actuals, current_metrics, baseline_metrics
        )
        if not detected.triggered:  # nothing to record either
            self._step(result, 1, True, f"no retraining needed: {detected.reason}")
            self._not_run(result, 2, 3, 4, 5)
            return result
        trigger = self._batch_trigger(detected)
        record = self._admit_step(result, trigger)
        if record is not None:
            self._not_run(result, 2, 3, 4)
            return self._log_step(result, record)
        record, prepared = self._prepare_step(result, trigger, reference_data, recent_data, recent_actuals)
        if record is not None:
            self._not_run(result, 3, 4)
            return self._log_step(result, record)
        return self._log_step(result, self._train_and_validate_steps(result, trigger, prepared))

    def _step(self, result: PipelineResult, number: int, ok: bool | None, detail: str = "") -> None:
        """Reports a step in the result, in the log and to ``report``."""
        from schemas.logs import get_logger

        report = StepReport(number, ok, detail)
        result.steps.append(report)
        status = {True: "ok", False: "failed", None: "not_run"}[ok]
        log = get_logger(LOGGER)
        (log.warning if ok is False else log.info)(
            "retraining_step", step=number, status=status, name=STEPS[number - 1], detail=detail, line=report.line()
        )
        self.report(report)

    def _not_run(self, result: PipelineResult, *numbers: int) -> None:
        for number in numbers:
            self._step(result, number, None, "not run")

    def _batch_trigger(self, detected: RetrainingTrigger) -> Trigger:
        """The detection as the retrainer's trigger, with an id of its own."""
        from retrain.outcome import Trigger

        return Trigger(
            trigger_id=f"batch-{uuid.uuid4().hex}",
            model_id=self.model_id,
            model_version=self.store.current_version(self.model_id) or "none",
            trigger_types=[str(getattr(t, "value", t)) for t in detected.drift_types],
            severity=detected.severity,
            reason=detected.reason,
            metrics={"metrics": detected.metrics, "confidence": detected.confidence, "root_cause": detected.root_cause},
            triggered_at=dt.datetime.now(dt.timezone.utc),
        )

    def _admit_step(self, result: PipelineResult, trigger: Trigger) -> OutcomeRecord | None:
        """Step 1 for a detected drift: the policy's minimum severity may still skip it
        (the skip is recorded). A batch run has no cooldown nor concurrency limit, hence
        no last attempt and nothing running."""
        from retrain.outcome import OutcomeRecord
        from retrain.policy import Verdict

        admitted = self.policy.admit(
            severity=trigger.severity, triggered_at=trigger.triggered_at, last_attempt_at=None, running=0,
            trigger_types=trigger.trigger_types,
        )
        if admitted.verdict is not Verdict.RUN:
            self._step(result, 1, False, admitted.reason)
            return OutcomeRecord.skipped(trigger, admitted.reason)
        self._step(result, 1, True, f"{trigger.severity}, {trigger.reason}")
        return None

    def _prepare_step(
        self, result: PipelineResult, trigger: Trigger, reference_data: pd.DataFrame, recent_data: pd.DataFrame,
        recent_actuals: Any,
    ) -> tuple[OutcomeRecord | None, PreparedData | None]:
        """Step 2: (None, the training data), or (the outcome that ends the run, None)."""
        from retrain.outcome import OutcomeRecord

        try:
            decision, prepared = self.prepare_training_data(reference_data, recent_data, recent_actuals)
            record = None if prepared is not None else OutcomeRecord.skipped(trigger, decision.reason)
        except RetrainError as error:
            record = OutcomeRecord.failed(trigger, str(error), self.store.current_version(self.model_id))
        if record is not None:
            self._step(result, 2, False, record.reason)
            return record, None
        counts = prepared.counts
        self._step(
            result,
            2,
            True,
            f"{counts['training_rows']} training rows, {counts['holdout_rows']} holdout rows, "
            f"{counts['invalid_dropped']} invalid and {counts['duplicates_dropped']} duplicate rows dropped",
        )
        return None, prepared

    def _train_and_validate_steps(self, result: PipelineResult, trigger: Trigger, prepared: PreparedData) -> OutcomeRecord:
        """Steps 3 and 4: a failure without a new version is training's, any other validation's."""
        record = result.outcome = self.execute_retraining(trigger, prepared)
        if record.outcome == "failed" and record.new_version is None:
            self._step(result, 3, False, record.reason)
            self._step(result, 4, None, "not run")
        else:
            self._step(result, 3, True, f"version {record.new_version}")
            self._step(result, 4, record.outcome != "failed", record.reason)
        return record

    def _log_step(self, result: PipelineResult, record: OutcomeRecord) -> PipelineResult:
        """Step 5: the outcome's row in PostgreSQL."""
        from schemas.logs import get_logger

        result.outcome = record
        error = self.log_retraining_event(record)
        result.logged = error is None
        self._step(result, 5, result.logged, error or f"{record.outcome}, trigger {record.trigger.trigger_id}")
        get_logger(LOGGER).info(
            "retraining_pipeline_finished", outcome=record.outcome, trigger_id=record.trigger.trigger_id,
            severity=record.trigger.severity, new_version=record.new_version, logged=result.logged,
        )
        return result


# -- the command line -------------------------------------------------------------------------
DEFAULT_LOG_FILE = Path("retraining_executor.log")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference-data", type=Path, required=True,
                        help="training data (CSV or Parquet) with the target column")
    parser.add_argument("--recent-data", type=Path, required=True,
                        help="recent data (CSV or Parquet), with the target column unless --recent-actuals")
    add_column_arguments(parser)
    parser.add_argument("--recent-predictions", type=Path, help=".npy array of recent predictions")
    parser.add_argument("--recent-actuals", type=Path, help=".npy array of the matching actuals")
    add_metric_arguments(parser)
    parser.add_argument("--model", help="configured model to retrain (default: the only one)")
    parser.add_argument("--log-file", type=Path, default=DEFAULT_LOG_FILE, metavar="PATH",
                        help=f"plain-text log of the run, appended to (default: {DEFAULT_LOG_FILE})")


def add_text_log(path: Path) -> logging.Handler:
    """Appends every log line of this process to `path` as plain text (the design's
    `retraining_executor.log`), next to the JSON lines on stderr."""
    import structlog

    from schemas.logs import redact_text

    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--log-file {path}: cannot write ({exc.strerror})") from None

    def plain(_: Any, __: str, event: dict[str, Any]) -> str:
        when = event.pop("timestamp", "")
        level = str(event.pop("level", "info")).upper()
        name = event.pop("logger", "")
        line = event.pop("line", None)  # a step: its line says it all
        text = line or event.get("event", "")
        event.pop("event", None)
        rest = "" if line else " ".join(f"{k}={v}" for k, v in event.items())
        return redact_text(f"{when} {level:<7} {name}: {text}" + (f"  [{rest}]" if rest else ""))

    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                plain,
            ],
        )
    )
    logging.getLogger().addHandler(handler)
    return handler


def _check_inputs(args: argparse.Namespace, executor: RetrainingExecutor, reference, recent, predictions, actuals,
                  current: dict[str, float], baseline: dict[str, float]) -> None:
    """Every problem the pipeline would meet later, now, as one line naming the option."""
    from detectors import DetectorError
    from detectors.api import check_batch_inputs

    target, prediction = executor.model.actual_column, executor.model.prediction_column
    if target == prediction:
        raise UsageError(f"--target-column and --prediction-column are both {target!r}")
    if target not in reference.columns:
        raise UsageError(
            f"--reference-data {args.reference_data}: no target column {target!r} to train on "
            f"(name the target with --target-column)"
        )
    if target not in recent.columns and actuals is None:
        raise UsageError(
            f"--recent-data {args.recent_data}: no target column {target!r} "
            f"(name the target with --target-column, or give --recent-actuals)"
        )
    if (predictions is None) != (actuals is None):
        raise UsageError("--recent-predictions and --recent-actuals go together")
    if actuals is not None and len(predictions) != len(actuals):
        raise UsageError(
            f"--recent-predictions {args.recent_predictions} has {len(predictions)} values but "
            f"--recent-actuals {args.recent_actuals} has {len(actuals)}"
        )
    if actuals is not None and target not in recent.columns and len(actuals) != len(recent):
        raise UsageError(
            f"--recent-actuals {args.recent_actuals} has {len(actuals)} values but --recent-data "
            f"{args.recent_data} has {len(recent)} rows (they are its target)"
        )
    try:
        orchestrator = executor.orchestrator(reference, baseline or None)
        check_batch_inputs(reference, recent, orchestrator.features(reference),
                           reference_name=str(args.reference_data), recent_name=str(args.recent_data),
                           target_option="--target-column")
    except (DetectorError, RetrainError) as error:
        raise UsageError(str(error)) from None
    known, _ = orchestrator.baseline_for(reference)
    require_baselines(current, known, prediction, target)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.logs import configure_logging
    from schemas.tables import read_array, read_table

    configure_logging(settings.log_level, settings.log_repeats)

    def print_step(step: StepReport) -> None:
        print(step.line(), flush=True)

    try:
        executor = RetrainingExecutor(
            ".", settings=settings, model_id=args.model, report=print_step,
            target_column=args.target_column, prediction_column=args.prediction_column,
        )
    except UnknownModel as error:
        raise UsageError(f"--model: {error}") from error
    reference = read_option("--reference-data", args.reference_data, read_table)
    recent = read_option("--recent-data", args.recent_data, read_table)
    predictions = read_option("--recent-predictions", args.recent_predictions, read_array) if args.recent_predictions else None
    actuals = read_option("--recent-actuals", args.recent_actuals, read_array) if args.recent_actuals else None
    current, baseline = current_from(args), baseline_from(args)
    _check_inputs(args, executor, reference, recent, predictions, actuals, current, baseline)

    handler = add_text_log(args.log_file)
    try:
        result = executor.execute_full_retraining_pipeline(
            reference_data=reference,
            recent_data=recent,
            recent_predictions=predictions,
            recent_actuals=actuals,
            current_metrics=current or None,
            baseline_metrics=baseline or None,
        )
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    return 0 if result.succeeded else 1
