"""The promotion watch, pure: its figures over the first `rows` labelled events are
numpy's on those events, however the stream is cut into batches; its verdict follows
the design's thresholds; its state restores exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.config import DetectorConfig
from detectors.promotion_watch import TRIGGER_TYPE, PromotionWatch, regression_decision


def feed(watch: PromotionWatch, predictions, actuals, cuts: list[int]):
    """Feeds the stream in batches cut at `cuts`; the verdict and the stream index it came at."""
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(actuals))), len(actuals)]
    for start, end in zip(bounds, bounds[1:]):
        verdict = watch.update_many(predictions[start:end], actuals[start:end])
        if verdict is not None:
            return verdict, start + verdict.index
    return None, None


@settings(max_examples=60, deadline=None)
@given(n=st.integers(20, 300), rows=st.integers(1, 250), seed=st.integers(0, 10_000),
       cuts=st.lists(st.integers(0, 300), max_size=6))
def test_the_figures_are_numpys_on_the_first_rows_events_whatever_the_batches(n, rows, seed, cuts):
    rng = np.random.default_rng(seed)
    actuals = rng.normal(size=n)
    predictions = actuals + rng.normal(scale=0.5, size=n)
    watch = PromotionWatch("regression", {"mae": 0.4, "rmse": 0.5}, rows)
    verdict, at = feed(watch, predictions, actuals, cuts)
    if rows > n:
        assert verdict is None and watch.watching
        return
    errors = (actuals - predictions)[:rows]
    assert at == rows - 1
    assert verdict.live["mae"] == pytest.approx(np.abs(errors).mean(), rel=1e-9)
    assert verdict.live["rmse"] == pytest.approx(np.sqrt((errors ** 2).mean()), rel=1e-9)
    assert not watch.watching and watch.update_many(predictions, actuals) is None  # one verdict


def test_the_design_thresholds_decide_regression():
    actuals = np.zeros(100)
    # MAE 1.0 against a champion's 0.9: +11 % (under +15 %); RMSE 1.0 against 0.9: +11 % (over +10 %)
    verdict = PromotionWatch("regression", {"mae": 0.9, "rmse": 0.9}, 100).update_many(np.ones(100), actuals)
    assert verdict.regressed == ["rmse"]
    passed = PromotionWatch("regression", {"mae": 0.9, "rmse": 0.92}, 100).update_many(np.ones(100), actuals)
    assert passed.regressed == []
    assert PromotionWatch("regression", {"mae": 0.8, "rmse": 0.95}, 100).update_many(
        np.ones(100), actuals).regressed == ["mae"]
    looser = DetectorConfig(error_threshold=0.5, rmse_threshold=0.5)
    assert PromotionWatch("regression", {"mae": 0.8, "rmse": 0.8}, 100, looser).update_many(
        np.ones(100), actuals).regressed == []


def test_classification_compares_accuracy():
    actuals = np.array(["a"] * 100)
    predictions = np.array(["a"] * 85 + ["b"] * 15)  # 0.85 against 0.90: -5.6 %, over -5 %
    assert PromotionWatch("classification", {"accuracy": 0.90}, 100).update_many(
        predictions, actuals).regressed == ["accuracy"]
    assert PromotionWatch("classification", {"accuracy": 0.89}, 100).update_many(
        predictions, actuals).regressed == []


def test_without_the_champions_figures_nothing_is_watched():
    assert not PromotionWatch("regression", {}, 10).watching
    assert not PromotionWatch("classification", {"rmse": 1.0}, 10).watching
    assert PromotionWatch("regression", {"rmse": 1.0}, 10).update_many(np.ones(20), np.zeros(20)).live == {"rmse": 1.0}


def test_a_pair_without_a_finite_error_is_not_counted():
    watch = PromotionWatch("regression", {"mae": 1.0}, 3)
    verdict = watch.update_many(np.array([0.0, np.nan, 0.0, 0.0, 5.0]), np.array([1.0, 1.0, 1.0, 1.0, 1.0]))
    assert verdict.index == 3 and verdict.live["mae"] == 1.0


def test_a_restored_watch_continues_exactly():
    rng = np.random.default_rng(3)
    actuals, predictions = rng.normal(size=200), rng.normal(size=200)
    whole = PromotionWatch("regression", {"mae": 1.0, "rmse": 1.2}, 150)
    first = PromotionWatch("regression", {"mae": 1.0, "rmse": 1.2}, 150)
    assert first.update_many(predictions[:70], actuals[:70]) is None
    restored = PromotionWatch.from_state(first.to_state())
    resumed, uncut = restored.update_many(predictions[70:], actuals[70:]), whole.update_many(predictions, actuals)
    assert (70 + resumed.index, resumed.regressed) == (uncut.index, uncut.regressed)
    assert resumed.live == pytest.approx(uncut.live, rel=1e-12)


def test_a_regression_is_a_decision_of_its_own_type():
    verdict = PromotionWatch("regression", {"mae": 0.5, "rmse": 0.5}, 10).update_many(np.ones(10), np.zeros(10))
    decision = regression_decision(verdict, 41, "7")
    assert decision.trigger_types == [TRIGGER_TYPE] and decision.offset == 41 and decision.severity == "HIGH"
    assert "promoted version 7" in decision.reason and "mae 1 vs 0.5 (+100.0 % worse, limit 15 %)" in decision.reason
    assert [c["signal"] for c in decision.root_cause] == ["promotion_mae", "promotion_rmse"]
    assert decision.root_cause[0]["strength"] == pytest.approx(1.0 / 0.15)
