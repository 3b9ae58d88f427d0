"""The data-quality signals (``missing``, ``stuck``, ``unseen_category``): each fires
on its broken feed naming what broke, stays silent on stationary streams (serially
dependent, tied integers, values missing at random) and is saved and restored
exactly."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.signal import lfilter

from detectors import ModelMonitor, ReferenceProfile
from detectors.severity import at_least

REF, N, CHANGE = 5000, 30_000, 15_000
LEVELS = np.array(["card", "cash", "wire", "voucher"])


def ar_columns(rng, n, phi):
    """Four AR(1) ``phi`` columns: normal, lognormal, Poisson(3) (tied), uniform."""
    e = rng.normal(size=(n, 4)) * np.sqrt(1 - phi * phi)
    u = lfilter([1.0], [1.0, -phi], e, axis=0)
    p = stats.norm.cdf(u)
    return np.column_stack([u[:, 0], np.exp(u[:, 1]), stats.poisson.ppf(p[:, 2], 3), p[:, 3]])


def feed(seed, phi=0.0, missing_at_random=0.05):
    """A reference frame and a stream (numeric, categorical) of the same process, with
    ``missing_at_random`` of two columns missing in both."""
    rng = np.random.default_rng(seed)
    x = ar_columns(rng, REF + N, phi)
    for j in (0, 2):
        x[rng.random(len(x)) < missing_at_random, j] = np.nan
    cat = rng.choice(LEVELS, size=REF + N, p=[0.5, 0.3, 0.15, 0.05]).astype(object)
    cat[rng.random(len(cat)) < missing_at_random] = None
    ref = pd.DataFrame(x[:REF], columns=["a", "b", "c", "d"])
    ref["pay"] = cat[:REF]
    return ReferenceProfile.from_frame(ref), x[REF:], cat[REF:]


def decisions(profile, x, cat, batch=1000):
    mon = ModelMonitor(profile)
    out = []
    for s in range(0, len(x), batch):
        out += mon.update_features(x[s:s + batch], {"pay": cat[s:s + batch]})
    return out


def first_after(decs, signal):
    after = [d for d in decs if d.offset >= CHANGE]
    assert after, "no decision after the change"
    causes = {r["signal"]: r for r in after[0].root_cause}
    assert signal in causes, after[0].root_cause
    return after[0], causes[signal]


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.8])
def test_stationary_streams_with_values_missing_at_random_are_silent(phi):
    p, x, cat = feed(1, phi)
    quality = {"missing", "stuck", "unseen_category"}
    assert not [r for d in decisions(p, x, cat) for r in d.root_cause
                if r["signal"] in quality]


def test_a_broken_feed_is_named_with_both_shares_and_at_least_high():
    p, x, cat = feed(2)
    x[CHANGE:, 1][np.random.default_rng(0).random(N - CHANGE) < 0.4] = np.nan
    d, cause = first_after(decisions(p, x, cat), "missing")
    assert cause["column"] == "b" and d.offset - CHANGE <= 200
    assert cause["detail"]["reference_share"] == 0.0 and cause["detail"]["share"] > 0.3
    assert at_least(d.severity, "HIGH") and "data_quality" in d.trigger_types


def test_a_column_missing_in_the_reference_fires_only_past_its_rate():
    p, x, cat = feed(3)
    assert p.quality["missing"]["a"] == pytest.approx(0.05, abs=0.01)
    x[CHANGE:, 0][np.random.default_rng(1).random(N - CHANGE) < 0.25] = np.nan
    d, cause = first_after(decisions(p, x, cat), "missing")
    assert cause["column"] == "a" and d.offset - CHANGE <= 1000


def test_a_missing_categorical_value_counts_as_missing():
    p, x, cat = feed(4)
    cat[CHANGE:][np.random.default_rng(2).random(N - CHANGE) < 0.4] = None
    _, cause = first_after(decisions(p, x, cat), "missing")
    assert cause["column"] == "pay"


@pytest.mark.parametrize("column,j", [("b", 1), ("c", 2)])
def test_a_column_stuck_at_its_median_names_the_value_and_is_high(column, j):
    p, x, cat = feed(5, phi=0.5)
    median = float(np.nanmedian(x[:CHANGE, j]))
    x[CHANGE:, j] = median
    d, cause = first_after(decisions(p, x, cat), "stuck")
    assert cause["column"] == column and cause["detail"]["value"] == median
    assert d.offset - CHANGE <= 300 and at_least(d.severity, "HIGH")


def test_a_new_level_is_named_with_its_share():
    p, x, cat = feed(6)
    cat[CHANGE:][np.random.default_rng(3).random(N - CHANGE) < 0.03] = "crypto"
    d, cause = first_after(decisions(p, x, cat), "unseen_category")
    assert list(cause["detail"]["levels"]) == ["crypto"] and d.offset - CHANGE <= 300


def test_rare_reference_levels_make_new_levels_plausible():
    """A reference whose values are mostly of levels seen once expects new ones."""
    rng = np.random.default_rng(7)
    ids = np.array([f"id{k}" for k in range(REF + N)], dtype=object)
    ref = pd.DataFrame({"a": rng.normal(size=REF), "pay": ids[:REF]})
    p = ReferenceProfile.from_frame(ref)
    decs = decisions(p, rng.normal(size=(N, 1)), ids[REF:])
    assert not [r for d in decs for r in d.root_cause if r["signal"] == "unseen_category"]


def test_quality_signals_are_saved_and_restored_exactly():
    p, x, cat = feed(8)
    x[CHANGE:, 1] = 1.0
    x[CHANGE:, 0][np.random.default_rng(4).random(N - CHANGE) < 0.4] = np.nan
    cat[CHANGE:][np.random.default_rng(5).random(N - CHANGE) < 0.05] = "crypto"
    a = ModelMonitor(p)
    cut = CHANGE + 5  # every quality statistic under way
    a.update_features(x[:cut], {"pay": cat[:cut]})
    assert a.signals["unseen_category"].new["pay"] or a.signals["stuck"].rate.s.any()
    b = ModelMonitor.from_state(p, a.state_to_bytes())
    assert b.state_to_bytes() == a.state_to_bytes()
    rest = (x[cut:], {"pay": cat[cut:]})
    assert json.dumps([d.to_dict() for d in a.update_features(*rest)]) == \
        json.dumps([d.to_dict() for d in b.update_features(*rest)])  # NaN equal


def test_a_profile_saved_before_the_quality_rates_loads_and_keeps_its_fingerprint():
    p, x, cat = feed(9)
    old = ReferenceProfile.from_bytes(p.to_bytes())
    object.__setattr__(old, "quality", None)
    again = ReferenceProfile.from_bytes(old.to_bytes())
    assert again.quality is None and again.fingerprint == p.fingerprint
    assert ReferenceProfile.from_bytes(p.to_bytes()).quality == p.quality
    assert not decisions(again, x[:5000], cat[:5000])
