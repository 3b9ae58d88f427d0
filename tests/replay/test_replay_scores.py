"""`driftline replay --score-column` against the real broker: feature events that carry a
binary classifier's prediction and scores give the triggers (estimated_performance with
its expected impact) that `driftline backtest --score-column` gives on the same rows."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import numpy as np
import pandas as pd
import pytest

from bench import harness as h
from tests.replay import helpers

pytestmark = pytest.mark.services
MODEL = "m1"
CALM, HURT = 6000, 3000


def scored(rng: np.random.Generator, n: int, spread: float = 2.5) -> pd.DataFrame:
    x = rng.normal(size=(n, 2))
    p = 1 / (1 + np.exp(-(spread * x[:, 0] + 0.5 * x[:, 1])))
    return pd.DataFrame(x, columns=["a", "b"]).assign(
        prediction=(p > 0.5).astype(int), actual=(rng.random(n) < p).astype(int), score=p)


def test_replay_with_scores_gives_the_backtests_triggers(kafka_bootstrap: str, tmp_path) -> None:
    rng = np.random.default_rng(8)
    scored(rng, 10_000).to_csv(tmp_path / "ref.csv", index=False)
    stream = pd.concat([scored(rng, CALM), scored(rng, HURT, spread=1.0)], ignore_index=True)
    stream.assign(actual=np.nan).to_csv(tmp_path / "stream.csv", index=False)
    name = f"t_scores_{uuid.uuid4().hex[:8]}"
    topics = h.create_topics(kafka_bootstrap, name)
    config = h.write_config(tmp_path, kafka_bootstrap, name, [MODEL], tmp_path / "ref.csv", detector={})
    config.write_text(config.read_text() + 'task = "classification"\n')  # the model's section is last
    base = helpers.now_ms() - 600_000
    start = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc)

    def message(i: int, row: pd.Series) -> bytes:
        return json.dumps({"model_id": MODEL, "model_version": "1", "event_id": f"e{i}",
                           "timestamp": (start + dt.timedelta(milliseconds=i)).isoformat(),
                           "features": {"a": row["a"], "b": row["b"]},
                           "prediction": int(row["prediction"]), "scores": float(row["score"])}).encode()

    helpers.produce(kafka_bootstrap, topics["features_topic"],
                    [(MODEL, message(i, row), base + i) for i, row in stream.iterrows()])
    window = ("--from", f"{base / 1000:.3f}", "--to", f"{(base + len(stream)) / 1000:.3f}")
    replay = helpers.driftline("replay", "--config", str(config), "--topic", topics["features_topic"],
                               *window, "--output", "replayed.jsonl", "--min-severity", "LOW",
                               "--score-column", "score", "--no-progress", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    back = helpers.driftline("backtest", "--config", str(config), "--reference", "ref.csv", "--stream",
                             "stream.csv", "--output", "backtest.jsonl", "--task", "classification",
                             "--feature-column", "a", "--feature-column", "b", "--score-column", "score",
                             cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    replayed = helpers.read_lines(tmp_path / "replayed.jsonl")
    expected = helpers.read_lines(tmp_path / "backtest.jsonl")
    assert expected and expected[0]["offset"] >= CALM
    assert "estimated_performance_degradation" in expected[0]["trigger_types"]
    fields = ("offset", "trigger_types", "severity", "reason", "expected_impact")
    assert [{k: t.get(k) for k in fields} for t in replayed] == [{k: t.get(k) for k in fields} for t in expected]
