"""The retrainer on both model stores, against the real broker and database: a trigger
is retrained and promoted (its outcome carries the replaced champion's figures, which
the monitor watches the new version against), then a `promotion_regression` trigger
rolls that version back: the row (execution_status rolled_back), the outcome on
retrain-events, the store's current version and the counter; without waiting for a
retrain of the model that is running."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrain import metrics
from retrain.model_store import open_model_store
from retrain.models_cli import bootstrap
from schemas.messages import RetrainOutcome, decode
from schemas.settings import MlflowSettings, Settings
from tests.retrain.conftest import MODEL, Harness, wait_for
from tests.retrain.synthetic import regression_frame
from tests.retrain.test_models_cli import second_version

pytestmark = pytest.mark.services


@pytest.fixture(params=["files", "mlflow"])
def store_settings(request: pytest.FixtureRequest, harness: Harness, tmp_path: Path) -> Settings:
    settings = harness.settings()
    if request.param == "mlflow":
        uri = f"sqlite:///{tmp_path}/mlflow.db"
        settings = settings.model_copy(update={"model_store": "mlflow", "mlflow": MlflowSettings(tracking_uri=uri)})
        bootstrap(settings, MODEL)  # version 1, as the files store template has it
    return settings


def rollbacks() -> float:
    return metrics.REGISTRY.get_sample_value("driftline_rollbacks_total", {"model": MODEL}) or 0.0


def test_a_promotion_regression_rolls_the_promoted_version_back(harness: Harness, store_settings: Settings) -> None:
    settings = store_settings
    store = open_model_store(settings)
    assert store.current_version(MODEL) == "1"
    harness.trigger("t-ok", harness.labelled_window(300, seed=2))
    before = rollbacks()
    harness.start(settings)
    wait_for(lambda: harness.committed() == 1, "the retrain's offset to be committed")
    [promoted] = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 1)]
    assert (promoted.outcome, promoted.new_version) == ("promoted", "2")
    assert {"champion_mae", "champion_rmse", "champion_r2"} <= promoted.metrics.keys()  # what the monitor watches

    harness.trigger("r-1", None, model_version="2", trigger_types=("promotion_regression",))
    wait_for(lambda: harness.committed() == 2, "the regression's offset to be committed")
    row = harness.rows()[-1]
    assert (row["trigger_id"], row["trigger_type"], row["execution_status"]) == ("r-1", "promotion_regression",
                                                                                "rolled_back")
    assert row["retraining_model_version"] == "1" and row["execution_attempted"] is False
    events = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 2)]
    rolled_back = events[-1]
    assert (rolled_back.outcome, rolled_back.previous_version, rolled_back.new_version) == ("rolled_back", "2", "1")
    assert rolled_back.reference_profile == store.reference_profile_path(MODEL, "1")
    assert store.current_version(MODEL) == "1" and store.metadata(MODEL, "2")["decision"] == "rolled_back"
    assert rollbacks() == before + 1


@pytest.mark.parametrize("data_changed", [False, True])
def test_the_replaced_version_comes_back_only_if_it_does_better_on_the_promoted_versions_live_events(
    harness: Harness, data_changed: bool
) -> None:
    """A bad promotion: on the events version 2 served, version 1 (the original relation)
    does better, so it comes back. Data that changed during the watch: version 1 does
    worse still on them, so nothing is rolled back and the reason says why. Only version
    2's events count: the window's first records carry version 1's late labels."""
    settings = harness.settings()
    store = open_model_store(settings)
    store.promote(MODEL, second_version(store))
    harness.labelled_frame(regression_frame(100, seed=61).assign(prediction=0.0), "old-")  # version 1's, late
    live = regression_frame(200, seed=62, drifted=data_changed)
    served = live["actual"] + (0.1 if data_changed else 5.0)  # close to the truth, or far from it
    window = harness.labelled_frame(live.assign(prediction=served), "new-", model_version="2")
    window.ranges[0].start = 0  # from the promotion on, as the monitor's window
    harness.trigger("r-live", window, model_version="2", trigger_types=("promotion_regression",))
    harness.start(settings)
    wait_for(lambda: harness.committed() == 1, "the regression's offset to be committed")

    [event] = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 1)]
    if data_changed:
        assert event.outcome == "skipped" and store.current_version(MODEL) == "2"
        assert "version 1 does no better than version 2 on the 200 live events" in event.reason
    else:
        assert (event.outcome, event.new_version) == ("rolled_back", "1") and store.current_version(MODEL) == "1"


def test_a_rollback_does_not_wait_for_the_models_running_retrain(
    harness: Harness, training_gate: tuple[Path, Path]
) -> None:
    marker, release = training_gate
    settings = harness.settings(model={"trainer": "tests.retrain.trainers:gated"})
    store = open_model_store(settings)
    store.promote(MODEL, second_version(store))  # version 2 serves, over version 1
    harness.trigger("t-running", harness.labelled_window(300, seed=2), model_version="2")
    harness.start(settings)
    wait_for(marker.exists, "the retrain under version 2 to start training")
    harness.trigger("r-1", None, model_version="2", trigger_types=("promotion_regression",))
    wait_for(lambda: [r for r in harness.rows() if r["trigger_id"] == "r-1"], "the rollback's row")
    assert store.current_version(MODEL) == "1" and not release.exists()  # rolled back while training ran
    release.touch()
    wait_for(lambda: harness.committed() == 2, "both offsets committed, in order")
    assert [r["trigger_id"] for r in harness.rows()] == ["r-1", "t-running"]
    assert store.current_version(MODEL) == "3" and store.metadata(MODEL, "3")["parent_version"] == "1"
