"""One decision from many signals: severity, confidence, reason and root cause."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import DetectorConfig


class DriftType(str, enum.Enum):
    """Kinds of trigger (the design document's ``DriftType``)."""

    DATA_DRIFT = "data_drift"
    CONCEPT_DRIFT = "concept_drift"
    PERFORMANCE_DEGRADATION = "performance_degradation"
    OUTLIERS = "outliers"


SIGNAL_TYPE = {"ks": DriftType.DATA_DRIFT, "mean_shift": DriftType.DATA_DRIFT,
               "variance": DriftType.DATA_DRIFT, "categorical": DriftType.DATA_DRIFT,
               "outlier_rate": DriftType.OUTLIERS, "mae": DriftType.CONCEPT_DRIFT,
               "trend": DriftType.CONCEPT_DRIFT,
               "r2": DriftType.PERFORMANCE_DEGRADATION,
               "rmse": DriftType.PERFORMANCE_DEGRADATION,
               "accuracy": DriftType.PERFORMANCE_DEGRADATION}


@dataclass(frozen=True)
class Decision:
    """A fused retraining decision.

    ``offset`` is the 0-based index of the event at which the decision fired, counted
    in the stream given to the update method that returned it: feature events for
    ``update_features``, labelled events for ``update_labelled``.
    """

    triggered: bool
    offset: int
    trigger_types: list[str]
    severity: str
    confidence: float
    reason: str
    root_cause: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def severity_of(strengths: list[float], config: DetectorConfig) -> str:
    """The design's table; "strong" = strength (statistic / threshold) past a factor.

    CRITICAL: two or more very strong signals; HIGH: two or more strong signals;
    MEDIUM: several signals or one strong; LOW: a single mild signal.
    """
    strong = sum(s >= config.strong_factor for s in strengths)
    very = sum(s >= config.very_strong_factor for s in strengths)
    if very >= 2:
        return "CRITICAL"
    if strong >= 2:
        return "HIGH"
    if len(strengths) >= 2 or strong >= 1:
        return "MEDIUM"
    return "LOW" if strengths else "NONE"


def reason_of(types: list[str], columns: list[str]) -> str:
    if not types:
        return "No drift detected"
    if len(types) > 1:
        return f"Multiple triggers detected: {', '.join(types)}"
    where = f" in columns: {', '.join(columns)}" if columns else ""
    return f"{types[0].replace('_', ' ').capitalize()} detected{where}"


def fuse(signals: list[dict[str, Any]], offset: int, config: DetectorConfig,
         metrics: dict[str, Any] | None = None) -> Decision:
    """Fuse signals (dicts with ``signal``, ``column``, ``strength`` >= 1 when past
    threshold) into one :class:`Decision`.

    Confidence is ``1 - exp(-sum(strength))``: one signal just at its threshold gives
    0.63, stronger or more signals approach 1.

    >>> d = fuse([{"signal": "ks", "column": "x", "strength": 2.5},
    ...           {"signal": "mae", "column": None, "strength": 1.2}], 7, DetectorConfig())
    >>> d.reason, d.severity, d.columns
    ('Multiple triggers detected: data_drift, concept_drift', 'MEDIUM', ['x'])
    """
    ranked = sorted(signals, key=lambda s: -s["strength"])
    types: list[str] = []
    columns: list[str] = []
    for s in ranked:
        t = SIGNAL_TYPE[s["signal"]].value
        if t not in types:
            types.append(t)
        if s.get("column") is not None and s["column"] not in columns:
            columns.append(s["column"])
    types.sort(key=[d.value for d in DriftType].index)
    strengths = [float(s["strength"]) for s in ranked]
    conf = float(1.0 - np.exp(-sum(strengths))) if strengths else 0.0
    return Decision(triggered=bool(ranked), offset=int(offset), trigger_types=types,
                    severity=severity_of(strengths, config), confidence=round(conf, 4),
                    reason=reason_of(types, columns),
                    root_cause=[{"signal": s["signal"], "column": s.get("column"),
                                 "strength": round(float(s["strength"]), 4)}
                                for s in ranked],
                    columns=columns, metrics=dict(metrics or {}))
