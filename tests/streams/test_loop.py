"""The loop's promise on a short scenario, against the real broker and database: after a
covariate shift the served model's error comes back near its baseline, with few
retrains (the long scenarios are `python -m bench.loop`)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from streams.demo import RECOVERY_FACTOR, LoopRun, Scenario

pytestmark = pytest.mark.services
SHIFT_AT = 2_000


def test_the_served_model_recovers_after_a_covariate_shift(kafka_bootstrap, postgres_dsn, tmp_path: Path,
                                                           unique_name: str):
    scenario = Scenario("recovery", events=16_000, covariate_shift_at=SHIFT_AT)
    run = LoopRun(scenario, tmp_path / "loop", schema=unique_name)
    try:
        timeline = run.run()
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(unique_name)))
    baseline = timeline.error_at(SHIFT_AT)
    shifted = max(t.error for t in timeline.ticks if t.events >= SHIFT_AT + 1000)
    assert shifted > 1.5 * baseline, "the shift must hurt the first version, or there is nothing to recover"
    promotions = [o for _, o in timeline.outcomes if o.outcome == "promoted"]
    assert 1 <= len(promotions) <= 2, [(o.outcome, o.reason) for _, o in timeline.outcomes]
    assert not [r for at, r in timeline.triggers if at < SHIFT_AT], "a trigger on stationary data"
    back = timeline.recovery(SHIFT_AT, baseline)
    assert back is not None, (f"error never back within {RECOVERY_FACTOR}x of {baseline:.3f}: "
                              f"{[(t.events, round(t.error, 3), t.version) for t in timeline.ticks[::20]]}")
    assert back.version != "1"
