"""`driftline models promote/rollback` publish the promotion, like the retrainer, so
running workers re-baseline; against the real broker. The commands on the MLflow registry."""

from __future__ import annotations

import argparse
import json
import shutil

import joblib
import pytest

from retrain import models_cli
from retrain.model_store import ARTIFACT, PROFILE, FileModelStore, open_model_store
from schemas.errors import UsageError
from schemas.messages import RetrainOutcome, decode
from schemas.settings import KafkaSettings, MlflowSettings
from tests.retrain.conftest import MODEL, Harness

pytestmark = pytest.mark.services


def second_version(store: FileModelStore) -> str:
    """Version 2 of `m`: a copy of version 1, profile included (not current)."""
    version = store.add_version(MODEL, store.version_dir(MODEL, "1") / ARTIFACT, {"trigger_id": "t-copy"})
    shutil.copyfile(store.version_dir(MODEL, "1") / PROFILE, store.version_dir(MODEL, version) / PROFILE)
    return version


def models(action: str, version: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(action=action, model=MODEL, version=version)


def test_promote_and_rollback_publish_a_promoted_outcome(harness: Harness, capsys: pytest.CaptureFixture) -> None:
    settings = harness.settings()
    store = FileModelStore(settings.model_store_path, 5)
    second_version(store)

    assert models_cli.run(models("promote", "2"), settings) == 0
    assert models_cli.run(models("rollback"), settings) == 0
    events = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 2)]
    assert [(e.outcome, e.previous_version, e.new_version) for e in events] == [("promoted", "1", "2"), ("promoted", "2", "1")]
    assert [e.reference_profile for e in events] == ["m/versions/2/reference_profile.bin", "m/versions/1/reference_profile.bin"]
    assert events[0].trigger_id.startswith("manual-promote-m-2-") and events[1].trigger_id.startswith("manual-rollback-m-1-")
    assert "promotion published" in capsys.readouterr().out
    assert store.current_version(MODEL) == "1"


def test_a_promotion_that_cannot_be_published_says_so(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    unreachable = KafkaSettings(bootstrap_servers="127.0.0.1:1", retrain_events_topic=harness.kafka.retrain_events_topic)
    settings = harness.settings().model_copy(update={"kafka": unreachable})
    store = FileModelStore(settings.model_store_path, 5)
    second_version(store)
    monkeypatch.setattr(models_cli, "PUBLISH_TIMEOUT_SECONDS", 1.0)
    with pytest.raises(UsageError, match="version 2 of m is current, but its promotion was not published"):
        models_cli.run(models("promote", "2"), settings)
    assert store.current_version(MODEL) == "2"


def test_the_commands_work_on_the_mlflow_registry(harness: Harness, tmp_path, capsys: pytest.CaptureFixture) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    settings = harness.settings().model_copy(update={"model_store": "mlflow", "mlflow": MlflowSettings(tracking_uri=uri)})
    assert models_cli.run(argparse.Namespace(action="init", model=MODEL, version=None), settings) == 0
    store = open_model_store(settings)
    joblib.dump(0, tmp_path / "second.joblib")
    second = store.add_version(MODEL, tmp_path / "second.joblib", {"trigger_id": "t-copy"})
    store.write_profile(MODEL, second, b"profile")
    capsys.readouterr()

    assert models_cli.run(argparse.Namespace(action="list", model=None, version=None), settings) == 0
    assert capsys.readouterr().out.startswith(f"{MODEL}\tcurrent 1\t2 version(s)")
    assert models_cli.run(models("promote", "2"), settings) == 0
    assert models_cli.run(models("rollback"), settings) == 0
    events = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic, 2)]
    assert [(e.previous_version, e.new_version) for e in events] == [("1", "2"), ("2", "1")]
    assert [e.reference_profile for e in events] == [store.reference_profile_path(MODEL, v) for v in ("2", "1")]
    assert store.current_version(MODEL) == "1"
    capsys.readouterr()
    assert models_cli.run(models("show"), settings) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["version"], shown["decision"], shown["trigger_id"]) == ("1", "promoted", f"init-{MODEL}")
