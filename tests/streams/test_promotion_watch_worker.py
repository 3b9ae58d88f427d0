"""The watched promotion in `driftline worker`, against the real broker: after a
promotion that carries the replaced champion's figures, the new version's first
`retrain.watch_rows` labelled events decide; worse ones publish one
`promotion_regression` trigger naming the version, and the rollback's outcome
re-baselines the monitor on the old version."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import harness as h
from detectors import ReferenceProfile
from tests.streams.test_worker import DEADLINE, reference, workers  # noqa: F401 - fixtures

pytestmark = pytest.mark.services
WATCH_ROWS = 300


def labelled_events(model: str, start: int, count: int, error: float, seed: int,
                    version: str = "1") -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    events = []
    for seq in range(start, start + count):
        at = (h.START + dt.timedelta(milliseconds=seq)).isoformat()
        prediction = float(rng.normal())
        events.append((model, json.dumps({
            "schema_version": 1, "model_id": model, "model_version": version, "event_id": f"{model}-l{seq}",
            "timestamp": at, "actual_timestamp": at, "prediction": prediction,
            "actual": prediction + error * float(rng.choice([-1.0, 1.0])),
        }).encode()))
    return events


def outcome(trigger_id: str, kind: str, previous: str, new: str, **metrics: float) -> tuple[str, bytes]:
    return "m0", json.dumps({
        "schema_version": 1, "trigger_id": trigger_id, "model_id": "m0", "outcome": kind,
        "previous_version": previous, "new_version": new, "reference_profile": f"m0/{new}/profile.bin",
        "metrics": metrics, "completed_at": dt.datetime.now(dt.timezone.utc).isoformat()}).encode()


def test_a_worse_promotion_fires_one_regression_and_its_rollback_rebaselines(
    kafka_bootstrap, unique_name, tmp_path: Path, reference, workers  # noqa: F811
):
    topics = h.create_topics(kafka_bootstrap, unique_name)
    store = tmp_path / "store"
    profile = ReferenceProfile.from_frame(pd.read_csv(reference), prediction_column="prediction",
                                          actual_column="actual")
    for version in ("1", "2"):
        (store / "m0" / version).mkdir(parents=True)
        (store / "m0" / version / "profile.bin").write_bytes(profile.to_bytes())
    config = h.write_config(tmp_path, kafka_bootstrap, unique_name, ["m0"], reference)
    config.write_text(f'model_store_path = "{store}"\n' + config.read_text()
                      + f"\n[retrain]\nwatch_rows = {WATCH_ROWS}\n")
    labelled = topics["labelled_topic"]
    state = lambda: h.read_states(kafka_bootstrap, unique_name).get("m0")  # noqa: E731
    sent = 0

    def send(count: int, error: float, version: str = "1") -> None:
        nonlocal sent
        h.produce(kafka_bootstrap, labelled, labelled_events("m0", sent, count, error, seed=sent, version=version))
        sent += count
        h.wait_until(lambda: state() is not None and state().progress[labelled].last_offset >= sent - 1,
                     DEADLINE, "labelled batch processed", workers.alive)

    workers.worker(config)
    send(200, 0.1)
    # the champion it replaces had MAE 0.1 and RMSE 0.1 on the holdout
    h.produce(kafka_bootstrap, topics["retrain_events_topic"],
              [outcome("promo-1", "promoted", "1", "2", champion_mae=0.1, champion_rmse=0.1)])
    while state().promotion_id != "promo-1":  # each batch checks for promotions
        send(10, 0.1)
        assert sent < 1000, "promotion not applied"
    assert state().watch is not None and state().model_version == "2"
    send(WATCH_ROWS, 0.3, version="2")  # the promoted version's: three times the champion's error

    def regressions() -> list[dict]:
        requests = [json.loads(m.value()) for m in h.read_to_end(kafka_bootstrap, topics["retrain_requests_topic"])]
        return [r for r in requests if r["decision"]["trigger_types"] == ["promotion_regression"]]

    [regression] = h.wait_until(regressions, DEADLINE, "the regression trigger", workers.alive)
    assert regression["model_version"] == "2" and "promoted version 2" in regression["decision"]["reason"]
    assert regression["metrics"]["promotion_watch.champion.mae"] == pytest.approx(0.1)
    assert state().watch is None

    h.produce(kafka_bootstrap, topics["retrain_events_topic"], [outcome("r-1", "rolled_back", "2", "1")])
    while state().promotion_id != "r-1":
        send(10, 0.3)
        assert sent < 2000, "rollback not applied"
    assert state().model_version == "1" and state().reference == "m0/1/profile.bin" and state().watch is None
    send(WATCH_ROWS, 0.3)
    assert len(regressions()) == 1  # a rollback is not watched; the promotion fired once
