"""Seeded streams and monitors whose decisions, snapshots and saved states were recorded
with the monitor before its signals moved onto one contract.

``python -m tests.detectors.recorded_streams`` writes ``data/recorded_decisions.json.gz``
and ``data/monitor_state_before_signals.bin`` / ``monitor_full_before_signals.bin``;
``test_recorded.py`` checks that today's monitor reproduces them and reads those bytes.
A change of the decisions (a new signal takes its share of ``target_arl``) records them
again with :func:`record_decisions`, keeping the states saved before the contract.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from detectors import DetectorConfig, ModelMonitor, ReferenceProfile

DATA = Path(__file__).parent / "data"
STATE_FILE = DATA / "monitor_state_before_signals.bin"
FULL_FILE = DATA / "monitor_full_before_signals.bin"
DECISIONS_FILE = DATA / "recorded_decisions.json.gz"
SAVE_AT = 2150  # feature and labelled events fed before the state was saved


def profile(seed=0, n=3000, cols=3, shuffled=False):
    """Numeric columns (one skewed, one with ties), a categorical, prediction and actual."""
    rng = np.random.default_rng(seed)
    ref = pd.DataFrame(rng.normal(size=(n, cols)), columns=[f"x{i}" for i in range(cols)])
    ref["x1"] = np.exp(ref["x1"])
    ref["x2"] = np.floor(2 * ref["x2"])
    ref["cat"] = rng.choice(["a", "b", "c"], size=n)
    ref["pred"] = rng.normal(size=n)
    ref["act"] = ref["pred"] + rng.normal(scale=0.5, size=n)
    config = DetectorConfig(reference_order="shuffled") if shuffled else DetectorConfig()
    prof = ReferenceProfile.from_frame(ref, prediction_column="pred", actual_column="act",
                                       config=config)
    # recorded before the prediction and multivariate signals: profiled without them
    return dataclasses.replace(prof, prediction=None, joint=None)._with_fingerprint()


def stream(seed, n=6000, cols=3):
    """A mean shift in x1, a variance change in x0, outliers in x2, a new level in cat,
    a rising error, and 1 % missing values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, cols))
    x[:, 1] = np.exp(x[:, 1])
    x[:, 2] = np.floor(2 * x[:, 2])
    x[n // 3:, 1] *= 1.8
    x[n // 2:, 0] *= 1.7
    x[2 * n // 3::12, 2] = 9.0
    x[rng.random((n, cols)) < 0.01] = np.nan
    cats = rng.choice(["a", "b", "c"], size=n).astype(object)
    cats[n // 2:][rng.random(n - n // 2) < 0.15] = "new"
    cats[rng.random(n) < 0.01] = None
    act = rng.normal(size=n)
    pred = act + rng.normal(scale=np.r_[np.full(n // 2, 0.5), np.full(n - n // 2, 1.0)])
    return x, cats, pred, act


CONFIGS = {
    "default": DetectorConfig(),
    "short_windows": DetectorConfig(ks_window=300, ks_stride=100, categorical_window=300,
                                    categorical_stride=100, cooldown=200, concept_window=50,
                                    trend_windows=4),
    "persistence": DetectorConfig(ks_window=300, ks_stride=100, cooldown=200,
                                  persistence_n=2, persistence_m=3, concept_window=50,
                                  trend_windows=4),
    "no_gather": DetectorConfig(gather_events=0, cooldown=100),
}
CUTS = ([0, 6000], [0, 1, 17, 700, 701, 2500, 2509, 6000], [0, 1000, 2000, 3000, 4000, 5000, 6000])


def feed(mon, x, cats, pred, act, cuts):
    """The decisions of every micro-batch (their snapshot as its SHA-256), the last
    snapshot and the SHA-256 of the saved state at the end, as plain JSON values."""
    out = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        out.append([_plain(d) for d in mon.update_features(x[a:b], {"cat": cats[a:b]})])
        out.append([_plain(d) for d in mon.update_labelled(pred[a:b], act[a:b])])
    out.append(mon.snapshot())
    out.append(hashlib.sha256(mon.state_to_bytes()).hexdigest())
    return json.loads(json.dumps(out))


def _plain(decision):
    d = decision.to_dict()
    d["metrics"] = hashlib.sha256(json.dumps(d["metrics"]).encode()).hexdigest()
    return d


def runs():
    """Every recorded run: name -> its outputs."""
    out = {}
    for shuffled in (False, True):
        p = profile(shuffled=shuffled)
        for name, cfg in CONFIGS.items():
            for k, cuts in enumerate(CUTS):
                key = f"{'shuffled' if shuffled else 'time'}/{name}/cuts{k}"
                out[key] = feed(ModelMonitor(p, cfg), *stream(7), list(cuts))
    return out


def saved_monitor():
    """The monitor whose state was saved: every statistic under way."""
    mon = ModelMonitor(profile(), CONFIGS["persistence"])
    feed(mon, *stream(3), [0, 1000, SAVE_AT])
    return mon


def continuation(mon):
    return feed(mon, *stream(3), [SAVE_AT, SAVE_AT + 1, 2800, 2801, 6000])


def record_decisions():
    """Record the decisions again (the saved states stay those recorded before the
    signal contract): what ``test_recorded`` compares with after a change of them."""
    recorded = runs()
    mon = ModelMonitor.from_state(profile(), STATE_FILE.read_bytes(),
                                  config=CONFIGS["persistence"])
    recorded["continued_from_saved_state"] = continuation(mon)
    # the full bytes hold the profile as saved then, without its data-quality rates
    recorded["continued_from_saved_full"] = continuation(
        ModelMonitor.from_bytes(FULL_FILE.read_bytes()))
    DECISIONS_FILE.write_bytes(gzip.compress(json.dumps(recorded).encode(), mtime=0))


def main():
    DATA.mkdir(exist_ok=True)
    mon = saved_monitor()
    STATE_FILE.write_bytes(mon.state_to_bytes())
    FULL_FILE.write_bytes(mon.to_bytes())
    recorded = runs()
    recorded["continued_from_saved_state"] = continuation(mon)
    DECISIONS_FILE.write_bytes(gzip.compress(json.dumps(recorded).encode(), mtime=0))


if __name__ == "__main__":
    main()
