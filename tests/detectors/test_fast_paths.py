"""The fast paths equal their plain reference implementations exactly."""

import numpy as np
from hypothesis import given, settings, strategies as st

from detectors.cusum import affine_scan, block_extremes, lindley, lindley_scan
from detectors.grid import SlotLookup
from detectors.outliers import OutlierRate
from detectors.persistence import n_of_m
from detectors.ranks import RankTransform

finite = st.one_of(st.integers(-4, 4).map(float), st.floats(-1e6, 1e6, allow_nan=False),
                   st.floats(-1e-3, 1e-3, allow_nan=False))
probe = st.one_of(finite, st.just(float("nan")), st.just(float("inf")),
                  st.just(float("-inf")))


def _check(columns, x):
    rts = [RankTransform(np.asarray(c)) for c in columns]
    lk = SlotLookup([t.values for t in rts])
    got = lk.local(lk.slots(x))
    for j, t in enumerate(rts):
        want = t.slots(x[j])
        want[want < 0] = 2 * len(t.values) + 1  # the NaN code
        assert np.array_equal(got[j], want), j


@settings(max_examples=200, deadline=None)
@given(cols=st.lists(st.lists(finite, min_size=1, max_size=80), min_size=1, max_size=10),
       data=st.data())
def test_slot_lookup_equals_searchsorted(cols, data):
    n = data.draw(st.integers(1, 40))
    x = np.array([[data.draw(st.one_of(probe, st.sampled_from(c))) for _ in range(n)]
                  for c in cols])
    _check(cols, x)


def test_slot_lookup_on_skewed_clustered_and_tied_data():
    rng = np.random.default_rng(4)
    cols = [rng.lognormal(size=10000), rng.standard_t(2, 10000), rng.poisson(3, 10000),
            np.r_[rng.normal(size=5000) * 1e-9, 1e9 + rng.normal(size=5000)],
            np.round(rng.normal(size=10000), 2), np.full(100, 7.0)]
    x = np.stack([rng.choice(c, 20000) + rng.choice([0, 0, 1e-12, -1e-9], 20000)
                  for c in cols])
    _check(cols, x)


@settings(max_examples=200, deadline=None)
@given(incr=st.lists(st.floats(-5, 5), min_size=1, max_size=90),
       s0=st.floats(0, 6), h=st.floats(0.1, 8), block=st.sampled_from([1, 2, 16]))
def test_lindley_scan_equals_lindley(incr, s0, h, block):
    inc = np.array(incr)[None, :]
    walk = np.cumsum(inc, axis=1)
    s_end, rows, paths, last0 = lindley_scan(walk, np.array([s0]), h, block)
    exact = lindley(inc.T, np.array([s0]))[:, 0]
    assert np.isclose(s_end[0], exact[-1], atol=1e-9)
    # the last zero of the path (Page's change-point estimate), -1 if none
    zeros = np.flatnonzero(walk[0] - np.minimum(np.minimum.accumulate(walk[0]), -s0) == 0)
    assert last0.tolist() == [zeros[-1] if zeros.size else -1]
    if (exact > h + 1e-9).any():
        assert rows.tolist() == [0]
    if rows.size:
        np.testing.assert_allclose(paths[0], exact, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), rows=st.integers(1, 4), n=st.integers(1, 70),
       block=st.sampled_from([1, 2, 16]), ties=st.booleans())
def test_affine_scan_equals_lindley_scan_on_the_formed_walk(data, rows, n, block, ties):
    x = np.array(data.draw(st.lists(st.lists(
        st.integers(-2, 2).map(float) if ties else st.floats(-4, 4), min_size=n,
        max_size=n), min_size=rows, max_size=rows)))
    cz = np.cumsum(x, axis=1)
    scale = np.array(data.draw(st.lists(st.sampled_from([0.3, -0.3, 1.0, -1.0, 0.25, 2.5]),
                                        min_size=rows, max_size=rows)))
    drift = np.array(data.draw(st.lists(st.sampled_from([0.0, 0.045, 0.5, 0.1, -0.2]),
                                        min_size=rows, max_size=rows)))
    s0 = np.array(data.draw(st.lists(st.floats(0, 5), min_size=rows, max_size=rows)))
    h = np.array(data.draw(st.lists(st.floats(0.1, 6), min_size=rows, max_size=rows)))
    walk = cz * scale[:, None] - np.multiply.outer(drift, np.arange(1.0, n + 1))
    want = lindley_scan(walk, s0, h, block)
    got = affine_scan(cz, *block_extremes(cz, block), scale, drift, s0, h, block)
    if block == 2:  # extremes found on the way to a coarser block (its padding kept)
        fine = block_extremes(cz, 16, 2)[1]
        again = affine_scan(cz, *fine, scale, drift, s0, h, block)
        assert np.array_equal(again[0], got[0]) and np.array_equal(again[3], got[3])
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[3], want[3])
    assert set(want[1].tolist()) <= set(got[1].tolist())
    for i, j in enumerate(got[1]):  # exact paths of every candidate row
        exact = lindley(walk[j][:, None] - np.r_[0.0, walk[j][:-1]][:, None], s0[j:j + 1])
        np.testing.assert_allclose(got[2][i], exact[:, 0], atol=1e-9)
        if j in want[1]:
            assert np.array_equal(got[2][i], want[2][list(want[1]).index(j)])


def test_outlier_fast_path_matches_plain_path():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 2))
    x[1500::7, 0] = 8.0
    a = OutlierRate([0, 0], [1, 1], p0=[0.005] * 2, p1=[0.08] * 2, threshold=[6.0] * 2)
    b = OutlierRate.from_bytes(a.to_bytes())
    path, rate = a.update_many(x)
    for part in np.array_split(np.arange(3000), 4):
        rows, paths, rates, _ = b.advance(b.indicators_t(np.ascontiguousarray(x[part].T)))
        for i, j in enumerate(rows):
            np.testing.assert_allclose(paths[i], path[part, j], atol=1e-9)
            np.testing.assert_allclose(rates[i], rate[part, j], atol=1e-12)
    assert np.allclose(a.s, b.s) and (a.seg_len == b.seg_len).all()
    assert (a.seg_count == b.seg_count).all()


@settings(max_examples=200, deadline=None)
@given(flags=st.lists(st.booleans(), min_size=1, max_size=40), m=st.integers(1, 6),
       data=st.data(), cut=st.integers(0, 40))
def test_n_of_m_equals_brute_force(flags, m, data, cut):
    n = data.draw(st.integers(1, m))
    f = np.array(flags)
    want = [f[i] and f[max(0, i - m + 1):i + 1].sum() >= n for i in range(len(f))]
    hist = np.zeros((1, m - 1), bool)
    cut = min(cut, len(f))  # two batches: the rule must not depend on the cut
    ok1, hist = n_of_m(f[None, :cut], hist, n)
    ok2, hist = n_of_m(f[None, cut:], hist, n)
    assert np.r_[ok1[0], ok2[0]].tolist() == want


@settings(max_examples=100, deadline=None)
@given(codes=st.lists(st.integers(-1, 3), min_size=0, max_size=60), window=st.integers(1, 12),
       stride=st.integers(1, 7), cut=st.integers(0, 60))
def test_categorical_window_equals_one_bincount_per_checkpoint(codes, window, stride, cut):
    from detectors.categorical import CategoricalWindow, chi2_homogeneity, pooled_cells
    det = CategoricalWindow({"a": 5, "b": 3, "c": 2}, window=window, stride=stride)
    c = np.array(codes, dtype=np.int64)
    cell = pooled_cells(np.array([5, 3, 2]), window)  # the unseen code 3 is in no cell
    ref = np.bincount(cell, weights=[5.0, 3.0, 2.0], minlength=cell.max() + 1)
    got = []
    cut = min(cut, len(c))
    for at, part in ((0, c[:cut]), (cut, c[cut:])):  # two batches: same checkpoints
        idx, stat, tv = det.update_codes(part)
        got += [(int(i) + at, s, t) for i, s, t in zip(idx, stat, tv)]
    for i, s, t in got:
        w = c[max(0, i - window + 1):i + 1]
        w = w[(w >= 0) & (w < 3)]
        want = chi2_homogeneity(ref, np.bincount(cell[w], minlength=len(ref)).astype(float))
        assert (i + 1) % stride == 0
        assert np.isclose(s, want[0], rtol=1e-12, atol=1e-12) and np.isclose(t, want[1])
