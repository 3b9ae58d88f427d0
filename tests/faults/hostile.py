"""Hostile feature records as hypothesis strategies, each with the dead-letter reason(s)
it must get: the oracle is written from the message contract (schemas/README.md), not
taken from the decoder under test.

`collect(n, seed)` draws n of them reproducibly (hypothesis with a fixed seed, no example
database) so that a test can produce them to the broker in one batch."""

from __future__ import annotations

import datetime as dt
import json
from typing import NamedTuple

import msgspec
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

COLUMNS = [f"f{i}" for i in range(10)]
MODEL = "m0"
REQUIRED = ("model_id", "model_version", "event_id", "timestamp", "features")
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


class Hostile(NamedTuple):
    kind: str
    key: bytes | None
    value: bytes | None  # None: a tombstone
    reasons: frozenset[str]  # what its dead letter may say
    index: int | None = None  # the bad event's position in a batch record
    valid_events: int = 0  # valid events it carries (a batch record with one bad event)
    indices: tuple[int | None, ...] | None = None  # several dead letters: each one's source_index

    @property
    def letters(self) -> tuple[int | None, ...]:
        """The source_index of each dead letter it must get."""
        return self.indices if self.indices is not None else (self.index,)


def event(n: int, model: str = MODEL, **changes: object) -> dict:
    base = {"schema_version": 1, "model_id": model, "model_version": "1", "event_id": f"h-{n}",
            "timestamp": (START + dt.timedelta(milliseconds=n)).isoformat(),
            "features": {c: float(i) / 10 for i, c in enumerate(COLUMNS)}}
    base.update(changes)
    return base


def dumps(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _parses(value: bytes) -> bool:
    try:
        msgspec.json.decode(value)
        return True
    except (msgspec.DecodeError, RecursionError):
        return False


ids = st.integers(0, 10**9)
non_strings = st.one_of(st.integers(), st.booleans(), st.lists(st.integers(), max_size=3),
                        st.floats(allow_nan=False, allow_infinity=False), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def malformed(draw) -> Hostile:
    variant = draw(st.sampled_from(["truncated", "bytes", "tombstone", "empty"]))
    if variant == "truncated":
        whole = dumps(event(draw(ids)))
        value = whole[:draw(st.integers(1, len(whole) - 1))]
    elif variant == "bytes":
        value = draw(st.binary(min_size=1, max_size=300).filter(lambda b: not _parses(b)))
    else:
        value = None if variant == "tombstone" else b""
    reasons = {"malformed_json"}
    if value and (b"NaN" in value or b"Infinity" in value):
        reasons.add("not_finite")
    if value and value.lstrip(b" \t\r\n")[:1] in set(map(bytes, zip(b'-0123456789"tfn'))):
        # msgspec checks the first value's type before the rest of the bytes: b"3\xba"
        # is "Expected `object`, got `int`", set aside all the same.
        reasons.add("wrong_type")
    return Hostile(f"malformed:{variant}", MODEL.encode(), value, frozenset(reasons))


@st.composite
def not_finite(draw) -> Hostile:
    bad = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    column = draw(st.sampled_from(COLUMNS))
    features = {c: bad if c == column else 0.5 for c in COLUMNS}
    return Hostile("not_finite", MODEL.encode(), dumps(event(draw(ids), features=features)),
                   frozenset({"not_finite"}))


@st.composite
def wrong_type(draw) -> Hostile:
    field = draw(st.sampled_from([*REQUIRED, "schema_version", "feature_text"]))
    if field == "feature_text":  # a string in a numeric column of the reference
        column = draw(st.sampled_from(COLUMNS))
        features = {c: draw(st.text(max_size=10)) if c == column else 0.5 for c in COLUMNS}
        changed = event(draw(ids), features=features)
    elif field == "schema_version":
        changed = event(draw(ids), schema_version=draw(st.one_of(st.text(max_size=5), st.booleans(),
                                                                   st.lists(st.integers(), max_size=2))))
    else:
        wrong = draw(non_strings.filter(lambda v: not isinstance(v, dict)) if field == "features" else non_strings)
        changed = event(draw(ids), **{field: wrong})
    # model_id of a wrong type: the record's key names no model either.
    return Hostile(f"wrong_type:{field}", MODEL.encode(), dumps(changed), frozenset({"wrong_type"}))


@st.composite
def missing_field(draw) -> Hostile:
    field = draw(st.sampled_from(REQUIRED))
    changed = event(draw(ids))
    del changed[field]
    return Hostile(f"missing:{field}", MODEL.encode(), dumps(changed), frozenset({"missing_field"}))


@st.composite
def future_schema(draw) -> Hostile:
    version = draw(st.integers(2, 2**31))
    return Hostile("future_schema", MODEL.encode(), dumps(event(draw(ids), schema_version=version)),
                   frozenset({"future_schema_version"}))


@st.composite
def unknown_model(draw) -> Hostile:
    name = "x-" + draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20))
    return Hostile("unknown_model", name.encode(), dumps(event(draw(ids), model=name)),
                   frozenset({"unknown_model"}))


@st.composite
def key_mismatch(draw) -> Hostile:
    key = draw(st.one_of(st.none(), st.binary(min_size=1, max_size=40).filter(lambda k: k != MODEL.encode())))
    return Hostile("key_mismatch", key, dumps(event(draw(ids))), frozenset({"key_mismatch"}))


@st.composite
def too_deep(draw) -> Hostile:
    depth = draw(st.one_of(st.just(10_000), st.integers(1_000, 20_000)))
    nested = b"[" * depth + b"]" * depth
    if draw(st.booleans()):
        value = nested  # a top-level array: read as a batch record
    else:  # deep inside an event
        head = dumps(event(draw(ids)))[:-1]
        value = head + b', "extra": ' + nested + b"}"
    return Hostile("too_deep", MODEL.encode(), value, frozenset({"too_deep"}))


@st.composite
def bad_in_batch(draw) -> Hostile:
    """A batch record of valid events with one invalid event: only that one is set aside."""
    size = draw(st.integers(2, 30))
    index = draw(st.integers(0, size - 1))
    first = draw(ids)
    events = [event(first + i) for i in range(size)]
    variant = draw(st.sampled_from(["wrong_type", "missing_field", "future_schema_version"]))
    if variant == "wrong_type":
        events[index]["features"] = draw(non_strings.filter(lambda v: not isinstance(v, dict)))
    elif variant == "missing_field":
        del events[index][draw(st.sampled_from(REQUIRED[1:]))]  # model_id names the batch's model
    else:
        events[index]["schema_version"] = draw(st.integers(2, 1000))
    return Hostile(f"batch:{variant}", MODEL.encode(), dumps(events), frozenset({variant}), index=index,
                   valid_events=size - 1)


@st.composite
def bad_batch(draw) -> Hostile:
    """A batch record whose every event is set aside (a wrong key, an unconfigured model)
    or that is set aside whole (NaN: the array does not parse as JSON)."""
    size = draw(st.integers(1, 20))
    first = draw(ids)
    variant = draw(st.sampled_from(["key_mismatch", "unknown_model", "not_finite", "mixed_models"]))
    key, model = MODEL.encode(), MODEL
    if variant == "key_mismatch":
        key = draw(st.one_of(st.none(), st.binary(min_size=1, max_size=40).filter(lambda k: k != MODEL.encode())))
    elif variant == "unknown_model":
        model = "x-" + draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=20))
        key = model.encode()
    events = [event(first + i, model=model) for i in range(size)]
    if variant == "not_finite":
        events[draw(st.integers(0, size - 1))]["features"]["f1"] = float("nan")
        return Hostile("batch_whole:not_finite", key, dumps(events), frozenset({"not_finite"}))
    if variant == "mixed_models":  # an event of another model inside m0's batch
        size = max(size, 2)
        events = [event(first + i) for i in range(size)]
        index = draw(st.integers(1, size - 1))
        events[index]["model_id"] = "m1"
        return Hostile("batch:mixed_models", key, dumps(events), frozenset({"batch_mixed_models"}), index=index,
                       valid_events=size - 1)
    return Hostile(f"batch_all:{variant}", key, dumps(events), frozenset({variant}), indices=tuple(range(size)))


# Weights: the cheap kinds often, the big ones (deep nesting) less.
HOSTILE = st.one_of(malformed(), malformed(), not_finite(), wrong_type(), wrong_type(), missing_field(),
                    future_schema(), unknown_model(), key_mismatch(), key_mismatch(), too_deep(), bad_in_batch(), bad_batch())


def collect(count: int, seed_value: int) -> list[Hostile]:
    """`count` hostile records drawn by hypothesis from a fixed seed."""
    found: list[Hostile] = []

    @seed(seed_value)
    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(HOSTILE)
    def draw(record: Hostile) -> None:
        found.append(record)

    draw()
    return found[:count]


def near_limit(size: int) -> Hostile:
    """A record of `size` bytes (an event with padding and a null event_id)."""
    head = dumps(event(0, event_id=None, padding=""))
    padding = size - len(head)
    value = dumps(event(0, event_id=None, padding="x" * padding))
    assert len(value) == size
    return Hostile("near_limit", MODEL.encode(), value, frozenset({"wrong_type"}))
