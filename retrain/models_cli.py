"""`driftline models list|show|promote|rollback|init MODEL [VERSION]`: the model store.

list [MODEL]            the models, or one model's versions (current marked *)
show MODEL [VERSION]    a version's metadata (default: the current version)
promote MODEL VERSION   make VERSION current (an atomic pointer swap)
rollback MODEL [VERSION]  back to VERSION, or to the version current before this one
                        (both then publish a `promoted` RetrainOutcome on retrain-events,
                        as the retrainer does, so running workers re-baseline on the
                        version's reference profile; an error if it cannot be sent)
init MODEL              version 1 from the model's training data, with the configured
                        (or built-in) trainer: the first current model
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import uuid
from typing import TYPE_CHECKING

from retrain.errors import ModelStoreError, RetrainError, UnknownModel
from schemas.errors import UsageError

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message

    from retrain.model_store import ModelStore
    from schemas.messages import RetrainOutcome
    from schemas.settings import Settings

# Light at the top, so `driftline models --help` imports nothing heavy: the model store,
# Kafka and the training pipeline are imported by the functions that use them.

ACTIONS = ("list", "show", "promote", "rollback", "init")
PUBLISH_TIMEOUT_SECONDS = 30.0


def promotion_event(store: ModelStore, model_id: str, previous: str | None, version: str, action: str) -> RetrainOutcome:
    """The `promoted` outcome of a promotion by hand; its unique trigger_id tells the
    monitor that this is a new promotion (even of a version that served before)."""
    from schemas.messages import RetrainOutcome

    return RetrainOutcome(
        trigger_id=f"manual-{action}-{model_id}-{version}-{uuid.uuid4().hex[:12]}"[:200],
        model_id=model_id,
        outcome="promoted",
        previous_version=previous,
        new_version=version,
        reference_profile=store.reference_profile_path(model_id, version),
        reason=f"{action} by hand: driftline models {action}",
        completed_at=dt.datetime.now(dt.timezone.utc),
    )


def publish_promotion(settings: Settings, event: RetrainOutcome) -> None:
    """Publishes `event` on retrain-events (acks=all), or raises RetrainError."""
    from confluent_kafka import KafkaException, Producer

    from schemas.messages import encode

    failures: list[str] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(str(error))

    producer = Producer(settings.kafka.producer_config())
    try:
        producer.produce(
            settings.kafka.retrain_events_topic, key=event.model_id.encode(), value=encode(event), on_delivery=delivered
        )
    except (KafkaException, BufferError) as error:
        failures.append(str(error))
    remaining = producer.flush(PUBLISH_TIMEOUT_SECONDS)
    if failures or remaining:
        why = failures[0] if failures else f"not acknowledged within {PUBLISH_TIMEOUT_SECONDS:g} s"
        raise RetrainError(
            f"version {event.new_version} of {event.model_id} is current, but its promotion was not published on "
            f"{settings.kafka.retrain_events_topic} ({why}): running workers keep the old reference; run the "
            f"command again"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("model", nargs="?", help="model id")
    parser.add_argument("version", nargs="?", help="version number")


def bootstrap(settings: Settings, model_id: str) -> str:
    """Trains and promotes version 1 of `model_id` on its training data; the newest
    `holdout_fraction` of the rows (in file order) validate it and feed its profile."""
    from retrain import datasets
    from retrain.job import RetrainJob
    from retrain.model_store import open_model_store
    from retrain.outcome import Trigger
    from retrain.preparation import PreparedData, clean

    model = settings.models.get(model_id)
    if model is None:
        raise UnknownModel(f"model {model_id!r} is not configured")
    store = open_model_store(settings)
    if store.versions(model_id):
        raise ModelStoreError(f"model {model_id} already has versions; retraining adds new ones")
    historical = datasets.historical_frame(model)
    columns = datasets.feature_columns(model, historical)
    cleaned = clean(
        historical, historical.iloc[:0], feature_columns=columns, target=model.actual_column, task=model.task
    )
    rows = cleaned.historical[[*columns, model.actual_column]].reset_index(drop=True)
    holdout_rows = max(1, math.ceil(len(rows) * settings.retrain.holdout_fraction))
    prepared = PreparedData(
        rows.iloc[:-holdout_rows],
        rows.iloc[-holdout_rows:].reset_index(drop=True),
        columns,
        model.actual_column,
        {**cleaned.counts, "training_rows": len(rows) - holdout_rows, "holdout_rows": holdout_rows},
    )
    trigger = Trigger(
        f"init-{model_id}", model_id, "none", [], "NONE", "initial version", {}, dt.datetime.now(dt.timezone.utc)
    )
    job = RetrainJob(trigger, model, settings.retrain, store, prepared, settings.detectors)
    job.start()
    record = job.wait(settings.retrain.poll_timeout_seconds)
    if record.outcome != "promoted":
        raise RetrainError(f"initial training of {model_id} failed: {record.reason}")
    return record.new_version


def run(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.logs import configure_logging

    configure_logging(settings.log_level, settings.log_repeats)
    try:
        return _run(args, settings)
    except RetrainError as error:
        raise UsageError(str(error)) from error


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from retrain.model_store import open_model_store

    store = open_model_store(settings)
    if args.action != "list" and not args.model:
        raise ModelStoreError(f"models {args.action} needs a MODEL")
    if args.action == "list":
        _list(store, args.model)
    elif args.action == "show":
        version = args.version or store.current_version(args.model)
        if version is None:
            raise ModelStoreError(f"model {args.model} has no current version")
        print(json.dumps(store.metadata(args.model, version), indent=2, sort_keys=True))
    elif args.action in ("promote", "rollback"):
        if args.action == "promote" and not args.version:
            raise ModelStoreError("models promote needs a VERSION")
        previous = store.current_version(args.model)
        if args.action == "promote":
            store.promote(args.model, args.version)
            version = args.version
        else:
            version = store.rollback(args.model, args.version)
        print(f"{args.model}: version {version} is current")
        publish_promotion(settings, promotion_event(store, args.model, previous, version, args.action))
        print(f"{args.model}: promotion published on {settings.kafka.retrain_events_topic}")
    else:
        print(f"{args.model}: version {bootstrap(settings, args.model)} is current")
    return 0


def _list(store: ModelStore, model_id: str | None) -> None:
    if model_id is None:
        for name in store.models():
            print(f"{name}\tcurrent {store.current_version(name) or '-'}\t{len(store.versions(name))} version(s)")
        return
    current = store.current_version(model_id)
    for version in store.versions(model_id):
        metadata = store.metadata(model_id, version)
        scores = (metadata.get("validation") or {}).get("new") or {}
        summary = " ".join(f"{k}={v:.4g}" for k, v in sorted(scores.items()))
        marker = "*" if version == current else " "
        print(f"{marker} {version}\t{metadata.get('decision', 'validating')}\t{metadata['created_at']}\t{summary}")
