"""From a detectors' decision to the `RetrainRequest` published on `retrain-requests`."""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Any

from schemas.messages import Decision as DecisionMessage
from schemas.messages import ExpectedImpact, RetrainRequest, RootCause

if TYPE_CHECKING:
    from streams.model_state import Firing

def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float | None]:
    """The decision's nested statistics as `a.b.c -> number` (NaN/inf become null: JSON)."""
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_metrics(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value) if math.isfinite(value) else None
    return out


def retrain_request(firing: Firing, now: dt.datetime | None = None) -> RetrainRequest:
    decision = firing.decision
    return RetrainRequest(
        trigger_id=firing.trigger_id,
        model_id=firing.model_id,
        model_version=firing.model_version,
        created_at=now or dt.datetime.now(dt.timezone.utc),
        decision=DecisionMessage(
            trigger_types=[getattr(t, "value", t) for t in decision.trigger_types],
            severity=decision.severity,
            confidence=_probability(decision.confidence),
            reason=decision.reason,
            root_cause=[
                RootCause(signal=c["signal"], column=c.get("column"), strength=float(c["strength"]),
                          confidence=_probability(c.get("confidence")))
                for c in decision.root_cause
            ],
            columns=list(decision.columns),
            expected_impact=None if decision.expected_impact is None
            else ExpectedImpact(**decision.expected_impact),
        ),
        metrics=flat_metrics(decision.metrics),
        window=firing.window,
    )


def _probability(value: float | None) -> float | None:
    return None if value is None else min(1.0, max(0.0, float(value)))
