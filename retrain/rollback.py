"""The retrainer's answer to a `promotion_regression` trigger: the promoted version did
worse on live traffic than the champion it replaced, so that champion comes back.

The trigger names the regressed version (its `model_version`). It is rolled back only
while it is still the current version, to the version before it (passing over versions
rolled back before); the version's metadata records the trigger
(`decision` rolled_back, `rolled_back_by`), so a redelivered trigger finishes a rollback
it began and is never applied twice, and the trigger that promoted the version, if it
is handled again, does not promote it again (retrain/job.py). With
`retrain.auto_rollback` off the trigger is recorded as skipped: rolling back is left to
`driftline models rollback`.

The watch compares the promoted version's live error with the replaced champion's error
on the validation holdout. When the data change during the watch, the promoted version
does worse than that figure, and the replaced champion would do worse still. So before
rolling back, the replaced champion scores the promoted version's own labelled events,
the ones the watch judged (`LiveEvents`, read by the consumer from the trigger's window).
It comes back only if it does better on them. Otherwise the trigger is skipped, and the
reason says the data changed: the monitor's drift signals answer that, with a retrain.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from detectors.prediction_error import prediction_errors
from retrain.model_store import ModelStore
from retrain.outcome import OutcomeRecord, Trigger
from schemas.logs import get_logger

log = get_logger(__name__)

PROMOTION_REGRESSION = "promotion_regression"  # detectors/promotion_watch.py's trigger type


def is_regression(trigger: Trigger) -> bool:
    return PROMOTION_REGRESSION in trigger.trigger_types


@dataclass(frozen=True)
class LiveEvents:
    """The promoted version's labelled events: their features, what it predicted, the
    actuals."""

    features: pd.DataFrame
    predictions: np.ndarray
    actuals: np.ndarray
    task: str

    def __len__(self) -> int:
        return len(self.actuals)


def no_better_on_live_events(store: ModelStore, model_id: str, parent: str, regressed: str,
                             live: LiveEvents) -> str | None:
    """Why `parent` should not replace `regressed`: it does no better on the events
    `regressed` served (None: it does better, or cannot be compared)."""
    try:
        replayed = store.load_model(model_id, parent).predict(live.features)
    except Exception as error:  # noqa: BLE001 - any model may fail on live data; the watch's verdict stands
        log.warning("rollback_comparison_failed", model=model_id, version=parent,
                    error=f"{type(error).__name__}: {error}")
        return None
    served = float(prediction_errors(live.task, live.predictions, live.actuals).mean())
    restored = float(prediction_errors(live.task, np.asarray(replayed), live.actuals).mean())
    if restored < served:
        return None
    metric = "error rate" if live.task == "classification" else "MAE"
    return (f"not rolled back: version {parent} does no better than version {regressed} on the {len(live)} live "
            f"events version {regressed} served ({metric} {restored:.4g} against {served:.4g}): the data changed, "
            f"not the model")


def roll_back(store: ModelStore, trigger: Trigger, *, enabled: bool, live: LiveEvents | None = None) -> OutcomeRecord:
    model_id, regressed = trigger.model_id, trigger.model_version
    if not enabled:
        return OutcomeRecord.skipped(
            trigger, f"retrain.auto_rollback is off: roll version {regressed} back with driftline models rollback"
        )
    if regressed not in store.versions(model_id):
        return OutcomeRecord.skipped(trigger, f"model {model_id} has no version {regressed} to roll back")
    metadata = store.metadata(model_id, regressed)
    parent = _restorable(store, model_id, metadata.get("parent_version"))
    if metadata.get("rolled_back_by") != trigger.trigger_id:
        current = store.current_version(model_id)
        if current != regressed:
            return OutcomeRecord.skipped(
                trigger, f"version {regressed} is no longer current (version {current} is): nothing to roll back"
            )
        if parent is None:
            return OutcomeRecord.skipped(
                trigger, f"version {regressed} has no earlier version to roll back to (none kept, or all rolled back)"
            )
        unchanged = None if live is None or not len(live) else no_better_on_live_events(
            store, model_id, parent, regressed, live)
        if unchanged is not None:
            return OutcomeRecord.skipped(trigger, unchanged)
        store.update_metadata(
            model_id,
            regressed,
            decision="rolled_back",
            rolled_back_by=trigger.trigger_id,
            rolled_back_at=dt.datetime.now(dt.timezone.utc).isoformat(),
            rolled_back_reason=trigger.reason,
        )
    if store.current_version(model_id) == regressed:
        store.promote(model_id, parent)
    return OutcomeRecord(
        trigger,
        "rolled_back",
        f"version {regressed} rolled back to version {parent}: {trigger.reason}",
        attempted=False,  # no retrain: the cooldown of retrains is not restarted
        successful=True,
        previous_version=regressed,
        new_version=parent,
        reference_profile=store.reference_profile_path(model_id, parent),
        execution={"rolled_back_version": regressed},
    )


def _restorable(store: ModelStore, model_id: str, version: str | None) -> str | None:
    """`version`, or the nearest version before it that was not rolled back itself (a
    retrain that began under a bad version has it as parent); None when none is kept."""
    kept = set(store.versions(model_id))
    while version is not None and version in kept:
        metadata = store.metadata(model_id, version)
        if metadata.get("decision") != "rolled_back":
            return version
        version = metadata.get("parent_version")
    return None
