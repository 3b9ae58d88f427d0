"""Kafka records in, validated messages and numpy columns out, bad records set aside.

Decoding is msgspec's (C, one pass, validating); the per-column conversion to numpy is
one list comprehension and one `np.array` per column per model, so the Python work per
event is a few attribute reads, not a loop over its fields.

A record holds one event (a JSON object) or a batch of events of one model (a JSON
array, decoded in one msgspec call). Each event of a batch becomes its own
`(Record, event)` pair whose `Record.index` is its position in the array; the offset is
the record's, so everything offset-based (saved progress, replay skipping, trigger
windows) stays record-granular, and the events of one record are always processed in
the same micro-batch. A batch that does not decode is checked event by event: only its
invalid events are set aside (dead letter with `source_index`, `original` the event
alone); an array that does not parse at all, or is empty, is set aside whole.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain, repeat
from operator import attrgetter, itemgetter
from dataclasses import dataclass, field
from typing import ClassVar, Generic, TypeVar

import msgspec
import numpy as np

from schemas.messages import (
    DeadLetter,
    FeatureValue,
    Label,
    SchemaError,
    Scores,
    _InferenceEvent,
    decode,
    decode_batch,
    decoder_for,
)

M = TypeVar("M", bound=msgspec.Struct)


class Record(msgspec.Struct, gc=False):
    """One Kafka record, as the consumers hand it over (treat as immutable). A msgspec
    Struct: built in C (a third of a slotted dataclass's cost, once per event) and not
    tracked by the garbage collector (it holds no container)."""

    topic: str
    partition: int
    offset: int
    value: bytes  # the whole record's value, also for an event of a batch record
    index: int | None = None  # the event's position in a batch record; None: a single event
    key: bytes | None = None  # the record's key: its model_id, by the topics' contract


_raws_decoder = msgspec.json.Decoder(list[msgspec.Raw])


def _raws(value: bytes) -> list[msgspec.Raw]:
    """The events of a batch record as raw JSON, one by one (failure paths only)."""
    return _raws_decoder.decode(value)


def dead_letters(rejected: Iterable[tuple[Record, SchemaError]]) -> list[DeadLetter]:
    """Dead letters carrying the record, or the one event of a batch record. A batch
    record is split once per call however many of its events are set aside; nothing is
    cached between calls, so the monitor's thread and the join's never share state."""
    splits: dict[int, list[msgspec.Raw]] = {}
    letters = []
    for record, error in rejected:
        original = record.value
        if record.index is not None:
            raws = splits.get(id(record.value))
            if raws is None:
                raws = splits[id(record.value)] = _raws(record.value)
            original = bytes(raws[record.index])
        letters.append(DeadLetter.for_failure(
            error, topic=record.topic, partition=record.partition, offset=record.offset,
            original=original, index=record.index,
            key=None if record.key is None else record.key.decode("utf-8", "replace")))
    return letters


def dead_letter(record: Record, error: SchemaError) -> DeadLetter:
    return dead_letters([(record, error)])[0]


def letter_key(letter: DeadLetter) -> bytes | None:
    """A dead letter is keyed like its source record, so it lands in that model's partition."""
    return None if letter.source_key is None else letter.source_key.encode()


@dataclass(slots=True)
class Decoded(Generic[M]):
    valid: list[tuple[Record, M]] = field(default_factory=list)
    rejected: list[tuple[Record, SchemaError]] = field(default_factory=list)
    # `decode_by_model`: every event was decoded by its record key's `ColumnDecoder`, so
    # each model's events have its model_id as record key and no unknown column.
    by_column_decoders: bool = False

    def reject(self, record: Record, error: SchemaError) -> None:
        self.rejected.append((record, error))

    @property
    def dead(self) -> list[DeadLetter]:
        return dead_letters(self.rejected)

    @property
    def events(self) -> int:
        """Events read (valid or set aside; a record set aside whole counts once)."""
        return len(self.valid) + len(self.rejected)


_WHITESPACE = b" \t\r\n"


def is_batch(value: bytes) -> bool:
    first = value[:1]
    if first and first in _WHITESPACE:
        first = value.lstrip()[:1]
    return first == b"["


def decode_records(message_type: type[M], records: Iterable[Record]) -> Decoded[M]:
    out: Decoded[M] = Decoded()
    decoder = decoder_for(message_type)
    valid = out.valid
    for record in records:
        # The common case inline (one valid JSON object): no Python call but msgspec's.
        if record.value[:1] == b"{":
            try:
                valid.append((record, decoder.decode(record.value)))
                continue
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                pass  # decode_record names the reason
        decode_record(message_type, record, out)
    return out


class FeatureColumns(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Base of the per-model `features` structs of `ColumnDecoder`: one field per
    reference column (JSON name: the column's; attribute: `c0`, `c1`, ...), read like
    the dict a `FeatureEvent` holds (`get`, `[]`)."""

    _attrs: ClassVar[dict[str, str]] = {}
    numeric_columns: ClassVar[tuple[str, ...]] = ()
    numeric_getter: ClassVar[Callable[[object], object] | None] = None

    def get(self, name: str, default: object = None) -> object:
        attr = self._attrs.get(name)
        return default if attr is None else getattr(self, attr)

    def __getitem__(self, name: str) -> object:
        return getattr(self, self._attrs[name])


@dataclass(frozen=True, slots=True)
class ColumnDecoder:
    """A faster, equally strict decoder of one model's feature events.

    The event's `features` become a struct of the model's reference columns instead of
    a dict (msgspec builds no dict and no key strings), numeric columns typed
    `float | None`. It accepts a subset of what `FeatureEvent` accepts: an event with a
    column the reference lacks, or a string in a numeric column, fails here and is
    decoded again by the general path, which handles (or sets aside) it exactly as
    before. The numeric columns come out of the structs in one C loop
    (`numeric_matrix`)."""

    model_id: str
    one: msgspec.json.Decoder
    many: msgspec.json.Decoder


_column_decoders: dict[tuple, ColumnDecoder] = {}


def column_decoder(model_id: str, numeric: Sequence[str], categorical: Sequence[str]) -> ColumnDecoder:
    """The (cached) `ColumnDecoder` of a model and its reference columns."""
    cache_key = (model_id, tuple(numeric), tuple(categorical))
    found = _column_decoders.get(cache_key)
    if found is not None:
        return found
    names = [*numeric, *categorical]
    fields = [(f"c{i}", float | None if i < len(numeric) else FeatureValue, msgspec.field(default=None, name=name))
              for i, name in enumerate(names)]
    columns = msgspec.defstruct("FeatureColumns", fields, bases=(FeatureColumns,),
                                forbid_unknown_fields=True, gc=False)
    columns._attrs = {name: f"c{i}" for i, name in enumerate(names)}
    columns.numeric_columns = tuple(numeric)
    attrs = [f"c{i}" for i in range(len(numeric))]
    columns.numeric_getter = attrgetter(*attrs) if len(attrs) > 1 else None
    event = msgspec.defstruct("ColumnFeatureEvent", [("features", columns), ("prediction", Label | None, None),
                                                      ("scores", Scores | None, None)],
                              bases=(_InferenceEvent,), kw_only=True, gc=False)
    if len(_column_decoders) > 1024:
        _column_decoders.clear()
    found = _column_decoders[cache_key] = ColumnDecoder(
        model_id, msgspec.json.Decoder(event), msgspec.json.Decoder(list[event]))
    return found


_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)


def decode_by_model(
    message_type: type[M], records: Sequence[Record], fast: Mapping[bytes | None, ColumnDecoder] | None = None
) -> tuple[dict[str, list], Decoded[M]]:
    """`decode_records` with the valid events grouped per model in the same pass:
    `({model_id: [(Record, event), ...] in record order}, Decoded)` where `Decoded`
    holds only what was set aside and `Decoded.valid` stays empty.

    `fast` (feature events): a `ColumnDecoder` per record key. The records of each key
    are decoded with their model's together, by C loops (this runs for every event),
    when they are all single events (or all batch records) that fit it, of that model.
    If one does not, the batch is decoded one record at a time, each trying its key's
    `ColumnDecoder` first."""
    out: Decoded[M] = Decoded()
    if fast:
        by_key: dict[bytes | None, list[Record]] = {}
        for record in records:
            same_key = by_key.get(record.key)
            if same_key is None:
                same_key = by_key[record.key] = []
            same_key.append(record)
        groups: dict[str, list] = {}
        for key, same_key in by_key.items():
            columns = fast.get(key)
            pairs = None if columns is None else _decode_fast(columns, same_key)
            if pairs is None:
                break
            groups[columns.model_id] = pairs
        else:
            out.by_column_decoders = True
            return groups, out
    groups = {}
    _decode_one_by_one(message_type, records, groups, out, fast or {})
    return groups, out


def _decode_fast(columns: ColumnDecoder, records: list[Record]) -> list[tuple[Record, object]] | None:
    """The records of one model's key decoded by its `ColumnDecoder`, or None if any
    is not a valid event (batch) of that model."""
    values = list(map(_value, records))
    try:
        if values[0][:1] == b"{":
            events = list(map(columns.one.decode, values))
            pairs = list(zip(records, events))
        else:
            batches = list(map(columns.many.decode, values))
            if not all(batches):  # an empty batch record is set aside
                return None
            pairs = []
            for record, events in zip(records, batches):
                n = len(events)
                pairs.extend(zip(map(Record, repeat(record.topic, n), repeat(record.partition, n),
                                     repeat(record.offset, n), repeat(record.value, n), range(n),
                                     repeat(record.key, n)), events))
            events = list(chain.from_iterable(batches))
    except _DECODE_ERRORS:
        return None
    if list(map(_model_id, events)).count(columns.model_id) != len(events):
        return None
    return pairs


def _decode_one_by_one(message_type: type[M], records: Iterable[Record], groups: dict[str, list],
                       out: Decoded[M], fast: Mapping[bytes | None, ColumnDecoder]) -> None:
    decoder = decoder_for(message_type)
    valid = out.valid
    for record in records:
        columns = fast.get(record.key)
        if columns is not None:
            pairs = _decode_fast(columns, [record])
            if pairs:
                groups.setdefault(columns.model_id, []).extend(pairs)
                continue
        value = record.value
        if value[:1] == b"{":  # one event, inline as in decode_records
            try:
                event = decoder.decode(value)
            except _DECODE_ERRORS:
                pass
            else:
                pairs = groups.get(event.model_id)  # type: ignore[attr-defined]
                if pairs is None:
                    pairs = groups[event.model_id] = []  # type: ignore[attr-defined]
                pairs.append((record, event))
                continue
        decode_record(message_type, record, out)
        if valid:  # one event, or a batch record's events (all of one model)
            model_id = valid[0][1].model_id  # type: ignore[attr-defined]
            pairs = groups.get(model_id)
            if pairs is None:
                groups[model_id] = valid[:]
            else:
                pairs.extend(valid)
            valid.clear()


def decode_record(message_type: type[M], record: Record, out: Decoded[M]) -> None:
    """One record's events into `out`: one event, or every event of a batch record."""
    value = record.value
    if not is_batch(value):
        try:
            out.valid.append((record, decode(message_type, value)))
        except SchemaError as error:
            out.reject(record, error)
        return
    topic, partition, offset, key = record.topic, record.partition, record.offset, record.key
    try:
        events = decode_batch(message_type, value)
    except SchemaError:
        events = None
    if events is not None:
        n = len(events)
        if not n:
            out.reject(record, SchemaError("empty_batch", "a batch record holds no event"))
            return
        if list(map(_model_id, events)).count(events[0].model_id) == n:  # type: ignore[attr-defined]
            # Every event valid and of one model (the common case): records and pairs
            # are built by C loops, no Python code runs per event.
            out.valid.extend(zip(map(Record, repeat(topic, n), repeat(partition, n), repeat(offset, n),
                                     repeat(value, n), range(n), repeat(key, n)), events))
            return
        items: list[tuple[int, M]] = list(enumerate(events))
    else:
        # Some event is invalid (or the array does not parse): find which, one by one.
        try:
            raws = _raws(value)
        except (msgspec.DecodeError, RecursionError) as error:
            out.reject(record, _batch_error(value, error))
            return
        items = []
        for i, raw in enumerate(raws):
            try:
                items.append((i, decode(message_type, bytes(raw))))
            except SchemaError as error:
                out.reject(Record(topic, partition, offset, value, i, key), error)
        if not items:
            return
    model_id = items[0][1].model_id  # type: ignore[attr-defined]
    valid = out.valid
    for i, event in items:
        if event.model_id == model_id:  # type: ignore[attr-defined]
            valid.append((Record(topic, partition, offset, value, i, key), event))
        else:
            out.reject(Record(topic, partition, offset, value, i, key), SchemaError(
                "batch_mixed_models",
                f"event of model {event.model_id!r} in a batch record of model {model_id!r}"))  # type: ignore[attr-defined]


_model_id = attrgetter("model_id")
_value = attrgetter("value")
_features = attrgetter("features")
_prediction = attrgetter("prediction")  # feature events: both fields, None when absent
_scores = attrgetter("scores")

UNKNOWN_COLUMN_NAMES = 20  # tracked per model; the rest are counted under OTHER_COLUMNS
OTHER_COLUMNS = "_other"
COLUMN_NAME_CHARS = 64  # of an unknown column's name kept as a label


class UnknownColumns:
    """Feature columns that a model's reference does not know. The monitor never reads
    them, so their values are dropped from the decoded events (one large unknown column
    must not stay in memory); the events carrying each are counted per model, under the
    column's name (its first `COLUMN_NAME_CHARS`) for the first `max_names` names of a
    model, under `OTHER_COLUMNS` after that: the labels stay bounded. Only events of
    the general decoding path hold a dict that may have them: a `ColumnDecoder`'s
    struct has the reference's columns only."""

    def __init__(self, max_names: int = UNKNOWN_COLUMN_NAMES) -> None:
        self.max_names = max_names
        self._names: dict[str, set[str]] = {}
        self._overflowed: set[str] = set()  # models past `max_names`

    def strip(self, model_id: str, known: frozenset[str], events: Sequence[object]) -> tuple[dict[str, int], list[str]]:
        """Drops the unknown columns of `events` (feature events of `model_id`); returns
        the events per label, and the labels this model has not shown before (to be
        logged once)."""
        counts: dict[str, int] = {}
        new: list[str] = []
        kinds = list(map(type, map(_features, events)))  # C loops: the common case ends here
        if dict not in kinds:
            return counts, new
        tracked = self._names.setdefault(model_id, set())
        for features in map(_features, events):
            if type(features) is not dict or features.keys() <= known:
                continue
            for name in [name for name in features if name not in known]:
                del features[name]
                label = name[:COLUMN_NAME_CHARS]
                if label not in tracked:
                    if len(tracked) < self.max_names:
                        tracked.add(label)
                        new.append(label)
                    else:
                        label = OTHER_COLUMNS
                        if model_id not in self._overflowed:
                            self._overflowed.add(model_id)
                            new.append(label)
                counts[label] = counts.get(label, 0) + 1
        return counts, new


def _batch_error(value: bytes, error: Exception) -> SchemaError:
    if isinstance(error, RecursionError):
        return SchemaError("too_deep", str(error))
    reason = "not_finite" if b"NaN" in value or b"Infinity" in value else "malformed_json"
    return SchemaError(reason, str(error))


def numeric_matrix(
    rows: Sequence[dict[str, object]], columns: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(n, len(columns)) float64 with NaN for missing values, and a boolean mask of the
    rows holding a string where the column is numeric (those rows are not usable)."""
    bad = np.zeros(len(rows), dtype=bool)
    if rows and columns:
        # Rows decoded by one `ColumnDecoder` for these columns: numbers or None only,
        # read by one attrgetter per row in a C loop.
        kind = type(rows[0])
        getter = getattr(kind, "numeric_getter", None)
        if (getter is not None and kind.numeric_columns == tuple(columns)
                and list(map(type, rows)).count(kind) == len(rows)):
            try:  # no missing value: straight into the array
                return np.fromiter(chain.from_iterable(map(getter, rows)), dtype=np.float64,
                                   count=len(rows) * len(columns)).reshape(len(rows), len(columns)), bad
            except TypeError:  # None, a missing value: NaN
                return np.array(list(map(getter, rows)), dtype=np.float64), bad
    if columns:
        # Fast path, C loops only: every row has every column, and no value is a string.
        row_values = itemgetter(*columns) if len(columns) > 1 else lambda row: (row[columns[0]],)
        try:
            flat = list(chain.from_iterable(map(row_values, rows)))
        except KeyError:
            flat = None
        if flat is not None and str not in set(map(type, flat)):
            # None becomes NaN: missing values are counted by the detectors, not guessed.
            return np.array(flat, dtype=np.float64).reshape(len(rows), len(columns)), bad
    matrix = np.empty((len(rows), len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        values = [row.get(name) for row in rows]
        if str in set(map(type, values)):
            is_text = np.fromiter((type(v) is str for v in values), dtype=bool, count=len(values))
            bad |= is_text
            values = [None if text else v for v, text in zip(values, is_text)]
        matrix[:, j] = np.array(values, dtype=np.float64)
    return matrix, bad


def categorical_columns(
    rows: Sequence[dict[str, object]], columns: Sequence[str]
) -> dict[str, np.ndarray]:
    if not columns:  # no pass over the rows (this runs per model and batch)
        return {}
    kind = type(rows[0]) if rows else None
    if isinstance(kind, type) and issubclass(kind, FeatureColumns) and list(map(type, rows)).count(kind) == len(rows):
        values = {name: list(map(attrgetter(kind._attrs[name]), rows)) if name in kind._attrs else [None] * len(rows)
                  for name in columns}
    else:
        values = {name: [row.get(name) for row in rows] for name in columns}
    return {
        name: np.array([None if v is None else str(v) for v in values[name]], dtype=object)
        for name in columns
    }


def model_outputs(events: Sequence[object]) -> tuple[np.ndarray | None, list | None]:
    """The model's outputs that feature events carry (`prediction`, `scores`): the
    predictions as given (an object array; None where absent) and the scores (None
    where absent); (None, None) when no event carries any."""
    predictions = list(map(_prediction, events))  # C loops: this runs for every event
    if predictions.count(None) == len(predictions):
        return None, None
    return np.array(predictions, dtype=object), list(map(_scores, events))


def label_values(labels: Sequence[object]) -> np.ndarray:
    """Regression targets as floats; class labels that are strings become stable numeric
    codes (CRC-32), so equality, all that accuracy needs, is preserved."""
    if str not in set(map(type, labels)):
        return np.array(labels, dtype=np.float64)
    return np.array(
        [float(zlib.crc32(v.encode())) if isinstance(v, str) else v for v in labels],
        dtype=np.float64,
    )
