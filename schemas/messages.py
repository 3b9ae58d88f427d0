"""Versioned message schemas: the Python models every producer and consumer uses.

Each model is a `msgspec.Struct`; decoding validates everything in one pass in C: types,
required fields, the schema version (`Meta` bounds) and finite numbers (JSON has no NaN
or Infinity literal, and msgspec refuses a number that overflows a float: "Number out of
range"), so no Python code runs per message.
The JSON Schema files in `schemas/json/` are generated from these models
(`python -m schemas.jsonschema`) and checked against them by the tests, so the two never
disagree. `schemas/README.md` documents the messages for subscribers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from detectors.severity import Severity

SCHEMA_VERSION = 1

Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
FeatureValue = float | str | None  # None marks a missing value; it is counted, not guessed
Label = float | str  # a regression target or a class label
Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
# A classifier's scores: one probability per class (class label as text -> probability),
# or the positive class's probability of a binary model (the larger label: 1 of 0/1).
Scores = Probability | dict[str, Probability]


class SchemaError(ValueError):
    """A message that does not decode or validate; `reason` is a short, bounded label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _Message(msgspec.Struct, forbid_unknown_fields=False, kw_only=True, gc=False):
    schema_version: Annotated[int, msgspec.Meta(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION


class _InferenceEvent(_Message, kw_only=True):
    model_id: Identifier
    model_version: Identifier
    event_id: Identifier
    timestamp: dt.datetime


class FeatureEvent(_InferenceEvent, kw_only=True):
    """One inference request's features, on the features topic, keyed by model_id.
    Optionally the model's output for it (`prediction`, and `scores` for a classifier):
    the monitor then estimates the model's performance before any label arrives."""

    features: dict[str, FeatureValue]
    prediction: Label | None = None
    scores: Scores | None = None


class PredictionEvent(_InferenceEvent, kw_only=True):
    """The model's prediction for one request. Its features ride along (optional) so the
    labelled record joined with the late actual can be used for retraining."""

    prediction: Label
    features: dict[str, FeatureValue] | None = None
    scores: Scores | None = None


class ActualEvent(_InferenceEvent, kw_only=True):
    """The ground truth for an earlier request, matched to its prediction by event_id."""

    actual: Label


class LabelledRecord(_InferenceEvent, kw_only=True):
    """A prediction joined with its actual; `timestamp` is the prediction's event time."""

    prediction: Label
    actual: Label
    actual_timestamp: dt.datetime
    features: dict[str, FeatureValue] = {}
    scores: Scores | None = None  # the prediction's


class RootCause(msgspec.Struct, kw_only=True):
    signal: str
    column: str | None = None
    strength: float  # the estimated effect over the design's threshold for the signal
    # Of this signal alone: the probability that a stationary stream with the same
    # dependence stays below its statistic for one target_arl horizon (detectors.fusion).
    confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    # A data-quality signal's evidence: the missing shares, the stuck value, the new
    # levels with their shares (null for the other signals, absent from older triggers).
    detail: dict[str, Any] | None = None


class ExpectedImpact(msgspec.Struct, kw_only=True):
    """The model's performance estimated without labels since the change (CBPE or DLE):
    `change` = `estimate` - `reference` (for accuracy below 0 is worse, for MAE above)."""

    metric: Literal["accuracy", "mae"]
    reference: float
    estimate: float
    change: float


class Decision(msgspec.Struct, kw_only=True):
    trigger_types: Annotated[list[str], msgspec.Meta(description=(
        "data_drift, concept_drift, performance_degradation, outliers, "
        "estimated_performance_degradation (the detectors), or "
        "promotion_regression: a promoted version worse on live traffic than the champion it "
        "replaced, on which the retrainer rolls back"))]
    severity: Severity
    confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    reason: str
    root_cause: list[RootCause]
    columns: list[str] = []
    # only for a model with a performance estimate (see detectors.fusion.impact_severity)
    expected_impact: ExpectedImpact | None = None


class OffsetRange(msgspec.Struct, kw_only=True):
    """Offsets `start` to `end`, both inclusive, of one partition."""

    partition: Annotated[int, msgspec.Meta(ge=0)]
    start: Annotated[int, msgspec.Meta(ge=0)]
    end: Annotated[int, msgspec.Meta(ge=0)]


class TopicWindow(msgspec.Struct, kw_only=True):
    topic: str
    ranges: list[OffsetRange]


class Window(msgspec.Struct, kw_only=True):
    """What the monitor saw when it fired: where to find the same data again."""

    features: TopicWindow | None = None
    labelled: TopicWindow | None = None
    event_time_start: dt.datetime | None = None
    event_time_end: dt.datetime | None = None


class PartitionOffset(msgspec.Struct, kw_only=True):
    partition: Annotated[int, msgspec.Meta(ge=0)]
    offset: Annotated[int, msgspec.Meta(ge=0)]


class ChangePoint(msgspec.Struct, kw_only=True):
    """Where the detectors estimate that the change began: the first event of the new
    regime (for a sequential test, where its statistic last stood at zero)."""

    event_time: dt.datetime  # event time of that first event
    # Its record's offset in the labelled topic, per partition, when known: the retrainer
    # then also reads the labelled records from there up to the window (post-change
    # evidence from before the window's start).
    labelled: list[PartitionOffset] = []
    signal: str = ""  # the detector whose estimate this is, e.g. "error_cusum"
    events: int | None = None  # events from the change point to the trigger (the run length)


class RetrainRequest(_Message, kw_only=True):
    """A trigger on `retrain-requests`, keyed by model_id. `trigger_id` is derived from
    the model, its reference and the stream position, so a repeated publish of the same
    decision carries the same id."""

    trigger_id: Identifier
    model_id: Identifier
    model_version: Identifier
    created_at: dt.datetime
    decision: Decision
    metrics: dict[str, float | None] = {}
    window: Window = msgspec.field(default_factory=Window)
    # Optional: the detectors' change-point estimate. Without it the retrainer estimates
    # the change point of a change of concept from the served model's errors in the window.
    change_point: ChangePoint | None = None


class DataWindow(msgspec.Struct, kw_only=True):
    """The rows of a retrain's training set or holdout, and where they came from."""

    rows: int
    historical_rows: int = 0  # from the model's training data file
    labelled_rows: int = 0  # from the labelled topic
    # The labelled offsets those rows span, per partition (inclusive; records between
    # them may have been dropped: another model's, invalid or duplicate).
    labelled: list[OffsetRange] = []
    event_time_start: dt.datetime | None = None  # of the labelled rows
    event_time_end: dt.datetime | None = None
    # Training only: labelled rows from before the change point (at most the configured
    # share), and the change point that split them (source: message, estimated, trigger).
    old_concept_rows: int = 0
    change_point: dt.datetime | None = None
    change_point_source: str | None = None


class RetrainOutcome(_Message, kw_only=True):
    """What became of a trigger, on `retrain-events`; `promoted` tells the monitor to
    re-baseline on the new version's reference profile."""

    trigger_id: Identifier
    model_id: Identifier
    # rolled_back: a promotion_regression trigger put previous_version's parent back as
    # the current version, new_version; the monitor re-baselines as on a promotion.
    outcome: Literal["promoted", "rejected", "failed", "skipped", "rolled_back"]
    previous_version: str | None = None
    new_version: str | None = None
    # A path inside the files model store, or runs:/<run_id>/reference_profile.bin in MLflow.
    reference_profile: str | None = None
    reason: str = ""
    metrics: dict[str, float | None] = {}
    completed_at: dt.datetime
    # What the retrain trained and validated on (absent when nothing was trained).
    training: DataWindow | None = None
    holdout: DataWindow | None = None


class DeadLetter(_Message, kw_only=True):
    """A message that could not be used, with why and where it came from."""

    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    original: bytes  # base64 in JSON
    received_at: dt.datetime
    # For an event of a batch record (a JSON array of events): its position in the
    # array; `original` is then that event alone. None for a whole record.
    source_index: int | None = None
    # The whole original's size and SHA-256 (hex), also when `original` is truncated to
    # fit the dead-letter topic (`original_truncated`).
    original_size: int | None = None
    original_sha256: str | None = None
    original_truncated: bool = False
    source_key: str | None = None  # the record's key (its model, by the topics' contract)

    def bounded(self, max_original_bytes: int) -> DeadLetter:
        """This letter with `original` cut to `max_original_bytes`, so that any record the
        input topic accepts still fits the dead-letter topic."""
        if len(self.original) <= max_original_bytes:
            return self
        return msgspec.structs.replace(self, original=self.original[:max_original_bytes],
                                       original_truncated=True)

    @classmethod
    def for_failure(
        cls, error: SchemaError, *, topic: str, partition: int, offset: int, original: bytes,
        index: int | None = None, key: str | None = None,
    ) -> DeadLetter:
        return cls(
            reason=error.reason,
            detail=error.detail,
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            original=original,
            received_at=dt.datetime.now(dt.timezone.utc),
            source_index=index,
            original_size=len(original),
            original_sha256=hashlib.sha256(original).hexdigest(),
            source_key=None if key is None else key[:200],
        )


MESSAGE_TYPES: dict[str, type[_Message]] = {
    "feature_event": FeatureEvent,
    "prediction_event": PredictionEvent,
    "actual_event": ActualEvent,
    "labelled_record": LabelledRecord,
    "retrain_request": RetrainRequest,
    "retrain_outcome": RetrainOutcome,
    "dead_letter": DeadLetter,
}

M = TypeVar("M", bound=msgspec.Struct)
_decoders: dict[type, msgspec.json.Decoder[Any]] = {}
_encoder = msgspec.json.Encoder()


def _validation_reason(text: str) -> str:
    if "missing required field" in text:
        return "missing_field"
    if "schema_version`" in text and "<=" in text:
        return "future_schema_version"
    if "Number out of range" in text:
        return "not_finite"
    if text.startswith("Expected") and ", got `" in text:
        return "wrong_type"
    return "invalid"


def decoder_for(message_type: type[M]) -> msgspec.json.Decoder:
    """The (cached) msgspec decoder of a message type; errors are msgspec's own: `decode`
    turns them into `SchemaError`s."""
    decoder = _decoders.get(message_type)
    if decoder is None:
        decoder = _decoders[message_type] = msgspec.json.Decoder(message_type)
    return decoder


def decode(message_type: type[M], data: bytes) -> M:
    """Decodes and validates one JSON message, or raises `SchemaError` with a reason."""
    try:
        return decoder_for(message_type).decode(data)
    except msgspec.ValidationError as exc:
        raise SchemaError(_validation_reason(str(exc)), str(exc)) from None
    except RecursionError as exc:  # nesting deeper than msgspec follows
        raise SchemaError("too_deep", str(exc)) from None
    except msgspec.DecodeError as exc:
        # Python's json module writes NaN and Infinity, which JSON does not allow.
        reason = "not_finite" if b"NaN" in data or b"Infinity" in data else "malformed_json"
        raise SchemaError(reason, str(exc)) from None


def decode_batch(message_type: type[M], data: bytes) -> list[M]:
    """Decodes and validates a batch record (a JSON array of messages) in one call, or
    raises `SchemaError` (for the first invalid message, or an array that does not parse)."""
    return decode(list[message_type], data)  # type: ignore[valid-type]


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def to_builtins(message: msgspec.Struct) -> dict[str, Any]:
    return msgspec.to_builtins(message)
