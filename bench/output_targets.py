"""Targets of the model's outputs (``prediction_drift``) and of features that move
together (``multivariate``): seeded cases of ``python -m bench.detectors_bench
--targets-only`` (``--outputs-only`` runs these alone).

* the prediction's spread halves (``pred = w . x``, then ``0.5 w . x``: a model whose
  outputs collapse towards the mean), every input's marginal unchanged;
* ``corr(x3, x7)`` +0.9 -> -0.9 in 10 standard normal columns, +0.6 -> 0: every
  marginal unchanged;
* stationary: the prediction of 10 AR(1) phi = 0.8 mixed columns (the hardest
  dependence of the table), watched with the prediction drift and the multivariate
  signal on (the other stationary rows of the table have the multivariate one on);
* speed: the streaming core, 10 numeric columns, with both signals on (a profile with
  predictions) against the same core without them, in the same run.
"""

from __future__ import annotations

import time

import dataclasses

import numpy as np
import pandas as pd

from detectors import ModelMonitor, ReferenceProfile

REF = 5_000
CHANGE = 20_000
BATCH = 1_000
NAMES = [f"x{j}" for j in range(10)]
WEIGHTS = np.linspace(1.0, 0.1, 10)


def correlated(rng, n, rho, pair=(3, 7)):
    """10 standard normal columns, ``corr`` of the pair ``rho`` (marginals N(0, 1))."""
    x = rng.normal(size=(n, 10))
    a, b = pair
    x[:, b] = rho * x[:, a] + np.sqrt(1 - rho * rho) * x[:, b]
    return x


def reference(x, pred=None) -> ReferenceProfile:
    ref = pd.DataFrame(x, columns=NAMES)
    if pred is not None:
        ref["prediction"] = pred
    return ReferenceProfile.from_frame(ref, prediction_column="prediction"
                                       if pred is not None else None)


def run(mon, x, pred=None):
    dec = []
    for s in range(0, len(x), BATCH):
        dec += mon.update_features(x[s:s + BATCH], None,
                                   None if pred is None else pred[s:s + BATCH])
    return dec


def first_after(dec, change, signal):
    """Delay of the first decision at or after ``change`` naming ``signal`` (None),
    its named columns, and the decisions before the change."""
    hit = [d for d in dec if d.offset >= change
           and any(r["signal"] == signal for r in d.root_cause)]
    early = sum(d.offset < change for d in dec)
    if not hit:
        return None, [], early
    cols = [r["column"] for r in hit[0].root_cause if r["signal"] == signal]
    return hit[0].offset - change, cols, early


def rows(quick, cfg, add, fmt, met):
    reps = 3 if quick else 10
    res, early = [], 0
    for rep in range(reps):
        rng = np.random.default_rng(800 + rep)
        x = rng.normal(size=(REF + 40_000, 10))
        pred = x @ WEIGHTS
        pred[REF + CHANGE:] *= 0.5
        mon = ModelMonitor(reference(x[:REF], pred[:REF]), cfg)
        d, _, e = first_after(run(mon, x[REF:], pred[REF:]), CHANGE, "prediction_drift")
        res.append(d)
        early += e
    add("prediction spread halves, inputs' marginals unchanged", "`prediction_drift`, "
        "mean delay <= 500", f"delay {fmt(res)}; false alarms before: {early}",
        met(res, 500))
    for r0, r1, limit in ((0.9, -0.9, 1000), (0.6, 0.0, 3000)):
        res, named, early = [], [], 0
        for rep in range(reps):
            rng = np.random.default_rng(900 + rep)
            x = np.r_[correlated(rng, REF + CHANGE, r0), correlated(rng, 40_000, r1)]
            mon = ModelMonitor(reference(x[:REF]), cfg)
            d, cols, e = first_after(run(mon, x[REF:]), CHANGE, "multivariate")
            res.append(d)
            named.append(sorted(cols) == ["x3", "x7"])
            early += e
        add(f"corr(x3, x7) {r0:+} -> {r1:+} in 2 of 10 cols, marginals unchanged",
            f"`multivariate`{' naming x3 and x7' if r1 < 0 else ''}, mean delay <= {limit:,}",
            f"delay {fmt(res)}; named x3 and x7 in {sum(named)} of {reps}; "
            f"false alarms before: {early}", met(res, limit) and (r1 >= 0 or all(named)))
    n = 200_000 if quick else 1_000_000
    from bench.detectors_bench import ar_mixed, latent_ar  # noqa: F401 (one generator)
    rng = np.random.default_rng(8)
    x = ar_mixed(rng, REF + n, 10, 0.8)
    pred = np.nan_to_num((x - x[:REF].mean(0)) / x[:REF].std(0)) @ WEIGHTS
    mon = ModelMonitor(reference(x[:REF], pred[:REF]), cfg)
    t = time.process_time()
    k = len(run(mon, x[REF:], pred[REF:]))
    speed = n / (time.process_time() - t)
    add(f"stationary AR(1) phi=0.8, 10 mixed cols and their prediction, {n:,} events",
        "0 false alarms", f"{k} false alarms ({speed:,.0f} rows/s CPU)", k == 0)
    on, off = core_speeds(x[REF:REF + 200_000], pred[REF:REF + 200_000],
                          reference(x[:REF], pred[:REF]), cfg)
    add("streaming core, 10 numeric cols, prediction_drift and multivariate on",
        ">= 0.85x the core without them, same run",
        f"{on:,.0f} rows/s CPU with, {off:,.0f} without ({on / off:.2f}x)", on >= 0.85 * off)


def core_speeds(x, pred, prof, cfg, repeats=3):
    """Rows per CPU second of the core with both signals (a profile with predictions
    and the joint record) and without (the same profile without them); best of
    ``repeats``, interleaved."""
    bare = dataclasses.replace(prof, prediction=None, joint=None)._with_fingerprint()
    best = {True: 0.0, False: 0.0}
    for _ in range(repeats):
        for on in (True, False):
            mon = ModelMonitor(prof if on else bare, cfg)
            t = time.process_time()
            for s in range(0, len(x), 10_000):
                mon.update_features(x[s:s + 10_000], None, pred[s:s + 10_000] if on else None)
            best[on] = max(best[on], len(x) / (time.process_time() - t))
    return best[True], best[False]
