"""PostgreSQL cut off three times while the retrainer writes the outcomes of a stream of
triggers: one row per trigger, none doubled (a copy of a trigger included), none lost,
and no trigger committed before its row.

Each cut comes while a training runs (a gated trainer: the test decides when it ends);
then the training is released, so its outcome's write, and the admits and writes of the
triggers queued behind it, meet the outage. How many triggers come before and after each
training, and on the other partition, is seeded.

The retrainer reaches PostgreSQL through a TCP proxy that the test takes down (open
connections cut, new ones refused) and brings back, so the test itself still reads the
database while the retrainer cannot: "committed, then no row" is checked at every poll,
during the outages too (offsets first, then rows: a row read later can only be older)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import psycopg
import pytest

from bench import harness as h
from retrain import metrics
from schemas.messages import RetrainOutcome, decode
from tests.retrain.conftest import (  # noqa: F401 - the retrain harness and its fixtures
    MODEL,
    Harness,
    harness,
    store_template,
    training_csv,
)
from tests.retrain.tcp_proxy import TcpProxy
from tests.retrain.trainers import MARKER_ENV, RELEASE_ENV

pytestmark = pytest.mark.services
DEADLINE = 90
CUTS = 3


def test_postgres_cut_during_outcome_writes_gives_one_row_per_trigger_and_no_early_commit(
    harness: Harness, postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = int(os.environ.get("DRIFTLINE_FAULTS_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    marker, release = tmp_path / "training-started", tmp_path / "release"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    monkeypatch.setenv(RELEASE_ENV, str(release))
    address = psycopg.conninfo.conninfo_to_dict(postgres_dsn)
    proxy = TcpProxy(address.get("host", "127.0.0.1"), int(address.get("port", 5432)))
    proxied = psycopg.conninfo.make_conninfo(postgres_dsn, host="127.0.0.1", port=str(proxy.port))
    waves = [f"w{i}" for i in range(CUTS)]  # a model per wave: each starts without a version
    settings = harness.settings(dsn=proxied, cooldown_seconds=0, other_models=("m2", *waves),
                                model={"trainer": "tests.retrain.trainers:gated"})
    at: dict[int, list[str]] = {0: [], 1: []}  # per partition, the trigger id at each offset
    context = f"seed {seed}"

    def trigger(trigger_id: str, model: str, severity: str, partition: int) -> None:
        window = harness.labelled_window(120, seed=len(at[0]) + len(at[1]), model_id=model)
        harness.trigger(trigger_id, window, severity=severity, partition=partition, model_id=model)
        at[partition].append(trigger_id)

    def rows() -> list[str]:
        return [r["trigger_id"] for r in harness.rows()]

    def check_no_early_commit() -> None:
        done = {p: harness.committed(p) for p in at}  # first the offsets, then the rows
        have = set(rows())
        early = [at[p][o] for p, c in done.items() for o in range(max(c, 0)) if at[p][o] not in have]
        assert not early, f"committed without a row: {early} ({context})"

    def all_committed() -> bool:
        return all(harness.committed(p) == len(ids) for p, ids in at.items() if ids)

    failures = lambda: metrics.DB_WRITE_FAILURES._value.get()  # noqa: E731
    proxy.up()
    harness.start(settings)
    try:
        for i, model in enumerate(waves):
            plan = (rng.randint(0, 3), rng.randint(1, 4), rng.randint(1, 4))  # before, after, other partition
            context = f"seed {seed}, wave {i}: {plan}"
            for n in range(plan[0]):
                trigger(f"{model}-low-{n}", model, "LOW", 0)
            trigger(f"{model}-train", model, "HIGH", 0)
            for n in range(plan[1]):
                trigger(f"{model}-after-{n}", model, "LOW", 0)
            for n in range(plan[2]):
                trigger(f"m2-{i}-{n}", "m2", "LOW", 1)
            if i == 1:  # a redelivered copy of an earlier trigger
                trigger(at[0][0], waves[0], "LOW", 0)
            h.wait_until(lambda: len(list(tmp_path.glob("training-started.*"))) == i + 1, DEADLINE,
                         f"training started ({context})", check_no_early_commit, every=0.05)
            proxy.down()  # PostgreSQL goes away while the model trains
            before = failures()
            release.touch()  # the training ends: its outcome is to be written now
            h.wait_until(lambda: failures() >= before + 3, DEADLINE, f"writes failing during the cut ({context})",
                         check_no_early_commit, every=0.05)
            check_no_early_commit()
            proxy.up()
            h.wait_until(all_committed, DEADLINE, f"every trigger committed after the cut ({context})",
                         check_no_early_commit)
            release.unlink()
    finally:
        proxy.down()
    written = rows()
    unique = {t for ids in at.values() for t in ids}
    assert len(written) == len(set(written)), f"a trigger written twice: {written} ({context})"
    assert set(written) == unique, f"rows missing: {sorted(unique - set(written))} ({context})"
    events = [decode(RetrainOutcome, v) for v in harness.read(settings.kafka.retrain_events_topic,
                                                              sum(map(len, at.values())))]
    outcomes: dict[str, set[str]] = {}
    for event in events:
        outcomes.setdefault(event.trigger_id, set()).add(event.outcome)
    assert set(outcomes) == unique, f"outcomes not published for {sorted(unique - set(outcomes))} ({context})"
    assert all(len(o) == 1 for o in outcomes.values()), f"two outcomes for one trigger: {outcomes} ({context})"
    trained = {t: o for t, o in outcomes.items() if t.endswith("-train")}
    assert trained == {f"{m}-train": {"promoted"} for m in waves}, f"{trained} ({context})"
    print(f"postgres outage: seed {seed}; {len(unique)} triggers, outcomes {sorted(set().union(*outcomes.values()))}")
