from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from schemas.messages import (
    ActualEvent,
    FeatureEvent,
    PredictionEvent,
    RetrainRequest,
    SchemaError,
    decode,
    encode,
)

VALID = (
    b'{"schema_version":1,"model_id":"m","model_version":"1","event_id":"e1",'
    b'"timestamp":"2026-11-26T06:00:00Z","features":{"a":1.5,"b":"x","c":null}}'
)


def test_json_schema_files_match_the_models() -> None:
    result = subprocess.run([sys.executable, "-m", "schemas.jsonschema", "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_valid_feature_event_round_trips() -> None:
    event = decode(FeatureEvent, VALID)
    assert event.features == {"a": 1.5, "b": "x", "c": None}
    assert event.timestamp == dt.datetime(2026, 11, 26, 6, tzinfo=dt.timezone.utc)
    assert decode(FeatureEvent, encode(event)) == event


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "malformed_json"),
        (VALID.replace(b"1.5", b"NaN"), "not_finite"),
        (VALID.replace(b'"model_id":"m",', b""), "missing_field"),
        (VALID.replace(b'"model_id":"m"', b'"model_id":7'), "wrong_type"),
        (VALID.replace(b'"schema_version":1', b'"schema_version":2'), "future_schema_version"),
        (VALID.replace(b'"model_id":"m"', b'"model_id":""'), "invalid"),
        (b"[]", "wrong_type"),
    ],
)
def test_bad_messages_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(SchemaError) as caught:
        decode(FeatureEvent, data)
    assert caught.value.reason == reason


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert decode(FeatureEvent, VALID.replace(b'"features"', b'"extra":1,"features"')).event_id == "e1"


def test_prediction_and_actual_reject_non_finite_numbers() -> None:
    base = b'{"model_id":"m","model_version":"1","event_id":"e","timestamp":"2026-11-26T06:00:00Z",'
    with pytest.raises(SchemaError):
        decode(PredictionEvent, base + b'"prediction":1e999}')
    assert decode(ActualEvent, base + b'"actual":"cat"}').actual == "cat"


def test_retrain_request_requires_a_decision() -> None:
    with pytest.raises(SchemaError) as caught:
        decode(RetrainRequest, b'{"trigger_id":"t","model_id":"m","model_version":"1","created_at":"2026-11-26T06:00:00Z"}')
    assert caught.value.reason == "missing_field"


def test_scores_are_optional_and_old_events_still_decode() -> None:
    from schemas.messages import FeatureEvent, LabelledRecord, PredictionEvent

    head = b'"schema_version":1,"model_id":"m","model_version":"1","event_id":"e1","timestamp":"2026-11-26T06:00:00Z"'
    old = decode(PredictionEvent, b"{" + head + b',"prediction":1}')
    assert old.scores is None
    binary = decode(PredictionEvent, b"{" + head + b',"prediction":1,"scores":0.83}')
    per_class = decode(PredictionEvent, b"{" + head + b',"prediction":"b","scores":{"a":0.2,"b":0.8}}')
    assert binary.scores == 0.83 and per_class.scores == {"a": 0.2, "b": 0.8}
    feature = decode(FeatureEvent, b"{" + head + b',"features":{"x":1.0},"prediction":1,"scores":0.9}')
    assert feature.prediction == 1 and feature.scores == 0.9
    assert decode(FeatureEvent, b"{" + head + b',"features":{"x":1.0}}').scores is None
    record = b"{" + head + b',"prediction":1,"actual":0,"actual_timestamp":"2026-11-26T06:00:01Z"'
    assert decode(LabelledRecord, record + b"}").scores is None
    assert decode(LabelledRecord, record + b',"scores":{"0":0.4,"1":0.6}}').scores == {"0": 0.4, "1": 0.6}
    for bad in (b"1.5", b"-0.1", b'{"a":2}', b'"high"'):
        with pytest.raises(SchemaError):
            decode(PredictionEvent, b"{" + head + b',"prediction":1,"scores":' + bad + b"}")


def test_a_trigger_without_expected_impact_decodes_as_before() -> None:
    from schemas.messages import RetrainRequest

    base = (b'{"schema_version":1,"trigger_id":"t","model_id":"m","model_version":"1",'
            b'"created_at":"2026-11-26T06:00:00Z","decision":{"trigger_types":["data_drift"],'
            b'"severity":"LOW","confidence":0.5,"reason":"r","root_cause":[]')
    assert decode(RetrainRequest, base + b"}}").decision.expected_impact is None
    impact = b',"expected_impact":{"metric":"accuracy","reference":0.81,"estimate":0.87,"change":0.06}'
    got = decode(RetrainRequest, base + impact + b"}}").decision.expected_impact
    assert got.metric == "accuracy" and got.change == 0.06
