"""The monitor loop's fast decoding path gives what the per-record path gives: the same
(Record, event) pairs per model in record order, the same dead letters, for single
events, batch records and every kind of bad record; and the routing check keeps its
semantics (key mismatches dead-lettered, partition mismatches counted)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from aiokafka.partitioner import murmur2

from schemas.messages import FeatureEvent, LabelledRecord
from schemas.settings import Settings
from streams.decoding import Record, decode_by_model, decode_records
from streams.metrics import MonitorMetrics
from streams.monitor_loop import MonitorLoop

TOPIC = "features"


def _event(model: str, i: int, **features: object) -> dict:
    return {"schema_version": 1, "model_id": model, "model_version": "1", "event_id": f"{model}-{i}",
            "timestamp": "2026-01-01T00:00:00+00:00", "features": features or {"a": float(i)}}


def _records() -> list[Record]:
    values = [
        json.dumps(_event("m1", 0)).encode(),
        json.dumps(_event("m2", 1)).encode(),
        b"[" + b",".join(json.dumps(_event("m1", i)).encode() for i in range(2, 5)) + b"]",
        b"not json",
        b"",
        b"[]",
        b" " + json.dumps(_event("m2", 5)).encode(),  # leading white space: the slow path
        b"[" + json.dumps(_event("m1", 6)).encode() + b"," + json.dumps(_event("m2", 7)).encode() + b"]",
        b"[" + json.dumps(_event("m2", 8)).encode() + b',{"model_id": 3}]',
        json.dumps({**_event("m1", 9), "schema_version": 99}).encode(),
        json.dumps(_event("m1", 10, a="text")).encode(),  # decodes; the detectors' step rejects it
        b"[[[[" * 10 + b"]]]]" * 10,
        json.dumps(_event("m3", 11)).encode(),
        b"[" + b",".join(json.dumps(_event("m2", i)).encode() for i in range(12, 14)) + b"]",
    ]
    return [Record(TOPIC, 0, offset, value, None, b"m1") for offset, value in enumerate(values)]


def _letters(decoded) -> list[tuple]:
    return [(d.reason, d.source_offset, d.source_index, d.original) for d in decoded.dead]


def test_decode_by_model_is_decode_records_grouped() -> None:
    records = _records()
    reference = decode_records(FeatureEvent, records)
    expected: dict[str, list] = {}
    for record, event in reference.valid:
        expected.setdefault(event.model_id, []).append((record, event))
    groups, bad = decode_by_model(FeatureEvent, records)
    assert groups == expected
    assert list(groups) == ["m1", "m2", "m3"]  # first appearance
    assert bad.valid == []
    assert _letters(bad) == _letters(reference)
    assert sum(map(len, groups.values())) + bad.events == reference.events
    # batch records: one Record per event, the record's offset and the event's index
    assert [(r.offset, r.index) for r, _ in groups["m1"]] == [(0, None), (2, 0), (2, 1), (2, 2), (7, 0), (10, None)]
    assert [(r.offset, r.index) for r, _ in groups["m2"]] == [(1, None), (6, None), (8, 0), (13, 0), (13, 1)]
    assert {r.key for r, _ in groups["m2"]} == {b"m1"}


def test_decode_by_model_labelled() -> None:
    labelled = {**_event("m1", 0), "prediction": 1.0, "actual": "yes",
                "actual_timestamp": "2026-01-01T00:00:01+00:00"}
    records = [Record("labelled", 1, 7, json.dumps(labelled).encode()),
               Record("labelled", 1, 8, b"[" + json.dumps(labelled).encode() + b"]")]
    groups, bad = decode_by_model(LabelledRecord, records)
    assert not bad.rejected
    assert [(r.offset, r.index, e.actual) for r, e in groups["m1"]] == [(7, None, "yes"), (8, 0, "yes")]


def test_record_is_a_value() -> None:
    record = Record("t", 1, 2, b"v", 3, b"k")
    assert record == Record("t", 1, 2, b"v", 3, b"k") != Record("t", 1, 2, b"v", None, b"k")
    assert (record.topic, record.partition, record.offset, record.value, record.index, record.key) == \
        ("t", 1, 2, b"v", 3, b"k")
    assert Record("t", 1, 2, b"v").index is None and Record("t", 1, 2, b"v").key is None


def _loop(partitions: int = 4) -> MonitorLoop:
    loop = MonitorLoop(Settings(), MonitorMetrics(), SimpleNamespace(latest=lambda m: None), on_fatal=print)
    meta = SimpleNamespace(partitions=dict.fromkeys(range(partitions)))
    loop.consumer = SimpleNamespace(list_topics=lambda topic, timeout: SimpleNamespace(topics={topic: meta}))
    return loop


def _mismatches(loop: MonitorLoop, model: str) -> float:
    return loop.metrics.partition_mismatch.labels(model, TOPIC)._value.get()


def test_routing_keeps_rightly_keyed_events_and_counts_misplaced_ones() -> None:
    loop = _loop()
    right = (murmur2(b"m1") & 0x7FFFFFFF) % 4
    wrong = (right + 1) % 4
    event = FeatureEvent(model_id="m1", model_version="1", event_id="e",
                         timestamp="2026-01-01T00:00:00+00:00", features={})  # type: ignore[arg-type]
    pairs = [(Record(TOPIC, right, 0, b"{}", None, b"m1"), event),
             (Record(TOPIC, right, 1, b"{}", None, b"m2"), event),
             (Record(TOPIC, wrong, 2, b"{}", None, b"m1"), event),
             (Record(TOPIC, right, 3, b"{}", None, None), event),
             (Record(TOPIC, right, 4, b"{}", 0, b"m1"), event)]
    items = {"features": list(pairs), "labelled": []}
    dead = loop._check_routing("m1", items)
    assert [(d.reason, d.source_offset, d.source_key) for d in dead] == [("key_mismatch", 1, "m2"),
                                                                          ("key_mismatch", 3, None)]
    assert items["features"] == [pairs[0], pairs[2], pairs[4]]
    assert _mismatches(loop, "m1") == 1
    # all keyed right and in their partition: nothing taken out, nothing counted
    items = {"features": [pairs[0], pairs[4]], "labelled": []}
    assert loop._check_routing("m1", items) == [] and items["features"] == [pairs[0], pairs[4]]
    assert _mismatches(loop, "m1") == 1
