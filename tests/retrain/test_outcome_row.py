"""A trigger of several types keeps them all in its row, so the design's frequency query
(GROUP BY trigger_type) hides no type behind another."""

from __future__ import annotations

import datetime as dt

from retrain.outcome import OutcomeRecord, Trigger


def row(types: list[str]) -> dict:
    trigger = Trigger("t-1", "m", "1", types, "HIGH", "drift", {}, dt.datetime.now(dt.timezone.utc))
    return OutcomeRecord.skipped(trigger, "test").row()


def test_every_type_of_a_trigger_is_in_its_row():
    assert row(["data_drift"])["trigger_type"] == "data_drift"
    both = row(["data_drift", "concept_drift"])
    assert both["trigger_type"] == "data_drift+concept_drift"
    assert both["drift_type"] == "data_drift,concept_drift"
    every = row(["data_drift", "concept_drift", "performance_degradation", "outliers"])
    assert every["drift_type"].split(",")[-1] == "outliers"  # not cut at the design's 50 characters
    assert every["trigger_type"].split("+")[-1] == "outliers"
