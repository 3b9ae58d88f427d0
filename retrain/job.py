"""One attempted retrain, from prepared data to a stored, validated and maybe promoted
version. The consumer polls it between Kafka polls; the batch API waits for it.

After a crash a trigger is processed again: the version it already produced is found
in the store by its trigger_id and reused, so one trigger never promotes twice.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from detectors import DetectorConfig, ReferenceProfile
from retrain import validation
from retrain.model_store import ModelStore
from retrain.outcome import OutcomeRecord, Trigger
from retrain.preparation import PreparedData
from schemas.tables import write_table
from retrain.launch import digest_path, sha256_of
from retrain.training_process import (
    FinishedTraining,
    TrainingFiles,
    TrainingProcess,
    TrainingResult,
    new_scratch_folder,
    training_argv,
)
from schemas.logs import get_logger
from schemas.settings import ModelSettings, RetrainSettings

log = get_logger(__name__)


def reference_profile(
    prepared: PreparedData,
    model: ModelSettings,
    config: DetectorConfig,
    new_model: Any,
    holdout_predictions: Any,
    metrics: dict[str, float],
) -> bytes:
    """The monitor's new reference: the recent data the new model was trained for
    (`PreparedData.profile_rows` and the holdout), with its errors and baseline taken from
    the holdout only (in-sample errors flatter a model). A classifier configured with a
    `score_column` gets the new model's class probabilities on the holdout there, so the
    monitor keeps estimating its accuracy before labels (CBPE) after a promotion."""
    recent = prepared.profile_rows if prepared.profile_rows is not None else prepared.train
    outputs = {model.prediction_column: list(holdout_predictions)}
    scores = holdout_scores(model, new_model, prepared.holdout_features)
    if scores is not None:
        outputs[model.score_column] = scores
    holdout = prepared.holdout.assign(**outputs)
    frame = pd.concat([recent.assign(**{column: None for column in outputs}), holdout], ignore_index=True)
    profile = ReferenceProfile.from_frame(
        frame.rename(columns={prepared.target: model.actual_column}),
        feature_columns=prepared.feature_columns,
        prediction_column=model.prediction_column,
        actual_column=model.actual_column,
        baseline=metrics,
        config=config,
        score_column=model.score_column if scores is not None else None,
    )
    return profile.to_bytes()


def holdout_scores(model: ModelSettings, new_model: Any, features: pd.DataFrame) -> list[dict[str, float]] | None:
    """Each holdout row's probability per class (classes as text, as on the wire), or
    None when the model is no classifier with a `score_column` or gives no probabilities."""
    if model.task != "classification" or not model.score_column or not hasattr(new_model, "predict_proba"):
        return None
    names = [str(c) for c in new_model.classes_]
    return [dict(zip(names, map(float, row))) for row in new_model.predict_proba(features)]


class FittedModels:
    """Fitted artifacts by their training rows and trainer, in `folder`: a replay's
    policies that train on identical rows share one fit (`driftline backtest --retrain`).
    The live retrainer keeps none: its versions are found by trigger_id instead."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(train: pd.DataFrame, model: ModelSettings, seed: int) -> str:
        """The same rows (values, columns, order), trainer, task, target and seed."""
        digest = hashlib.sha256(pd.util.hash_pandas_object(train, index=False).to_numpy().tobytes())
        recipe = (list(train.columns), list(map(str, train.dtypes)), model.trainer, model.train_command,
                  model.task, model.actual_column, seed)
        digest.update(repr(recipe).encode())
        return digest.hexdigest()

    def get(self, key: str) -> Path | None:
        path = self.folder / f"{key}.joblib"
        return path if path.is_file() else None

    def put(self, key: str, artifact: Path) -> None:
        shutil.copyfile(artifact, self.folder / f"{key}.joblib")


class RetrainJob:
    def __init__(
        self,
        trigger: Trigger,
        model: ModelSettings,
        retrain: RetrainSettings,
        store: ModelStore,
        prepared: PreparedData,
        detector_config: DetectorConfig,
        fitted: FittedModels | None = None,
    ) -> None:
        self.trigger = trigger
        self.fitted = fitted
        self._fitted_key: str | None = None
        self.detector_config = detector_config
        self.model = model
        self.retrain = retrain
        self.store = store
        self.prepared = prepared
        self.previous_version = store.current_version(trigger.model_id)
        self._process: TrainingProcess | None = None
        self._reused: dict[str, Any] | None = None
        self._start_error: str | None = None

    @property
    def model_id(self) -> str:
        return self.trigger.model_id

    def start(self) -> None:
        self._reused = self.store.find_by_trigger(self.model_id, self.trigger.trigger_id)
        if self._reused is not None:
            log.info("retrain_reusing_version", model=self.model_id, version=self._reused["version"])
            return
        folder = new_scratch_folder(self.retrain.work_dir, self.model_id)
        files = TrainingFiles(folder, self.retrain.training_data_format)
        if self.fitted is not None:
            self._fitted_key = self.fitted.key(self.prepared.train, self.model, self.retrain.random_seed)
            if (artifact := self.fitted.get(self._fitted_key)) is not None:
                shutil.copyfile(artifact, files.output)
                digest_path(files.output).write_text(sha256_of(files.output) + "\n")
                self._process = FinishedTraining(files)
                return
        try:
            write_table(self.prepared.train, files.data)
            argv = training_argv(self.model, files, self.retrain.random_seed)
            self._process = TrainingProcess(
                argv,
                files,
                self.retrain.training_timeout_seconds,
                threads=self.retrain.trainer_threads,
                nice=self.retrain.trainer_nice,
            )
        except OSError as error:  # e.g. a train_command that does not exist
            shutil.rmtree(folder, ignore_errors=True)
            self._start_error = f"training could not start: {type(error).__name__}: {error}"
            return
        log.info("training_started", model=self.model_id, trigger_id=self.trigger.trigger_id, pid=self._process.pid)

    def poll(self) -> OutcomeRecord | None:
        """None while training runs; then the outcome (the version is stored by then)."""
        if self._reused is not None:
            return self._finish_reused(self._reused)
        if self._start_error is not None:
            return self._finish(TrainingResult(False, 0.0, self._start_error))
        assert self._process is not None, "start() first"
        result = self._process.poll()
        if result is None:
            return None
        try:
            return self._finish(result)
        finally:
            shutil.rmtree(self._process.files.folder, ignore_errors=True)

    def wait(self, poll_seconds: float) -> OutcomeRecord:
        """Blocks until the outcome (the batch API and `driftline models init`)."""
        while (record := self.poll()) is None:
            time.sleep(poll_seconds)
        return record

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            shutil.rmtree(self._process.files.folder, ignore_errors=True)

    def _execution(self, **extra: Any) -> dict[str, Any]:
        trainer = "command" if self.model.train_command else (self.model.trainer or "builtin")
        windows = {f"{name}_window": value for name, value in self.prepared.windows.items()}
        return {"counts": self.prepared.counts, "ranges": self.prepared.ranges, "trainer": trainer, **windows, **extra}

    def _finish(self, result: TrainingResult) -> OutcomeRecord:
        if not result.ok:
            log.warning(
                "training_failed", model=self.model_id, trigger_id=self.trigger.trigger_id, reason=result.reason
            )
            return OutcomeRecord.failed(
                self.trigger, result.reason, self.previous_version, **self._execution(training_seconds=result.seconds)
            )
        if self.fitted is not None and not isinstance(self._process, FinishedTraining):
            self.fitted.put(self._fitted_key, self._process.files.output)
        execution = self._execution()
        version = self.store.add_version(
            self.model_id,
            self._process.files.output,
            {
                "trigger_id": self.trigger.trigger_id,
                "trigger_types": self.trigger.trigger_types,
                "data_counts": self.prepared.counts,
                "data_ranges": self.prepared.ranges,
                "trainer": execution["trainer"],
                **{key: value for key, value in execution.items() if key.endswith("_window")},
            },
            sha256=self._process.files.artifact_sha256(),
        )
        return self._decided(self._validate(version, training_seconds=result.seconds))

    def _finish_reused(self, metadata: dict[str, Any]) -> OutcomeRecord:
        version = metadata["version"]
        self.previous_version = metadata["parent_version"]  # the current one may be this version now
        decision = metadata.get("decision")
        if decision is None:  # crashed between storing and deciding
            return self._decided(self._validate(version, reused=True))
        if decision == "failed":
            return OutcomeRecord.failed(
                self.trigger, metadata["reason"], self.previous_version, version, **self._execution(reused=True)
            )
        if decision == "rolled_back":  # retrain/rollback.py: never promoted again by this trigger
            return OutcomeRecord.skipped(
                self.trigger, f"version {version} of this trigger was rolled back by {metadata.get('rolled_back_by')}"
            )
        if decision == "promoted" and "promoted_at" not in metadata:
            self.store.promote(self.model_id, version)
        return self._record(version, decision, metadata["validation"], reused=True)

    def _decided(self, outcome: OutcomeRecord) -> OutcomeRecord:
        """Every decision prunes the store, so rejected and failed versions do not pile up
        (a promotion prunes too)."""
        self.store.prune(self.model_id)
        return outcome

    def _validate(self, version: str, **execution: Any) -> OutcomeRecord:
        """Scores both models on the holdout, writes the profile and the decision, promotes."""
        try:
            new_model = self.store.load_model(self.model_id, version)
            predictions = new_model.predict(self.prepared.holdout_features)
            new_metrics = validation.score(self.model.task, predictions, self.prepared.holdout[self.prepared.target])
            self.store.write_profile(
                self.model_id,
                version,
                reference_profile(self.prepared, self.model, self.detector_config, new_model, predictions,
                                  new_metrics),
            )
        except Exception as exc:  # a model that cannot score or be profiled is a failed retrain
            reason = f"validation of version {version} failed: {type(exc).__name__}: {exc}"
            self.store.update_metadata(self.model_id, version, decision="failed", reason=reason)
            return OutcomeRecord.failed(
                self.trigger, reason, self.previous_version, version, **self._execution(**execution)
            )
        try:
            current_metrics = self._current_metrics()
        except Exception as exc:  # e.g. a current model trained on other columns
            unscorable = f"the current version {self.previous_version} cannot score the holdout: " \
                         f"{type(exc).__name__}: {exc}"
            if not self.retrain.promote_over_unscorable_model:
                reason = f"{unscorable} (set retrain.promote_over_unscorable_model to promote anyway)"
                self.store.update_metadata(self.model_id, version, decision="failed", reason=reason)
                return OutcomeRecord.failed(
                    self.trigger, reason, self.previous_version, version, **self._execution(**execution)
                )
            log.warning("current_model_cannot_score", model=self.model_id, error=unscorable)
            current_metrics = None
        checked = validation.compare(
            self.model.task, new_metrics, current_metrics, self.retrain.promotion_margin
        )
        summary = {
            "new": checked.new,
            "current": checked.current,
            "improvements": checked.improvements,
            "reason": checked.reason,
        }
        decision = "promoted" if checked.promote else "rejected"
        self.store.update_metadata(self.model_id, version, decision=decision, validation=summary)
        if checked.promote:
            self.store.promote(self.model_id, version)
        return self._record(version, decision, summary, **execution)

    def _current_metrics(self) -> dict[str, float] | None:
        """The current model's scores on the holdout (None: there is none); raises when it
        cannot score it."""
        if self.previous_version is None:
            return None
        current = self.store.load_model(self.model_id, self.previous_version)
        predictions = current.predict(self.prepared.holdout_features)
        return validation.score(self.model.task, predictions, self.prepared.holdout[self.prepared.target])

    def _record(self, version: str, decision: str, summary: dict[str, Any], **execution: Any) -> OutcomeRecord:
        promoted = decision == "promoted"
        return OutcomeRecord(
            self.trigger,
            decision,
            summary["reason"],
            attempted=True,
            successful=True,
            previous_version=self.previous_version,
            new_version=version,
            reference_profile=self.store.reference_profile_path(self.model_id, version) if promoted else None,
            new_metrics=summary["new"],
            current_metrics=summary["current"],
            improvements=summary["improvements"],
            execution=self._execution(**execution),
        )
