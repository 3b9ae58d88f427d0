"""One retrain in flight per model, and no stale work, against the real broker and
database. The gated trainer holds a training until the test releases it, so the test
decides what arrives while the model retrains; it waits on rows and metrics, not sleeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrain import metrics
from retrain.model_store import FileModelStore
from schemas.messages import RetrainOutcome, decode
from tests.retrain.conftest import MODEL, Harness, wait_for
from tests.retrain.trainers import FAIL_ONCE_ENV

pytestmark = pytest.mark.services


def dropped(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("driftline_retrain_triggers_dropped_total", {"model": MODEL, "reason": reason}) or 0.0


def by_id(harness: Harness) -> dict[str, dict]:
    return {row["trigger_id"]: row for row in harness.rows()}


def test_triggers_during_a_retrain_coalesce_into_one_follow_up_with_the_newest_evidence(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, training_gate: tuple[Path, Path]
) -> None:
    marker, release = training_gate
    fail_once = tmp_path / "fail-once"
    fail_once.touch()  # the running retrain fails: version 1 keeps serving, the follow-up is not stale
    monkeypatch.setenv(FAIL_ONCE_ENV, str(fail_once))
    settings = harness.settings(cooldown_seconds=0, model={"trainer": "tests.retrain.trainers:gated"})
    superseded_before = dropped("superseded")
    harness.trigger("t1", harness.labelled_window(150, seed=31))
    harness.start(settings)
    wait_for(marker.exists, "the first training to start")

    for number, seed in ((2, 32), (3, 33), (4, 34)):
        harness.trigger(f"t{number}", harness.labelled_window(150 + number, seed=seed))
    wait_for(lambda: {"t2", "t3"} <= set(by_id(harness)), "t2 and t3 to be superseded while t1 trains")
    assert len(list(tmp_path.glob("training-started.*"))) == 1, "a second training ran while t1 trained"
    release.touch()

    wait_for(lambda: harness.committed() == 4, "all four triggers to be committed")
    rows = by_id(harness)
    assert rows["t1"]["execution_successful"] is False  # failed on purpose
    for older in ("t2", "t3"):
        assert rows[older]["execution_attempted"] is False
        assert rows[older]["execution_metrics"]["reason"].startswith(f"superseded by newer trigger t{int(older[1]) + 1}")
    assert rows["t4"]["execution_successful"] is True and rows["t4"]["retraining_model_version"] == "2"
    assert rows["t4"]["execution_metrics"]["counts"]["recent_rows"] == 154  # t4's own window, the newest
    assert len(list(tmp_path.glob("training-started.*"))) == 2, "not exactly one follow-up training"
    assert dropped("superseded") == superseded_before + 2
    store = FileModelStore(settings.model_store_path, 5)
    assert store.metadata(MODEL, "2")["trigger_id"] == "t4" and store.current_version(MODEL) == "2"
    events = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 4)]
    assert sorted((e.trigger_id, e.outcome) for e in events) == [
        ("t1", "failed"), ("t2", "skipped"), ("t3", "skipped"), ("t4", "promoted"),
    ]


def test_a_trigger_against_an_older_version_than_the_serving_one_is_dropped(
    harness: Harness, tmp_path: Path, training_gate: tuple[Path, Path]
) -> None:
    marker, release = training_gate
    settings = harness.settings(cooldown_seconds=0, model={"trainer": "tests.retrain.trainers:gated"})
    stale_before = dropped("stale")
    harness.trigger("t-first", harness.labelled_window(150, seed=35))
    harness.start(settings)
    wait_for(marker.exists, "the first training to start")
    harness.trigger("t-old", harness.labelled_window(150, seed=36))  # raised against version 1, like t-first
    wait_for(lambda: metrics.REGISTRY.get_sample_value("driftline_retrain_triggers_waiting") == 1, "the follow-up")
    release.touch()

    wait_for(lambda: harness.committed() == 2, "both triggers to be committed")
    rows = by_id(harness)
    assert rows["t-first"]["retraining_model_version"] == "2"
    assert rows["t-old"]["execution_attempted"] is False
    assert rows["t-old"]["execution_metrics"]["reason"] == "stale: raised against version 1, version 2 is serving"
    assert dropped("stale") == stale_before + 1
    assert len(list(tmp_path.glob("training-started.*"))) == 1
    assert FileModelStore(settings.model_store_path, 5).versions(MODEL) == ["1", "2"]
