"""What became of a trigger, pure: the `model_retraining_events` row and the
`RetrainOutcome` event are built from one `OutcomeRecord`, and a row already written
(after a crash, before the event went out) rebuilds the same record."""

from __future__ import annotations

import datetime as dt
import enum
import math
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from schemas.messages import DataWindow, RetrainOutcome, RetrainRequest, to_builtins

# The metric columns of `model_retraining_events`, also the metrics of the outcome event.
METRIC_COLUMNS = (
    "retraining_r2",
    "retraining_rmse",
    "retraining_accuracy",
    "comparison_previous_r2",
    "improvement_r2_percent",
    "improvement_rmse_percent",
    "improvement_accuracy_percent",
)

# The JSONB columns (migration 0003) describing the rows a retrain trained and validated
# on; also in `execution_metrics` under the same keys, and `training`/`holdout` of the event.
WINDOW_COLUMNS = ("training_window", "holdout_window")

# Column widths of the design's table, so that no value can make an insert fail forever.
TYPE_WIDTH = 200  # schemas/sql/0005_trigger_type_combinations.sql
SEVERITY_WIDTH = 20
VERSION_WIDTH = 50
ID_WIDTH = 100
MODEL_ID_WIDTH = 200


@dataclass(frozen=True)
class Trigger:
    """What a row needs to know about the trigger, from a message or from the batch API."""

    trigger_id: str
    model_id: str
    model_version: str
    trigger_types: list[str]
    severity: str
    reason: str
    metrics: dict[str, Any]
    triggered_at: dt.datetime

    @classmethod
    def from_request(cls, request: RetrainRequest) -> Trigger:
        details = {
            "metrics": request.metrics,
            "confidence": request.decision.confidence,
            "root_cause": to_builtins(request.decision)["root_cause"],
            "columns": request.decision.columns,
            "window": to_builtins(request.window),
        }
        if request.decision.expected_impact is not None:  # the row's trigger_metrics JSONB
            details["expected_impact"] = to_builtins(request.decision.expected_impact)
        return cls(
            trigger_id=request.trigger_id,
            model_id=request.model_id,
            model_version=request.model_version,
            trigger_types=list(request.decision.trigger_types),
            severity=request.decision.severity,
            reason=request.decision.reason,
            metrics=details,
            triggered_at=request.created_at,
        )


@dataclass(frozen=True)
class OutcomeRecord:
    trigger: Trigger
    outcome: str  # promoted, rejected, failed, skipped
    reason: str
    attempted: bool
    successful: bool | None = None
    previous_version: str | None = None
    new_version: str | None = None
    reference_profile: str | None = None
    new_metrics: dict[str, float] = field(default_factory=dict)
    current_metrics: dict[str, float] | None = None
    improvements: dict[str, float | None] = field(default_factory=dict)
    execution: dict[str, Any] = field(default_factory=dict)  # counts, ranges, seconds
    completed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))

    @classmethod
    def skipped(cls, trigger: Trigger, reason: str) -> OutcomeRecord:
        return cls(trigger, "skipped", reason, attempted=False)

    @classmethod
    def failed(
        cls,
        trigger: Trigger,
        reason: str,
        previous_version: str | None,
        new_version: str | None = None,
        **execution: Any,
    ) -> OutcomeRecord:
        """`new_version` is set when training succeeded and validating the version failed."""
        return cls(trigger, "failed", reason, True, False, previous_version, new_version, execution=execution)

    def with_execution(self, **execution: Any) -> OutcomeRecord:
        return replace(self, execution={**self.execution, **execution})

    def event_metrics(self) -> dict[str, float | None]:
        return {
            "retraining_r2": self.new_metrics.get("r2"),
            "retraining_rmse": self.new_metrics.get("rmse"),
            "retraining_accuracy": self.new_metrics.get("accuracy"),
            "comparison_previous_r2": (self.current_metrics or {}).get("r2"),
            **self.improvements,
        }

    def row(self) -> dict[str, Any]:
        """The row for `model_retraining_events`, timestamps in UTC without a zone."""
        trigger = self.trigger
        metrics = self.event_metrics()
        return {
            "trigger_id": trigger.trigger_id[:ID_WIDTH],
            "model_id": trigger.model_id[:MODEL_ID_WIDTH],
            "model_version": trigger.model_version[:VERSION_WIDTH],
            # Every type, so the design's GROUP BY trigger_type counts each trigger once under
            # the combination that fired, and no type is hidden behind another (README).
            "trigger_type": ("+".join(trigger.trigger_types) or "unknown")[:TYPE_WIDTH],
            "severity": trigger.severity[:SEVERITY_WIDTH],
            "drift_type": ",".join(trigger.trigger_types)[:TYPE_WIDTH],
            "trigger_reason": trigger.reason,
            "trigger_metrics": jsonable(trigger.metrics),
            "execution_attempted": self.attempted,
            "execution_successful": self.successful,
            "execution_metrics": jsonable(
                {
                    **self.execution,
                    "outcome": self.outcome,
                    "reason": self.reason,
                    "previous_version": self.previous_version,
                    "reference_profile": self.reference_profile,
                    "new_metrics": self.new_metrics,
                    "current_metrics": self.current_metrics,
                }
            ),
            "retraining_model_version": self.new_version[:VERSION_WIDTH] if self.new_version else None,
            "retraining_r2": metrics["retraining_r2"],
            "retraining_rmse": metrics["retraining_rmse"],
            "retraining_accuracy": metrics["retraining_accuracy"],
            "comparison_previous_r2": metrics["comparison_previous_r2"],
            "improvement_r2_percent": metrics.get("improvement_r2_percent"),
            "improvement_rmse_percent": metrics.get("improvement_rmse_percent"),
            "improvement_accuracy_percent": metrics.get("improvement_accuracy_percent"),
            "triggered_at": _utc_naive(trigger.triggered_at),
            "execution_completed_at": _utc_naive(self.completed_at),
            **{column: jsonable(self.execution.get(column)) for column in WINDOW_COLUMNS},
        }

    def event(self) -> RetrainOutcome:
        return RetrainOutcome(
            trigger_id=self.trigger.trigger_id,
            model_id=self.trigger.model_id,
            outcome=self.outcome,
            previous_version=self.previous_version,
            new_version=self.new_version,
            reference_profile=self.reference_profile,
            reason=self.reason,
            metrics=self.event_metrics(),
            completed_at=self.completed_at,
            training=data_window(self.execution.get("training_window")),
            holdout=data_window(self.execution.get("holdout_window")),
        )


def data_window(summary: dict[str, Any] | None) -> DataWindow | None:
    """A `describe_window` summary (or a row's JSONB) as the event's `DataWindow`."""
    if not summary:
        return None
    return msgspec.convert(jsonable(summary), DataWindow)


def event_from_row(row: dict[str, Any]) -> RetrainOutcome:
    """The event of a row written earlier (its event may never have been published)."""
    execution = row["execution_metrics"] or {}
    metrics = {key: row[key] for key in METRIC_COLUMNS}
    return RetrainOutcome(
        trigger_id=row["trigger_id"],
        model_id=row["model_id"],
        outcome=execution.get("outcome", "failed"),
        previous_version=execution.get("previous_version"),
        new_version=row["retraining_model_version"],
        reference_profile=execution.get("reference_profile"),
        reason=execution.get("reason", ""),
        metrics=metrics,
        completed_at=row["execution_completed_at"].replace(tzinfo=dt.timezone.utc),
        training=data_window(row.get("training_window")),
        holdout=data_window(row.get("holdout_window")),
    )


def jsonable(value: Any) -> Any:
    """Plain JSON for a JSONB column: numpy values unwrapped, NaN and infinities as null
    (PostgreSQL's jsonb rejects them)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return jsonable(value.tolist())
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _utc_naive(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
