"""The monitor loop's fast decoding path gives what the per-record path gives: the same
(Record, event) pairs per model in record order, the same dead letters, for single
events, batch records and every kind of bad record; and the routing check keeps its
semantics (key and partition mismatches dead-lettered, and counted)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd

from aiokafka.partitioner import murmur2

from schemas.messages import FeatureEvent, LabelledRecord
from schemas.settings import Settings
from streams.decoding import Record, column_decoder, decode_by_model, decode_records
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


def test_routing_keeps_rightly_keyed_events_and_dead_letters_the_others() -> None:
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
                                                                          ("key_mismatch", 3, None),
                                                                          ("wrong_partition", 2, "m1")]
    assert f"partition {right} " in dead[2].detail
    assert items["features"] == [pairs[0], pairs[4]]
    assert _mismatches(loop, "m1") == 1
    # all keyed right and in their partition: nothing taken out, nothing counted
    items = {"features": [pairs[0], pairs[4]], "labelled": []}
    assert loop._check_routing("m1", items) == [] and items["features"] == [pairs[0], pairs[4]]
    assert _mismatches(loop, "m1") == 1


def _view(groups: dict[str, list], numeric: list[str], categorical: list[str]) -> dict[str, tuple]:
    """What the detectors and the windows read of each model's events."""
    import numpy as np

    from streams.decoding import categorical_columns, numeric_matrix

    out = {}
    for model, pairs in groups.items():
        rows = [event.features for _, event in pairs]
        matrix, bad = numeric_matrix(rows, numeric)
        cats = {k: v.tolist() for k, v in categorical_columns(rows, categorical).items()}
        meta = [(r, e.model_id, e.model_version, e.event_id, e.timestamp, e.schema_version) for r, e in pairs]
        out[model] = (np.nan_to_num(matrix, nan=-999.0).tolist(), bad.tolist(), cats, meta)
    return out


def test_column_decoders_change_nothing_but_speed() -> None:
    """A record decoded by its model's `ColumnDecoder` gives what the general path gives;
    what it does not accept (another column, a string in a numeric column, another
    model's events, anything invalid) takes the general path."""
    from streams.decoding import column_decoder

    numeric, categorical = ["a", "b c"], ["k"]
    more = [
        json.dumps(_event("m1", 20, a=1.5, **{"b c": None}, k="x")).encode(),
        json.dumps(_event("m1", 21, a=2, k=3.0)).encode(),  # b c missing, an int, a number as category
        json.dumps(_event("m1", 22, a=1.0, zz=4.0)).encode(),  # a column the reference lacks
        json.dumps(_event("m1", 23, **{"b c": "text"})).encode(),  # a string in a numeric column
        b"[" + b",".join(json.dumps(_event("m1", i, a=float(i), k="y")).encode() for i in range(24, 27)) + b"]",
        b"[" + b",".join(json.dumps(_event("m1", i, a=float(i), k=None)).encode() for i in range(27, 29)) + b"]",
        json.dumps({**_event("m1", 29), "extra": [1, 2]}).encode(),  # unknown top-level field: allowed
        json.dumps(_event("m1", 30, a=True)).encode(),
        json.dumps({**_event("m1", 31), "event_id": ""}).encode(),
        json.dumps(_event("m1", 32, a=[1.0])).encode(),
    ]
    records = _records() + [Record(TOPIC, 2, 100 + i, v, None, b"m1") for i, v in enumerate(more)]
    records.append(Record(TOPIC, 3, 200, json.dumps(_event("m1", 40, a=0.5)).encode(), None, b"m2"))
    fast = {b"m1": column_decoder("m1", numeric, categorical)}
    expected_groups, expected_bad = decode_by_model(FeatureEvent, records)
    groups, bad = decode_by_model(FeatureEvent, records, fast)
    assert list(groups) == list(expected_groups)
    assert _view(groups, numeric, categorical) == _view(expected_groups, numeric, categorical)
    assert _letters(bad) == _letters(expected_bad) and bad.events == expected_bad.events
    # the fast path did run (records keyed m1 whose events are m1's and fit the columns)
    kinds = {type(e.features).__name__ for _, e in groups["m1"]}
    assert kinds == {"FeatureColumns", "dict"}
    # one decoder per model and columns
    assert column_decoder("m1", numeric, categorical) is fast[b"m1"]
    assert column_decoder("m1", ["a"], categorical) is not fast[b"m1"]


def test_column_rows_read_like_feature_dicts() -> None:
    from streams.decoding import column_decoder, numeric_matrix

    decoder = column_decoder("m", ["a", "b"], ["k"])
    event = decoder.one.decode(json.dumps(_event("m", 1, a=1.0, k="z")).encode())
    assert event.features.get("a") == event.features["a"] == 1.0
    assert event.features.get("b") is None and event.features.get("nope", 5) == 5
    assert event.features["k"] == "z"
    # columns other than the decoder's (a promotion changed the reference): read by name
    matrix, bad = numeric_matrix([event.features], ["k", "a", "x"])
    assert bad.tolist() == [True] and matrix[0, 1] == 1.0


def test_a_key_whose_records_all_fit_is_decoded_as_one_group() -> None:
    """The records of each key are decoded together when every one fits its model's
    `ColumnDecoder` (single events, or batch records); one record that does not fit
    sends the batch down the one-by-one path. Either way the pairs and dead letters are
    the general path's."""
    from streams.decoding import column_decoder

    numeric = ["a"]
    singles = [Record(TOPIC, 0, i, json.dumps(_event("m1", i)).encode(), None, b"m1") for i in range(5)]
    batches = [Record(TOPIC, 1, i, b"[" + b",".join(json.dumps(_event("m2", 10 * i + j)).encode()
                                                    for j in range(3)) + b"]", None, b"m2") for i in range(3)]
    records = [r for pair in zip(singles, batches + [None] * 2) for r in pair if r is not None]
    fast = {key: column_decoder(key.decode(), numeric, []) for key in (b"m1", b"m2", b"m3")}
    unfit = [
        Record(TOPIC, 2, 0, json.dumps(_event("m3", 1, a="text")).encode(), None, b"m3"),
        Record(TOPIC, 2, 1, json.dumps(_event("m1", 2)).encode(), None, b"m3"),  # another model's key
        Record(TOPIC, 2, 2, b"[]", None, b"m3"),
    ]
    for extra in ([], *([record] for record in unfit)):
        batch = records[:3] + extra + records[3:]
        expected_groups, expected_bad = decode_by_model(FeatureEvent, batch)
        groups, rejected = decode_by_model(FeatureEvent, batch, fast)
        assert list(groups) == list(expected_groups)
        assert _view(groups, numeric, []) == _view(expected_groups, numeric, [])
        assert _letters(rejected) == _letters(expected_bad)
        assert [(r.offset, r.index) for r, _ in groups["m2"]] == [(i, j) for i in range(3) for j in range(3)]
        assert {type(e.features).__name__ for _, e in groups["m2"]} == {"FeatureColumns"}


def _general(*events: dict) -> list[FeatureEvent]:
    """Feature events as the general decoding path gives them (features: a dict)."""
    groups, _ = decode_by_model(FeatureEvent, [Record(TOPIC, 0, i, json.dumps(e).encode())
                                               for i, e in enumerate(events)])
    return [event for pairs in groups.values() for _, event in pairs]


def test_unknown_columns_are_counted_per_model_under_bounded_labels_and_their_values_dropped() -> None:
    from streams.decoding import OTHER_COLUMNS, UnknownColumns

    unknown = UnknownColumns(max_names=2)
    known = frozenset({"a"})
    events = _general(_event("m1", 0, a=1.0, blob="x" * 100_000), _event("m1", 1, a=2.0, blob="y", z=1.0),
                      _event("m1", 2, a=3.0))
    assert unknown.strip("m1", known, events) == ({"blob": 2, "z": 1}, ["blob", "z"])
    assert [e.features for e in events] == [{"a": 1.0}, {"a": 2.0}, {"a": 3.0}]  # values not kept
    # Known names are not new again; past two names, one label for the rest, logged once.
    more = _general(_event("m1", 3, a=1.0, blob=1.0, w=1.0, v=1.0), _event("m1", 4, a=1.0, u=1.0))
    assert unknown.strip("m1", known, more) == ({"blob": 1, OTHER_COLUMNS: 3}, [OTHER_COLUMNS])
    assert unknown.strip("m1", known, _general(_event("m1", 5, t=1.0))) == ({OTHER_COLUMNS: 1}, [])
    # Per model: another model has its own names; a long name is cut to a bounded label.
    long_name = "c" * 1000
    assert unknown.strip("m2", known, _general(_event("m2", 0, **{long_name: 1.0}))) == (
        {"c" * 64: 1}, ["c" * 64])
    assert unknown.strip("m1", known, _general(_event("m1", 6, a=1.0))) == ({}, [])


def test_the_monitor_counts_unknown_columns_and_still_monitors_the_event(tmp_path) -> None:
    from bench import harness as h

    reference = h.write_reference(tmp_path / "reference.csv", rows=500)
    settings = Settings(models={"m1": {"reference_path": str(reference)}})
    loop = MonitorLoop(settings, MonitorMetrics(), SimpleNamespace(latest=lambda m: None), on_fatal=print)
    columns = {c: 0.5 for c in h.COLUMNS}
    records = [Record(TOPIC, 0, i, json.dumps(_event("m1", i, **columns, **extra)).encode(), None, b"m1")
               for i, extra in enumerate([{}, {"blob": "x" * 2_000_000}, {"blob": "y", "other": 1}, {}])]
    groups, bad = decode_by_model(FeatureEvent, records, {b"m1": column_decoder("m1", h.COLUMNS, [])})
    assert not bad.rejected
    items = {"features": groups["m1"], "labelled": []}
    result = loop._advance_model("m1", items, isolate=False)
    assert not result.dead and result.runtime.monitor.events_seen == 4
    counted = loop.metrics.unknown_columns
    assert (counted.labels("m1", "blob")._value.get(), counted.labels("m1", "other")._value.get()) == (2, 1)
    assert all(set(event.features.keys()) <= set(h.COLUMNS) if isinstance(event.features, dict) else True
               for _, event in items["features"])


def test_a_state_compares_offsets_only_within_its_partition() -> None:
    """A state that holds partition 3 up to offset 999 skips offsets <= 999 of partition
    3 (replays) and nothing of partition 1 (the topic gained partitions)."""
    from detectors import ModelMonitor, ReferenceProfile
    from streams.model_state import ModelRuntime, TopicProgress

    profile = ReferenceProfile.from_frame(pd.DataFrame({"x": np.random.default_rng(0).normal(size=500)}))
    runtime = ModelRuntime.fresh("m1", "1", ModelMonitor(profile), features_topic=TOPIC, labelled_topic="l")
    runtime.state.progress[TOPIC] = TopicProgress(partition=3, last_offset=999, window_start=0)
    event = object()
    replayed = [(Record(TOPIC, 3, offset, b"{}"), event) for offset in (998, 999, 1000)]
    assert runtime.unseen(replayed) == replayed[2:]
    elsewhere = [(Record(TOPIC, 1, offset, b"{}"), event) for offset in (5, 6)]
    assert runtime.unseen(elsewhere) == elsewhere


def test_column_decoded_batches_still_dead_letter_events_outside_their_partition(tmp_path) -> None:
    """Feature events that all fit their key's ColumnDecoder skip the per-event routing
    look (their records' partitions are checked instead): a record of the model in
    another partition is still dead-lettered, event by event, and counted."""
    from confluent_kafka import Message

    from bench import harness as h

    reference = h.write_reference(tmp_path / "reference.csv", rows=500)
    settings = Settings(models={"m1": {"reference_path": str(reference)}})
    loop = _loop()
    loop.settings, loop.conf = settings, settings.monitor
    produced: list[tuple[str, bytes]] = []
    loop.producer = SimpleNamespace(produce=lambda topic, value, key, **_: produced.append((topic, value)),
                                    flush=lambda timeout: 0)
    loop.consumer.commit = lambda **_: None
    topic = settings.kafka.features_topic
    right = (murmur2(b"m1") & 0x7FFFFFFF) % 4
    wrong = (right + 1) % 4
    columns = {c: 0.5 for c in h.COLUMNS}

    def batch(partition: int, offset: int) -> Message:
        value = b"[" + b",".join(json.dumps(_event("m1", offset * 3 + i, **columns)).encode()
                                 for i in range(3)) + b"]"
        return Message(topic=topic, partition=partition, offset=offset, value=value, key=b"m1")

    loop._batch([batch(right, 0)])  # builds the model's runtime, and so its ColumnDecoder
    records, _ = loop._records([batch(right, 1), batch(wrong, 0), batch(right, 2)])
    assert decode_by_model(FeatureEvent, records[topic], loop._column_decoders())[1].by_column_decoders
    loop._batch([batch(right, 1), batch(wrong, 0), batch(right, 2)])
    letters = [json.loads(value) for t, value in produced if t == settings.kafka.dead_letter_topic]
    assert [(d["reason"], d["source_partition"], d["source_index"]) for d in letters] == [
        ("wrong_partition", wrong, i) for i in range(3)]
    assert loop.runtimes["m1"].monitor.events_seen == 9
    assert loop.metrics.partition_mismatch.labels("m1", topic)._value.get() == 3


def test_the_models_of_the_assigned_partitions_start_at_assignment_and_their_first_batch_is_column_decoded(
        tmp_path) -> None:
    """A batch is decoded by column only when every model in it has a runtime: the
    configured models whose inputs are in the assigned partitions start when the
    partitions are assigned (the others do not), so their first batch already is."""
    from confluent_kafka import TopicPartition

    from bench import harness as h

    reference = h.write_reference(tmp_path / "reference.csv", rows=500)
    models = [f"m{i}" for i in range(8)]
    settings = Settings(models={m: {"reference_path": str(reference)} for m in models})
    loop = _loop()
    loop.settings, loop.conf = settings, settings.monitor
    loop._read_states = lambda partitions: {}  # no saved state: every model starts fresh
    topic = settings.kafka.features_topic
    mine = (murmur2(b"m1") & 0x7FFFFFFF) % 4
    loop._on_assign(loop.consumer, [TopicPartition(topic, mine), TopicPartition(settings.kafka.labelled_topic, mine)])
    assert set(loop.runtimes) == {m for m in models if (murmur2(m.encode()) & 0x7FFFFFFF) % 4 == mine}
    columns = {c: 0.5 for c in h.COLUMNS}
    value = b"[" + b",".join(json.dumps(_event("m1", i, **columns)).encode() for i in range(3)) + b"]"
    records = [Record(topic, mine, 0, value, None, b"m1")]
    assert decode_by_model(FeatureEvent, records, loop._column_decoders())[1].by_column_decoders
