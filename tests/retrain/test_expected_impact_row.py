"""A decision's expected impact travels from the detectors to the trigger message and into
the trigger's row (its trigger_metrics JSONB), and a trigger without one stays as before."""

from __future__ import annotations

import datetime as dt

from detectors import DetectorConfig
from detectors.fusion import fuse
from retrain.outcome import Trigger
from schemas.messages import RetrainRequest, decode, encode
from schemas.messages import Window
from streams.decoding import Record
from streams.model_state import Firing
from streams.triggers import retrain_request

NOW = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc)

IMPACT = {"metric": "accuracy", "reference": 0.81, "estimate": 0.74, "change": -0.07,
          "relative_harm": 0.086, "events": 300, "harmful": True, "strength": 1.7}


def request_of(decision) -> RetrainRequest:
    firing = Firing(decision=decision, model_id="m", model_version="1", trigger_id="t", window=Window(),
                    at=Record("features", 0, 0, b"{}"), event_time=NOW)
    return decode(RetrainRequest, encode(retrain_request(firing, NOW)))


def test_expected_impact_reaches_the_rows_metrics() -> None:
    signals = [{"signal": "ks", "column": "a", "strength": 2.5, "lambda": 0.1}]
    decision = fuse(signals, 10, DetectorConfig(), expected_impact=IMPACT)
    assert decision.expected_impact == {"metric": "accuracy", "reference": 0.81, "estimate": 0.74,
                                        "change": -0.07}
    assert decision.severity == "HIGH" and "harmful expected impact" in decision.reason
    row = Trigger.from_request(request_of(decision)).metrics
    assert row["expected_impact"] == decision.expected_impact


def test_a_model_without_an_estimate_keeps_its_row_as_before() -> None:
    decision = fuse([{"signal": "ks", "column": "a", "strength": 1.2, "lambda": 0.5}], 10, DetectorConfig())
    assert decision.expected_impact is None and decision.severity == "LOW"
    assert "expected_impact" not in Trigger.from_request(request_of(decision)).metrics
