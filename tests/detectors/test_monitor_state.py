"""Compact streaming state: restore(save(m)) continues exactly like m."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from detectors import DetectorConfig, ModelMonitor, ReferenceProfile, StateError


def _profile(cols=3, seed=0, n=3000):
    rng = np.random.default_rng(seed)
    ref = pd.DataFrame(rng.normal(size=(n, cols)), columns=[f"x{i}" for i in range(cols)])
    ref["cat"] = rng.choice(["a", "b", "c"], size=n)
    ref["pred"] = rng.normal(size=n)
    ref["act"] = ref["pred"] + rng.normal(scale=0.5, size=n)
    return ReferenceProfile.from_frame(ref, prediction_column="pred", actual_column="act")


PROFILE = _profile()
CONFIG = DetectorConfig(ks_window=300, ks_stride=100, cooldown=200, persistence_n=2,
                        persistence_m=3, concept_window=50, trend_windows=4)


def _stream(seed, n=4000):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x[n // 2:, 1] += 0.7
    x[rng.random((n, 3)) < 0.01] = np.nan
    cats = rng.choice(["a", "b", "c", "d"], size=n, p=[0.4, 0.3, 0.2, 0.1])
    act = rng.normal(size=n)
    pred = act + rng.normal(scale=np.r_[np.full(n // 2, 0.5), np.full(n - n // 2, 1.0)])
    return x, cats, pred, act


def _dump(decisions):
    return json.dumps([d.to_dict() for d in decisions])


def _feed(mon, x, cats, pred, act, cuts, inspect=False):
    """Decisions per micro-batch; with ``inspect`` also the snapshot and the saved
    state after each (the statistics, not only the rare decisions, must agree)."""
    out = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        out.append(_dump(mon.update_features(x[a:b], {"cat": cats[a:b]})))
        out.append(_dump(mon.update_labelled(pred[a:b], act[a:b])))
        if inspect:
            out.append(json.dumps(mon.snapshot()))
            out.append(mon.state_to_bytes())
    return out


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10**6), stop=st.integers(1, 3999),
       sizes=st.lists(st.integers(1, 1500), min_size=1, max_size=4))
def test_from_state_continues_exactly(seed, stop, sizes):
    x, cats, pred, act = _stream(seed)
    a = ModelMonitor(PROFILE, CONFIG)
    _feed(a, x, cats, pred, act, [0, stop])
    b = ModelMonitor.from_state(PROFILE, a.state_to_bytes())
    c = ModelMonitor.from_bytes(a.to_bytes())
    cuts = sorted({stop, *np.minimum(stop + np.cumsum(sizes), len(x)), len(x)})
    ra = _feed(a, x, cats, pred, act, cuts)
    assert ra == _feed(b, x, cats, pred, act, cuts) == _feed(c, x, cats, pred, act, cuts)
    assert json.dumps(a.snapshot()) == json.dumps(b.snapshot())
    assert a.state_to_bytes() == b.state_to_bytes()


def test_state_fires_and_is_small():
    x, cats, pred, act = _stream(1)
    a = ModelMonitor(PROFILE, CONFIG)
    fired = _feed(a, x, cats, pred, act, [0, 1000, 4000])
    assert any(f != "[]" for f in fired)
    assert len(a.state_to_bytes()) < len(a.to_bytes()) / 3.5


def test_state_sizes_for_10_and_50_columns():
    rng = np.random.default_rng(0)
    for cols, limit in ((10, 60_000), (50, 200_000)):
        ref = pd.DataFrame(rng.normal(size=(20000, cols)))
        ref.columns = [f"c{i}" for i in range(cols)]
        mon = ModelMonitor(ReferenceProfile.from_frame(ref))
        mon.update_features(rng.normal(size=(5000, cols)))
        assert len(mon.state_to_bytes()) < limit


def test_from_state_rejects_other_profile_config_task_and_garbage():
    a = ModelMonitor(PROFILE, CONFIG)
    state = a.state_to_bytes()
    with pytest.raises(StateError, match="reference profile"):
        ModelMonitor.from_state(_profile(seed=1), state)
    with pytest.raises(StateError, match="config"):
        ModelMonitor.from_state(PROFILE, state, config=DetectorConfig())
    with pytest.raises(StateError, match="task"):
        ModelMonitor.from_state(PROFILE, state, task="classification")
    with pytest.raises(StateError):
        ModelMonitor.from_state(PROFILE, b"not a state")
    with pytest.raises(StateError):
        ModelMonitor.from_state(PROFILE, a.to_bytes())
    # given config and task equal to the recorded ones: accepted, and the restored
    # monitor continues exactly like the original on the same further data
    x, cats, pred, act = _stream(3)
    x[1000::15, 2] = 6.0  # outliers too: every test's statistic is under way at the save
    _feed(a, x, cats, pred, act, [0, 2150])
    assert (a.signals["outlier_rate"].rate.s > 0).any() and a.labelled.s[0] > 0 and a._hist["seq"].any()
    state = a.state_to_bytes()
    b = ModelMonitor.from_state(PROFILE, state, config=CONFIG, task="regression")
    assert isinstance(b, ModelMonitor) and b.config == CONFIG and b.task == "regression"
    assert json.dumps(b.snapshot()) == json.dumps(a.snapshot())
    cuts = [2150, 2151, 2200, 2800, 2801, 4000]
    ra, rb = _feed(a, x, cats, pred, act, cuts, True), _feed(b, x, cats, pred, act, cuts, True)
    assert any(r != "[]" for r in ra[0::4] + ra[1::4])  # decisions to compare
    assert ra == rb  # decisions, snapshots and states after every micro-batch


def _pack_format_1(kind, obj):
    """`detectors._state.pack` as it was before format 2: an .npz archive."""
    import io

    arrays = {}

    def enc(x):
        if isinstance(x, np.ndarray):
            arrays[key := f"a{len(arrays)}"] = x
            return {"__nd__": key}
        if isinstance(x, dict):
            return {"__dict__": [[enc(k), enc(v)] for k, v in x.items()]}
        if isinstance(x, (list, tuple)):
            return [enc(v) for v in x]
        return x.item() if isinstance(x, np.generic) else x

    header = json.dumps({"magic": "driftline-state-v1", "kind": kind, "body": enc(obj)})
    arrays["__header__"] = np.frombuffer(header.encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_states_saved_in_format_1_are_still_read():
    from detectors import _monitor_state

    x, cats, pred, act = _stream(5)
    a = ModelMonitor(PROFILE, CONFIG)
    _feed(a, x, cats, pred, act, [0, 2000])
    old = _pack_format_1(_monitor_state._STATE_KIND, _monitor_state._body(a))
    assert old[:2] == b"PK" and a.state_to_bytes()[:4] == b"DLS2"
    b = ModelMonitor.from_state(PROFILE, old, config=CONFIG)
    assert b.state_to_bytes() == a.state_to_bytes()
    cuts = [2000, 2500, 4000]
    assert _feed(a, x, cats, pred, act, cuts) == _feed(b, x, cats, pred, act, cuts)


def test_truncated_or_padded_state_is_rejected():
    state = ModelMonitor(PROFILE, CONFIG).state_to_bytes()
    for bad in (state[:-1], state + b"\0", state[:6], b"DLS2\xff\xff\xff\xff{}"):
        with pytest.raises(StateError):
            ModelMonitor.from_state(PROFILE, bad)
