"""The signal contract: a new signal is one module on
:mod:`detectors.signals.base` plus its registration; the monitor fires it, fuses it,
saves and restores it, and still reads states saved before it existed."""

import numpy as np
import pytest

from detectors import ModelMonitor, _monitor_state, fusion, monitor
from detectors._state import unpack
from detectors.cusum import CUSUM
from detectors.signals import FEATURE_SIGNALS, Checks
from detectors.signals.base import SequentialSignal

from . import recorded_streams as rec


class MissingShare(SequentialSignal):
    """A toy signal: a Bernoulli CUSUM per numeric column on "the value is missing"
    (reference share 2 %, alternative 20 %)."""

    name = "missing_share"

    def calibrate(self, calibration):
        p0, p1 = 0.02, 0.2
        scale = np.log(p1 / p0) - np.log((1 - p1) / (1 - p0))
        c = len(self.columns)
        self.cusum = CUSUM(np.full(c, scale), np.full(c, -np.log((1 - p1) / (1 - p0))),
                           np.full(c, 12.0))

    @property
    def threshold(self):
        return self.cusum.threshold

    def update(self, batch):
        path = self.cusum.update_many(np.isnan(batch.xt.T).astype(float))
        return Checks(None, np.arange(len(self.columns)), (path / self.threshold).T,
                      {"missing_share": self.cusum.s.copy()} if batch.n else {})

    def report(self, test, lam_seen):
        return {"signal": self.name, "column": self.columns[test],
                "strength": float(max(1.0, self.cusum.s[test] / self.threshold[test])),
                "lambda": lam_seen}

    def restart(self):
        self.cusum._reset()

    def get_state(self):
        return self.cusum.get_state()

    def set_state(self, state):
        self.cusum.set_state(state)


@pytest.fixture
def with_missing_share(monkeypatch):
    monkeypatch.setattr(monitor, "FEATURE_SIGNALS", (*FEATURE_SIGNALS, MissingShare))
    monkeypatch.setitem(fusion.SIGNAL_TYPE, "missing_share", fusion.DriftType.DATA_DRIFT)


def _broken_feed(seed=11, n=6000):
    x, cats, pred, act = rec.stream(seed, n)
    x[:, 0] = np.random.default_rng(seed).normal(size=n)  # no other change in x0
    x[3000:, 0][np.random.default_rng(seed + 1).random(n - 3000) < 0.4] = np.nan
    return x, cats, pred, act


def test_a_registered_signal_fires_and_is_named(with_missing_share):
    x, cats, *_ = _broken_feed()
    mon = ModelMonitor(rec.profile())
    fired = [d for d in mon.update_features(x, {"cat": cats}) if d.offset >= 3000]
    causes = [(r["signal"], r["column"]) for r in fired[0].root_cause]
    assert ("missing_share", "x0") in causes and fired[0].offset < 3300


def test_a_registered_signal_is_saved_and_restored_exactly(with_missing_share):
    x, cats, pred, act = _broken_feed()
    a = ModelMonitor(rec.profile(), rec.CONFIGS["persistence"])
    rec.feed(a, x, cats, pred, act, [0, 3050])
    assert a.signals["missing_share"].cusum.s.any()
    assert "missing_share" in unpack(_monitor_state._STATE_KIND, a.state_to_bytes())["signals"]
    b = ModelMonitor.from_state(rec.profile(), a.state_to_bytes())
    assert b.state_to_bytes() == a.state_to_bytes()
    cuts = [3050, 3051, 4000, 6000]
    assert rec.feed(a, x, cats, pred, act, cuts) == rec.feed(b, x, cats, pred, act, cuts)


def test_a_state_saved_before_a_signal_existed_loads_and_the_signal_starts_fresh(
        with_missing_share):
    mon = ModelMonitor.from_state(rec.profile(), rec.STATE_FILE.read_bytes())
    assert not mon.signals["missing_share"].cusum.s.any()
    assert mon._hist["seq"].shape[0] == sum(len(s.columns) for s in mon._sequential)
    x, cats, pred, act = _broken_feed()
    rec.feed(mon, x, cats, pred, act, [rec.SAVE_AT, 6000])
    assert mon.events_seen == 6000
