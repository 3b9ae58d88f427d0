"""The design's batch entry points, on the streaming retrainer's code:

    RetrainingExecutor(project_root=".").execute_full_retraining_pipeline(
        reference_data=..., recent_data=..., recent_predictions=..., recent_actuals=...,
        current_metrics=...)

    driftline retrain --reference-data REF --recent-data RECENT
        [--recent-predictions P.npy --recent-actuals A.npy] [--r2 X --rmse Y --accuracy Z]

Both run the design's five steps and report each with a check mark or why it stopped.
A batch run is started by a person or a scheduler, so the cooldown and the concurrency
limit do not apply; the minimum severity and sample count do. When PostgreSQL cannot be
reached the retrain still completes (the model store is updated) and step 5 says, in
one line, that the row was not written; the command then exits with status 1, as it does
when the retrain fails. No drift, or a skip by the policy, exits with 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from detectors import AutomaticRetrainingOrchestrator, RetrainingTrigger
from retrain import datasets
from retrain.errors import DataPreparationError, RetrainError, UnknownModel
from retrain.job import RetrainJob
from retrain.model_store import ModelStore
from retrain.outcome import OutcomeRecord, Trigger
from retrain.policy import PolicyDecision, Verdict
from retrain.preparation import PreparedData
from retrain.repository import RetrainEventRepository
from schemas.tables import read_table
from schemas.errors import UsageError
from schemas.logs import configure_logging, redact_text
from schemas.settings import ModelSettings, Settings

STEPS = (
    "Detecting drift/degradation",
    "Preparing training data",
    "Executing model training",
    "Validating new model",
    "Logging results",
)
BATCH_MODEL_ID = "default"  # the model of a batch run when none is configured or named


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
    """The design's executor: detection, preparation, training, validation, logging."""

    def __init__(
        self,
        project_root: str | Path = ".",
        *,
        settings: Settings | None = None,
        model_id: str | None = None,
        report: Callable[[StepReport], None] | None = None,
    ) -> None:
        self.settings = settings or Settings.load()
        self.project_root = Path(project_root)
        self.model_id = model_id or (
            next(iter(self.settings.models)) if len(self.settings.models) == 1 else BATCH_MODEL_ID
        )
        if model_id is not None and model_id not in self.settings.models:
            raise UnknownModel(f"model {model_id!r} is not configured")
        self.model = self.settings.models.get(self.model_id) or ModelSettings(reference_path=self.project_root)
        store_root = self.settings.model_store_path
        self.store = ModelStore(
            store_root if store_root.is_absolute() else self.project_root / store_root,
            self.settings.retrain.keep_versions,
        )
        self.policy = datasets.policy_from(self.settings.retrain)
        self.report = report or (lambda step: None)

    # -- the design's steps, usable one by one --------------------------------------------
    def detect(
        self, reference_data, recent_data, recent_predictions=None, recent_actuals=None, current_metrics=None
    ) -> RetrainingTrigger:
        config = self.settings.detectors
        orchestrator = AutomaticRetrainingOrchestrator(
            data_drift_threshold=config.data_drift_threshold,
            performance_threshold=config.r2_threshold,
            min_samples_for_retraining=self.settings.retrain.min_recent_samples,
            config=config,
            baseline=self.model.baseline or None,
        )
        features = datasets.feature_columns(self.model, reference_data)
        return orchestrator.should_retrain(
            reference_data[features],
            recent_data[[c for c in features if c in recent_data]],
            recent_predictions,
            recent_actuals,
            current_metrics,
        )

    def prepare_training_data(
        self, reference_data: pd.DataFrame, recent_data: pd.DataFrame, recent_actuals: Any = None
    ) -> tuple[PolicyDecision, PreparedData | None]:
        """Historical (reference) plus recent rows; the recent target is the frame's target
        column or `recent_actuals`. (why not, None) when too few recent samples are valid."""
        target = self.model.actual_column
        recent = recent_data
        if target not in recent.columns:
            if recent_actuals is None:
                raise DataPreparationError(f"recent data has no {target!r} column and no recent actuals were given")
            recent = recent.assign(**{target: np.asarray(recent_actuals)})
        columns = datasets.feature_columns(self.model, reference_data)
        return datasets.prepare_for_training(
            self.model, self.settings.retrain, self.policy, reference_data, recent, columns
        )

    def execute_retraining(self, trigger: Trigger, prepared: PreparedData) -> OutcomeRecord:
        """Trains in a separate process, validates against the current model, promotes."""
        job = RetrainJob(trigger, self.model, self.settings.retrain, self.store, prepared, self.settings.detectors)
        job.start()
        return job.wait(self.settings.retrain.poll_timeout_seconds)

    def log_retraining_event(self, record: OutcomeRecord) -> str | None:
        """Writes the row; returns why not when PostgreSQL cannot be reached."""
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
    ) -> PipelineResult:
        result = PipelineResult()

        def step(number: int, ok: bool | None, detail: str = "") -> None:
            report = StepReport(number, ok, detail)
            result.steps.append(report)
            self.report(report)

        def stop_after(number: int) -> PipelineResult:
            for later in range(number + 1, len(STEPS) + 1):
                step(later, None, "not run")
            return result

        detected = result.trigger = self.detect(
            reference_data, recent_data, recent_predictions, recent_actuals, current_metrics
        )
        if not detected.triggered:
            step(1, True, f"no retraining needed: {detected.reason}")
            return stop_after(1)
        trigger = Trigger(
            trigger_id=f"batch-{uuid.uuid4().hex}",
            model_id=self.model_id,
            model_version=self.store.current_version(self.model_id) or "none",
            trigger_types=[str(getattr(t, "value", t)) for t in detected.drift_types],
            severity=detected.severity,
            reason=detected.reason,
            metrics={"metrics": detected.metrics, "confidence": detected.confidence, "root_cause": detected.root_cause},
            triggered_at=dt.datetime.now(dt.timezone.utc),
        )
        admitted = self.policy.admit(
            severity=trigger.severity, triggered_at=trigger.triggered_at, last_attempt_at=None, running=0
        )
        if admitted.verdict is not Verdict.RUN:
            step(1, False, admitted.reason)
            record = OutcomeRecord.skipped(trigger, admitted.reason)
            for number in (2, 3, 4):
                step(number, None, "not run")
            return self._log(result, record, step)
        step(1, True, f"{detected.severity}, {detected.reason}")

        try:
            decision, prepared = self.prepare_training_data(reference_data, recent_data, recent_actuals)
            record = None if prepared is not None else OutcomeRecord.skipped(trigger, decision.reason)
        except RetrainError as error:
            record = OutcomeRecord.failed(trigger, str(error), self.store.current_version(self.model_id))
        if record is not None:
            step(2, False, record.reason)
            for number in (3, 4):
                step(number, None, "not run")
            return self._log(result, record, step)
        counts = prepared.counts
        step(
            2,
            True,
            f"{counts['training_rows']} training rows, {counts['holdout_rows']} holdout rows, "
            f"{counts['invalid_dropped']} invalid and {counts['duplicates_dropped']} duplicate rows dropped",
        )

        record = result.outcome = self.execute_retraining(trigger, prepared)
        if record.outcome == "failed" and record.new_version is None:
            step(3, False, record.reason)
            step(4, None, "not run")
        else:
            step(3, True, f"version {record.new_version}")
            step(4, record.outcome != "failed", record.reason)
        return self._log(result, record, step)

    def _log(self, result: PipelineResult, record: OutcomeRecord, step: Callable[..., None]) -> PipelineResult:
        result.outcome = record
        error = self.log_retraining_event(record)
        result.logged = error is None
        step(5, result.logged, error or f"{record.outcome}, trigger {record.trigger.trigger_id}")
        return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference-data", type=Path, required=True, help="training data (CSV or Parquet)")
    parser.add_argument("--recent-data", type=Path, required=True, help="recent data (CSV or Parquet)")
    parser.add_argument("--recent-predictions", type=Path, help=".npy of recent predictions")
    parser.add_argument("--recent-actuals", type=Path, help=".npy of recent actuals")
    parser.add_argument("--r2", type=float)
    parser.add_argument("--rmse", type=float)
    parser.add_argument("--accuracy", type=float)
    parser.add_argument("--model", help="configured model to retrain (default: the only one)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    configure_logging(settings.log_level)

    def print_step(step: StepReport) -> None:
        print(step.line(), flush=True)

    try:
        executor = RetrainingExecutor(".", settings=settings, model_id=args.model, report=print_step)
    except UnknownModel as error:
        raise UsageError(str(error)) from error
    load = lambda path: np.load(path, allow_pickle=False) if path else None  # noqa: E731
    metrics = {k: v for k, v in (("r2", args.r2), ("rmse", args.rmse), ("accuracy", args.accuracy)) if v is not None}
    result = executor.execute_full_retraining_pipeline(
        reference_data=read_table(args.reference_data),
        recent_data=read_table(args.recent_data),
        recent_predictions=load(args.recent_predictions),
        recent_actuals=load(args.recent_actuals),
        current_metrics=metrics or None,
    )
    return 0 if result.succeeded else 1
