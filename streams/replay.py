"""`driftline replay`: a time range of the features and labelled topics through the
streaming core, as the worker ran it.

    driftline replay --topic T [--topic T2 ...] --from TIME --to TIME [--model M]
        --output TRIGGERS.jsonl [--report REPORT.html] [--min-severity S]
        [--sample-every N] [--no-progress] [--config FILE] [--score-column SCORE]

TIME is RFC 3339 with a zone (`2026-01-01T12:00:00Z`) or epoch seconds. The range is of
Kafka record timestamps: per partition, the offsets from the first record at or after
`--from` up to, not including, the first record at or after `--to` (`offsets_for_times`),
so what is read is a contiguous stretch of each partition.

Each model is fed the way the worker feeds it (`streams.model_state.ModelRuntime`, the
configured reference of `settings.models`, `settings.detectors`): its events in offset
order per partition, feature events to `update_features`, labelled records to
`update_labelled`. The detectors' decisions do not depend on how the events are cut
into micro-batches, nor on how feature and labelled batches interleave (the two sides
share no state), so a replay of the topics a fresh worker consumed gives that worker's
triggers, with the same `trigger_id`s. Not reproduced: promotions (a worker that
re-baselined on a promoted model compares against another reference from then on; the
replay always uses the configured one) and a worker resumed from an older saved state.
`--score-column` names the reference's positive-class probability column of every model
replayed (the setting `models.<id>.score_column` by default): feature events that carry
`prediction` and `scores` then feed the performance estimated without labels.

Writes one JSON line per trigger at or above `--min-severity` (the worker's
`monitor.min_severity` by default), in event-time order: the fields of
`driftline backtest` (`offset` counting the model's events of that source in the
replay) plus `trigger_id`, `model_id`, `model_version`, `topic`, `partition`,
`kafka_offset` and `event_time`. Records that do not decode, name an unconfigured model
or hold text in a numeric column are counted by reason, as the worker dead-letters them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.messages import FeatureEvent, LabelledRecord
from streams.backtest import trigger_line, write_triggers
from schemas.errors import UsageError
from streams.references import ReferenceUnavailable, profile_from_settings
from streams.report import MAX_TRIGGER_DETAILS, Timeline, column_distributions, write_report
from detectors.severity import SEVERITIES, at_least

if TYPE_CHECKING:  # the statistics load when the replay runs, not for --help
    from detectors import DetectorConfig, ReferenceProfile
    from schemas.settings import KafkaSettings, ModelSettings, Settings
    from streams.decoding import Record
    from streams.model_state import Firing, ModelRuntime

FETCH_MESSAGES = 10_000  # records per consume call
KAFKA_TIMEOUT_SECONDS = 10.0  # metadata, offsets and watermarks
STALL_SECONDS = 30.0  # no record although the range is not read to its end
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", action="append", required=True, dest="topics", metavar="TOPIC",
                        help="the features or labelled topic of the settings (repeatable)")
    parser.add_argument("--from", required=True, dest="start", metavar="TIME",
                        help="start of the range (RFC 3339 with a zone, or epoch seconds), inclusive")
    parser.add_argument("--to", required=True, dest="end", metavar="TIME",
                        help="end of the range, exclusive")
    parser.add_argument("--model", action="append", dest="models", metavar="MODEL",
                        help="replay only this model (repeatable; default: every configured model)")
    parser.add_argument("--output", required=True, help="where to write the triggers (JSON lines)")
    parser.add_argument("--report", help="also write an HTML report with plots here")
    parser.add_argument("--min-severity", choices=SEVERITIES, default=None,
                        help="write triggers at or above this (default: the worker's monitor.min_severity)")
    parser.add_argument("--sample-every", type=int, default=None, metavar="N",
                        help="report: sample the statistics every N events of a model "
                             "(default: the KS stride)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--score-column", help="the references' positive-class probability column "
                        "(default: each model's score_column setting)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    kafka = settings.kafka
    start, end = parse_time(args.start, "--from"), parse_time(args.end, "--to")
    if start >= end:
        raise UsageError(f"--from ({start.isoformat()}) must be before --to ({end.isoformat()})")
    topics = list(dict.fromkeys(args.topics))
    roles = {kafka.features_topic: "features", kafka.labelled_topic: "labelled"}
    for topic in topics:
        if topic not in roles:
            raise UsageError(
                f"topic {topic!r} is neither the features topic ({kafka.features_topic!r}) nor the "
                f"labelled topic ({kafka.labelled_topic!r}) of the settings")
    models = _select_models(settings.models, args.models)
    if args.score_column:
        models = {k: m.model_copy(update={"score_column": args.score_column}) for k, m in models.items()}
    sample_every = args.sample_every or settings.detectors.ks_stride
    if sample_every < 1:
        raise UsageError("--sample-every must be at least 1")
    for path in filter(None, (args.output, args.report)):
        if not Path(path).parent.is_dir():
            raise UsageError(f"{path}: the directory {Path(path).parent} does not exist")
    min_severity = args.min_severity or settings.monitor.min_severity

    replayer = Replayer(
        models, settings.detectors, kafka, min_severity=min_severity, configured=settings.models,
        sample_every=sample_every if args.report else None,
    )
    source = KafkaRange(kafka)
    try:
        spans = source.plan(topics, start, end)
        progress = _progress(sum(s.count for s in spans), disable=args.no_progress)
        try:
            for records in source.read(spans, progress.update):
                replayer.feed(records)
        finally:
            progress.close()
    finally:
        source.close()
    result = replayer.finish()
    write_triggers(Path(args.output), result.triggers)
    if args.report:
        summary = [
            ("topics", ", ".join(topics)),
            ("range (Kafka record time)", f"{start.isoformat()} to {end.isoformat()} (exclusive)"),
            ("offsets", "; ".join(str(s) for s in spans if s.count) or "none"),
            *result.summary_rows(),
            ("minimum severity written", min_severity),
            ("detector settings", ", ".join(f"{k}={v}" for k, v in settings.detectors.to_dict().items())),
        ]
        write_report(args.report, f"driftline replay of {', '.join(topics)}", summary,
                     result.timelines, result.triggers)
    print(result.describe(args.output, args.report))
    return 0


# -- arguments -----------------------------------------------------------------------------
def parse_time(text: str, option: str) -> dt.datetime:
    """RFC 3339 with a zone, or epoch seconds, as an aware UTC datetime.

    >>> parse_time("2026-01-01T01:00:00+01:00", "--from").isoformat()
    '2026-01-01T00:00:00+00:00'
    >>> parse_time("1767225600", "--to").isoformat()
    '2026-01-01T00:00:00+00:00'
    """
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or seconds < 0:
            raise UsageError(f"{option} {text!r}: epoch seconds must be a finite number >= 0")
        return _EPOCH + dt.timedelta(seconds=seconds)
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: not a time; give RFC 3339 (2026-01-01T12:00:00Z) or epoch seconds"
        ) from None
    if value.tzinfo is None:
        raise UsageError(f"{option} {text!r}: give a time zone (Z or +01:00)")
    return value.astimezone(dt.timezone.utc)


def _select_models(configured: dict[str, ModelSettings], wanted: list[str] | None) -> dict[str, ModelSettings]:
    if not configured:
        raise UsageError("no model is configured (settings [models.NAME] with a reference_path)")
    if not wanted:
        return dict(configured)
    unknown = [m for m in wanted if m not in configured]
    if unknown:
        raise UsageError(f"model {unknown[0]!r} is not configured (configured: {', '.join(sorted(configured))})")
    return {m: configured[m] for m in dict.fromkeys(wanted)}


def _progress(total: int, *, disable: bool):
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, CI)
    return tqdm(total=total, unit="rec", unit_scale=True, desc="replay", file=sys.stderr,
                disable=True if disable else None, dynamic_ncols=True)


# -- Kafka ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Span:
    """Offsets `start` up to, not including, `end` of one partition."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def count(self) -> int:
        return max(0, self.end - self.start)

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]:{self.start}-{self.end - 1}"


class KafkaRange:
    """Reads partitions' offset ranges with a group-less, assign-only consumer (it commits
    nothing and joins no group, so it does not disturb the worker's)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        from confluent_kafka import Consumer

        self.bootstrap = kafka.bootstrap_servers
        self._errors: list[str] = []
        self.consumer = Consumer({
            **kafka.client_config(),
            "group.id": f"driftline-replay-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "allow.auto.create.topics": False,
            "error_cb": lambda error: self._errors.append(_kafka_text(error)),
            "log_level": 0,  # connection errors become our one line, not librdkafka's log
        })

    def plan(self, topics: Sequence[str], start: dt.datetime, end: dt.datetime) -> list[Span]:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            metadata = self.consumer.list_topics(timeout=KAFKA_TIMEOUT_SECONDS)
        except KafkaException as exc:
            raise UsageError(f"cannot reach Kafka at {self.bootstrap} ({self._reason(exc)})") from None
        start_ms, end_ms = _millis(start), _millis(end)
        spans = []
        for topic in topics:
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                raise UsageError(f"topic {topic!r} does not exist on {self.bootstrap}")
            partitions = sorted(metadata.topics[topic].partitions)
            try:
                firsts = self.consumer.offsets_for_times(
                    [TopicPartition(topic, p, start_ms) for p in partitions], timeout=KAFKA_TIMEOUT_SECONDS)
                lasts = self.consumer.offsets_for_times(
                    [TopicPartition(topic, p, end_ms) for p in partitions], timeout=KAFKA_TIMEOUT_SECONDS)
                highs = [self.consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                             timeout=KAFKA_TIMEOUT_SECONDS)[1]
                         for p in partitions]
            except KafkaException as exc:
                raise UsageError(f"{topic}: offsets for the times not found ({self._reason(exc)})") from None
            for first, last, high in zip(firsts, lasts, highs):
                # -1: no record at or after the time; the range runs to the end
                begin = first.offset if first.offset >= 0 else high
                stop = last.offset if last.offset >= 0 else high
                spans.append(Span(topic, first.partition, begin, max(begin, stop)))
        return spans

    def read(self, spans: Iterable[Span], advanced: Callable[[int], Any]) -> Iterable[list[Record]]:
        """Each span's records in offset order, a fetch at a time; `advanced(n)` is told
        how many offsets each fetch covered."""
        from confluent_kafka import TopicPartition

        from streams.decoding import Record

        for span in spans:
            if not span.count:
                continue
            self.consumer.assign([TopicPartition(span.topic, span.partition, span.start)])
            position, idle_since = span.start, None
            while position < span.end:
                messages = self.consumer.consume(FETCH_MESSAGES, timeout=1.0)
                records = []
                for message in messages:
                    if message.error() is not None:
                        if message.error().code() == -191:  # _PARTITION_EOF
                            continue
                        raise UsageError(f"{span.topic}[{span.partition}]: {message.error().str()}")
                    if message.offset() >= span.end:
                        break
                    records.append(Record(message.topic(), message.partition(), message.offset(),
                                          message.value() or b""))
                if records:
                    idle_since = None
                    new_position = records[-1].offset + 1
                    advanced(new_position - position)
                    position = new_position
                    yield records
                    if len(records) < len(messages):
                        break  # reached the end of the span
                    continue
                # Nothing: gaps (compaction, transaction markers) may end the span early.
                if self._high(span) <= position or self._next(span) >= span.end:
                    break
                idle_since = idle_since or _monotonic()
                if _monotonic() - idle_since > STALL_SECONDS:
                    raise UsageError(f"{span}: no record after offset {position - 1} in {STALL_SECONDS:.0f} s")
            if position < span.end:
                advanced(span.end - position)
            self.consumer.unassign()

    def _high(self, span: Span) -> int:
        from confluent_kafka import TopicPartition

        return self.consumer.get_watermark_offsets(
            TopicPartition(span.topic, span.partition), timeout=KAFKA_TIMEOUT_SECONDS, cached=False)[1]

    def _next(self, span: Span) -> int:
        from confluent_kafka import TopicPartition

        [tp] = self.consumer.position([TopicPartition(span.topic, span.partition)])
        return tp.offset

    def _reason(self, exc: Exception) -> str:
        return self._errors[-1] if self._errors else _kafka_text(exc.args[0] if exc.args else exc)

    def close(self) -> None:
        self.consumer.close()


def _kafka_text(error: Any) -> str:
    """A `KafkaError`'s own words, not its repr."""
    return error.str() if hasattr(error, "str") else str(error)


def _utc(value: dt.datetime) -> dt.datetime:
    """Event times without a zone are taken for UTC."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _millis(value: dt.datetime) -> int:
    return int((value - _EPOCH) // dt.timedelta(milliseconds=1))


def _monotonic() -> float:
    import time

    return time.monotonic()


# -- the replay itself (no Kafka, no clock) ----------------------------------------------
@dataclass
class _Model:
    runtime: ModelRuntime
    timeline: Timeline | None
    seen: dict[str, int] = field(default_factory=lambda: {"features": 0, "labelled": 0})
    latest: dict[str, dt.datetime | None] = field(default_factory=lambda: {"features": None, "labelled": None})
    partitions: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    # with a timeline: the features of the last feature events the monitor took (at most
    # a window's worth after each piece), for the report's distributions at a trigger
    recent: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReplayResult:
    triggers: list[dict[str, Any]]
    timelines: list[Timeline]
    records: int
    events: Counter
    invalid: Counter
    suppressed: int
    other_models: int
    warnings: list[str]

    def summary_rows(self) -> list[tuple[str, str]]:
        return [
            ("records read", str(self.records)),
            ("events replayed", ", ".join(f"{k} {n}" for k, n in sorted(self.events.items())) or "0"),
            ("invalid records", _counts(self.invalid)),
            ("records of other models", str(self.other_models)),
            ("triggers written", str(len(self.triggers))),
            ("triggers below the minimum severity", str(self.suppressed)),
            *(("warning", w) for w in self.warnings),
        ]

    def describe(self, output: str, report: str | None) -> str:
        lines = [f"{self.records} records, {sum(self.events.values())} events replayed, "
                 f"{sum(self.invalid.values())} invalid ({_counts(self.invalid)}), "
                 f"{len(self.triggers)} trigger(s) (wrote {output}{', ' + report if report else ''})"]
        lines += [f"  {t['event_time']}  {t['model_id']:<12} {t['severity']:<8} {t['reason']}"
                  for t in self.triggers]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _counts(counter: Counter) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(counter.items())) or "none"


class Replayer:
    """Feeds records to one `ModelRuntime` per model, exactly as the worker's monitor
    agent does, and collects the triggers (and, with `sample_every`, the timelines of the
    report: a snapshot every `sample_every` events of each model and source)."""

    def __init__(
        self, models: dict[str, ModelSettings], config: DetectorConfig, kafka: KafkaSettings, *,
        min_severity: str = "LOW", sample_every: int | None = None,
        configured: Iterable[str] = (),
        profile_of: Callable[[str, ModelSettings], ReferenceProfile] | None = None,
    ) -> None:
        self.models_settings, self.config = models, config
        self.configured = frozenset(configured)  # every configured model, `models` a part of them
        self.topics = {kafka.features_topic: "features", kafka.labelled_topic: "labelled"}
        self.features_topic, self.labelled_topic = kafka.features_topic, kafka.labelled_topic
        self.min_severity, self.sample_every = min_severity, sample_every
        self._window = max(config.ks_window, config.categorical_window)  # events kept in `_Model.recent`
        self._profile_of = profile_of or self._configured_profile
        self.models: dict[str, _Model] = {}
        self.triggers: list[tuple[tuple, dict[str, Any]]] = []  # (sort key, line)
        self.records = 0
        self.events: Counter = Counter()
        self.invalid: Counter = Counter()
        self.suppressed = 0
        self.other_models = 0

    def _configured_profile(self, model_id: str, model: ModelSettings) -> ReferenceProfile:
        try:
            return profile_from_settings(model, self.config)
        except ReferenceUnavailable as error:
            raise UsageError(f"model {model_id!r}: {error}") from None

    def _model(self, model_id: str) -> _Model:
        model = self.models.get(model_id)
        if model is None:
            settings = self.models_settings[model_id]
            from detectors import ModelMonitor
            from streams.model_state import ModelRuntime

            monitor = ModelMonitor(self._profile_of(model_id, settings), self.config, settings.task)
            runtime = ModelRuntime.fresh(model_id, "configured", monitor, features_topic=self.features_topic,
                                         labelled_topic=self.labelled_topic)
            timeline = Timeline(model_id, settings.task, x_label="event time (UTC)",
                                labelled_warmup=self.config.concept_baseline_size) \
                if self.sample_every else None
            model = self.models[model_id] = _Model(runtime, timeline)
        return model

    def feed(self, records: Sequence[Record]) -> None:
        """Records of one topic, in offset order per partition."""
        from streams.decoding import decode_records

        if not records:
            return
        self.records += len(records)
        kind = self.topics[records[0].topic]
        decoded = decode_records(FeatureEvent if kind == "features" else LabelledRecord, records)
        self.invalid.update(letter.reason for letter in decoded.dead)
        per_model: dict[str, list] = defaultdict(list)
        for record, event in decoded.valid:
            per_model[event.model_id].append((record, event))
        for model_id, items in per_model.items():
            if model_id not in self.models_settings:
                if model_id in self.configured:  # left out by --model
                    self.other_models += len(items)
                else:
                    self.invalid["unknown_model"] += len(items)
                continue
            self._apply(self._model(model_id), kind, items)

    def _apply(self, model: _Model, kind: str, items: list) -> None:
        runtime = model.runtime
        model.partitions[kind].update({record.partition for record, _ in items})
        apply = runtime.apply_features if kind == "features" else runtime.apply_labelled
        for piece in self._pieces(model, kind, items):
            fired, rejected = apply(piece)
            self.invalid.update(error.reason for _, error in rejected)
            self.events[kind] += len(piece) - len(rejected)
            before = model.latest[kind]
            if model.timeline is not None and kind == "features":
                dropped = {id(record) for record, _ in rejected}
                model.recent.extend(event.features for record, event in piece if id(record) not in dropped)
            for firing in fired:
                self._emit(model, kind, firing, before)
            del model.recent[:-self._window]
            model.seen[kind] += len(piece)
            times = [_utc(event.timestamp) for _, event in piece]
            model.latest[kind] = max(times) if before is None else max(before, *times)
            if model.timeline is not None and model.seen[kind] % self.sample_every == 0:
                self._sample(model, kind)

    def _pieces(self, model: _Model, kind: str, items: list) -> Iterable[list]:
        """`items` cut where a model's count reaches a multiple of `sample_every`, so the
        report's samples do not depend on how the records were fetched."""
        if not self.sample_every:
            yield items
            return
        start = 0
        while start < len(items):
            room = self.sample_every - model.seen[kind] % self.sample_every
            yield items[start:start + room]
            start += room

    def _sample(self, model: _Model, kind: str) -> None:
        x = model.latest[kind]
        if x is None:
            return
        snapshot = model.runtime.monitor.snapshot()
        if kind == "features":
            model.timeline.sample_features(x, snapshot)
        else:
            model.timeline.sample_labelled(x, snapshot)

    def _emit(self, model: _Model, kind: str, firing: Firing, before: dt.datetime | None) -> None:
        record = firing.at
        at = _utc(firing.event_time)
        line = trigger_line(firing.decision, firing.decision.offset, kind)
        line.update(
            trigger_id=firing.trigger_id, model_id=firing.model_id, model_version=firing.model_version,
            topic=record.topic, partition=record.partition, kafka_offset=record.offset,
            event_time=at.isoformat(),
        )
        if model.timeline is not None:
            distributions = self._distributions(model, firing) \
                if kind == "features" and len(model.timeline.marks) < MAX_TRIGGER_DETAILS else None
            model.timeline.mark(at if before is None else max(before, at), line, distributions)
        if at_least(firing.decision.severity, self.min_severity):
            self.triggers.append(((at, firing.model_id, record.topic, record.partition, record.offset), line))
        else:
            self.suppressed += 1

    def _distributions(self, model: _Model, firing: Firing):
        """The named columns' reference against the window of events up to the firing one."""
        monitor = model.runtime.monitor
        # the last of `recent` is the monitor's event events_seen - 1
        end = len(model.recent) - (monitor.events_seen - firing.decision.offset) + 1
        rows = model.recent[max(0, end - self._window):end]
        columns = firing.decision.columns
        return column_distributions(monitor.profile, self.config, columns,
                                    {c: [row.get(c) for row in rows] for c in columns})

    def finish(self) -> ReplayResult:
        warnings = []
        for model_id, model in sorted(self.models.items()):
            for kind, partitions in sorted(model.partitions.items()):
                if len(partitions) > 1:
                    warnings.append(
                        f"model {model_id!r} has {kind} events in {len(partitions)} partitions: their "
                        "relative order in a live run depends on its batches (key events by model_id)")
            if model.timeline is not None:
                for kind in ("features", "labelled"):  # the state at the end
                    if model.seen[kind] % self.sample_every:
                        self._sample(model, kind)
                from detectors.api import column_dependence

                monitor = model.runtime.monitor
                model.timeline.dependence = column_dependence(monitor.profile, self.config, monitor.dependence)
        triggers = [line for _, line in sorted(self.triggers, key=lambda t: t[0])]
        timelines = [m.timeline for _, m in sorted(self.models.items()) if m.timeline is not None]
        return ReplayResult(triggers, timelines, self.records, self.events, self.invalid,
                            self.suppressed, self.other_models, warnings)
