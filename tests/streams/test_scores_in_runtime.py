"""Feature events that carry the model's prediction and scores reach the monitor the way
the worker feeds it (decoded, fast path or not, grouped per model, into a ModelRuntime):
the harmful shift fires estimated_performance before any label; events without them
change nothing."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from detectors import DetectorConfig, ModelMonitor, ReferenceProfile
from schemas.messages import FeatureEvent, encode
from streams.decoding import Record, column_decoder, decode_by_model
from streams.model_state import ModelRuntime

T0 = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc)


def world(rng, n, spread=2.5):
    x = rng.normal(size=(n, 2))
    p = 1 / (1 + np.exp(-(spread * x[:, 0] + 0.5 * x[:, 1])))
    return x, p, (p > 0.5).astype(int), (rng.random(n) < p).astype(int)


def records(x, p, pred, per_class: bool, with_outputs: bool = True) -> list[Record]:
    out = []
    for i in range(len(x)):
        scores = {"0": float(1 - p[i]), "1": float(p[i])} if per_class else float(p[i])
        extra = {"prediction": int(pred[i]), "scores": scores} if with_outputs else {}
        event = FeatureEvent(model_id="m", model_version="1", event_id=f"e{i}", timestamp=T0,
                             features={"a": float(x[i, 0]), "b": float(x[i, 1])}, **extra)
        out.append(Record("features", 0, i, encode(event), key=b"m"))
    return out


def runtime(rng) -> ModelRuntime:
    x, p, pred, y = world(rng, 10_000)
    ref = pd.DataFrame(x, columns=["a", "b"]).assign(prediction=pred, actual=y, score=p)
    profile = ReferenceProfile.from_frame(ref, prediction_column="prediction", actual_column="actual",
                                          score_column="score")
    return ModelRuntime.fresh("m", "1", ModelMonitor(profile, DetectorConfig(), "classification"),
                              features_topic="features", labelled_topic="labelled")


def feed(run: ModelRuntime, recs: list[Record], fast: bool) -> list:
    decoders = {b"m": column_decoder("m", ["a", "b"], [])} if fast else None
    groups, bad = decode_by_model(FeatureEvent, recs, decoders)
    assert not bad.dead
    firings = []
    for start in range(0, len(groups["m"]), 2000):
        fired, rejected = run.apply_features(groups["m"][start:start + 2000])
        assert not rejected
        firings += fired
    return firings


def test_scores_on_feature_events_estimate_the_harm_before_labels() -> None:
    for fast, per_class in ((True, False), (False, True)):
        rng = np.random.default_rng(4)
        run = runtime(rng)
        x, p, pred, _ = world(rng, 6000)
        x2, p2, pred2, _ = world(rng, 4000, spread=1.0)
        firings = feed(run, records(np.r_[x, x2], np.r_[p, p2], np.r_[pred, pred2], per_class), fast)
        assert firings, (fast, per_class)
        first = firings[0].decision
        assert first.offset >= 6000 and "estimated_performance_degradation" in first.trigger_types
        assert first.expected_impact["change"] < -0.05
        assert run.monitor.snapshot()["estimated_accuracy"] < 0.75


def test_events_without_outputs_leave_the_estimate_unfed() -> None:
    rng = np.random.default_rng(5)
    run = runtime(rng)
    x, p, pred, _ = world(rng, 3000, spread=1.0)
    firings = feed(run, records(x, p, pred, per_class=False, with_outputs=False), fast=True)
    assert all("estimated_performance_degradation" not in f.decision.trigger_types for f in firings)
    assert np.isnan(run.monitor.snapshot()["estimated_accuracy"])


def test_a_model_without_an_estimate_still_has_its_predictions_watched() -> None:
    """The prediction's drift needs no estimator: predictions on the events reach it."""
    rng = np.random.default_rng(6)
    x, _, _, _ = world(rng, 10_000)
    ref = pd.DataFrame(x, columns=["a", "b"]).assign(prediction=x[:, 0] + x[:, 1])
    profile = ReferenceProfile.from_frame(ref, feature_columns=["a", "b"], prediction_column="prediction")
    run = ModelRuntime.fresh("m", "1", ModelMonitor(profile, DetectorConfig()), features_topic="features",
                             labelled_topic="labelled")
    assert run.monitor.estimate is None
    x = rng.normal(size=(6000, 2))
    served = x[:, 0] + x[:, 1] + np.r_[np.zeros(3000), np.full(3000, 1.0)]  # the model's outputs move, inputs do not
    events = [FeatureEvent(model_id="m", model_version="1", event_id=f"e{i}", timestamp=T0,
                           features={"a": float(x[i, 0]), "b": float(x[i, 1])}, prediction=float(served[i]))
              for i in range(len(x))]
    firings = feed(run, [Record("features", 0, i, encode(e), key=b"m") for i, e in enumerate(events)], fast=True)
    assert firings and firings[0].decision.offset >= 3000
    assert "prediction_drift" in firings[0].decision.trigger_types
