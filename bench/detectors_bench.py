"""Bench of driftline's streaming core against River and a naive repeated KS.

Run ``python -m bench.detectors_bench [--quick]``. Prints, per detector: false alarms
per 100,000 stationary events (10 and 50 columns of mixed distributions), delay in
events and columns named per scenario, events per second and peak memory.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import pandas as pd
from scipy import stats

from detectors import DetectorConfig, ModelMonitor, ReferenceProfile

DISTS = ("normal", "lognormal", "uniform", "exponential", "student_t", "poisson")


def mixed(rng, n, cols):
    out = np.empty((n, cols))
    for j in range(cols):
        kind = DISTS[j % len(DISTS)]
        out[:, j] = {"normal": lambda: rng.normal(size=n),
                     "lognormal": lambda: rng.lognormal(size=n),
                     "uniform": lambda: rng.uniform(size=n),
                     "exponential": lambda: rng.exponential(size=n),
                     "student_t": lambda: rng.standard_t(4, size=n),
                     "poisson": lambda: rng.poisson(3, size=n).astype(float)}[kind]()
    return out


def profile(rng, cols, n=20000, mix=True):
    x = mixed(rng, n, cols) if mix else rng.normal(size=(n, cols))
    return ReferenceProfile.from_frame(pd.DataFrame(x, columns=[f"x{j}" for j in range(cols)]))


def run_monitor(mon, x, batch=10000):
    out = []
    for s in range(0, len(x), batch):
        out += mon.update_features(x[s:s + batch])
    return out


def scenario(name, rng, change_at=20000, n=30000):
    x = rng.normal(size=(n, 10))
    if name == "shift_0.3":
        x[change_at:, [3, 7]] += 0.3
    elif name == "shift_1.0":
        x[change_at:, [3, 7]] += 1.0
    elif name == "variance_x2":
        x[change_at:, [3, 7]] *= np.sqrt(2)
    elif name == "ramp":
        x[change_at:, [3, 7]] += np.linspace(0, 2, n - change_at)[:, None]
    elif name == "outliers_8pct":
        hit = rng.random(n - change_at) < 0.08
        x[change_at:, 3][hit] = 6 * rng.choice([-1, 1], size=hit.sum())
        x[change_at:, 7][hit] = 6 * rng.choice([-1, 1], size=hit.sum())
    return x


def naive_ks(ref, x, window=1000, every=500):
    alarms = []
    for t in range(window, len(x) + 1, every):
        w = x[t - window:t]
        if any(stats.ks_2samp(ref[j], w[:, j], method="asymp").pvalue < 0.05
               for j in range(x.shape[1])):
            alarms.append(t - 1)
    return alarms


def river_alarms(make, x):
    dets = [make() for _ in range(x.shape[1])]
    alarms = []
    for t in range(len(x)):
        fired = False
        for j, d in enumerate(dets):
            d.update(float(x[t, j]))
            fired |= d.drift_detected
        if fired:
            alarms.append(t)
    return alarms


def timed(fn):
    tracemalloc.start()
    t = time.perf_counter()
    res = fn()
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return res, dt, peak


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    n10 = 200_000 if args.quick else 1_000_000
    n50 = 60_000 if args.quick else 300_000
    cfg = DetectorConfig()
    print(f"# driftline bench (quick={args.quick})")
    for cols, n in ((10, n10), (50, n50)):
        p = profile(rng, cols)
        x = mixed(rng, n, cols)
        t0 = time.perf_counter()
        mon = ModelMonitor(p, cfg)
        cal_s = time.perf_counter() - t0
        dec, dt, _ = timed(lambda: run_monitor(mon, x))
        print(f"driftline stationary {cols} cols: {len(dec)} alarms in {n} events "
              f"({len(dec) / n * 1e5:.2f} per 100k), {n / dt:,.0f} events/s "
              f"(calibration {cal_s * 1000:.0f} ms)")
    # speed without tracemalloc overhead
    p = profile(rng, 10)
    x = mixed(rng, 500_000, 10)
    mon = ModelMonitor(p, cfg)
    t = time.perf_counter(); run_monitor(mon, x); dt = time.perf_counter() - t
    speed = len(x) / dt
    _, _, peak = timed(lambda: run_monitor(ModelMonitor(p, cfg), x[:100_000]))
    print(f"driftline speed 10 cols: {speed:,.0f} events/s, peak memory "
          f"{peak / 2**20:.1f} MiB (batch 10,000)")
    # scenarios (normal columns, change at 20,000)
    pn = profile(rng, 10, mix=False)
    for name in ("shift_0.3", "shift_1.0", "variance_x2", "ramp", "outliers_8pct"):
        delays, named = [], []
        for rep in range(3 if args.quick else 10):
            x = scenario(name, np.random.default_rng(100 + rep))
            dec = run_monitor(ModelMonitor(pn, cfg), x, batch=1000)
            after = [d for d in dec if d.offset >= 20000]
            early = [d for d in dec if d.offset < 20000]
            if after:
                delays.append(after[0].offset - 20000)
                named.append(",".join(after[0].columns))
            else:
                delays.append(None)
            if early:
                named.append(f"(false alarm at {early[0].offset})")
        ok = [d for d in delays if d is not None]
        print(f"driftline {name}: median delay {np.median(ok) if ok else 'missed'} "
              f"(runs {delays}), columns {sorted(set(named))}")
    # labelled error rise
    delays = []
    for rep in range(5):
        r = np.random.default_rng(200 + rep)
        act = r.normal(size=8000)
        pred = act + r.normal(scale=0.5, size=8000)
        pred[4000:] = act[4000:] + r.normal(scale=0.75, size=4000)  # RMSE +50 %
        dec = ModelMonitor(pn, cfg).update_labelled(pred, act)
        delays.append(dec[0].offset - 4000 if dec else None)
    print(f"driftline error_rise(+50% rmse): delays {delays}")
    # baselines on a shorter stream (they are slow)
    from river import drift
    ns = 20_000 if args.quick else 50_000
    ref = rng.normal(size=(20000, 10))
    xs = rng.normal(size=(ns, 10))
    base = {}
    for name, make in (("KSWIN", lambda: drift.KSWIN(seed=1)), ("ADWIN", drift.ADWIN),
                       ("PageHinkley", drift.PageHinkley)):
        nn = ns if name != "KSWIN" else ns // 10
        al, dt, peak = timed(lambda: river_alarms(make, xs[:nn]))
        base[name] = nn / dt
        print(f"river {name} stationary 10 cols: {len(al) / nn * 1e5:.0f} alarms/100k, "
              f"{nn / dt:,.0f} events/s, peak {peak / 2**20:.1f} MiB")
    al, dt, peak = timed(lambda: naive_ks(ref.T, xs))
    base["naive"] = ns / dt
    print(f"naive repeated KS stationary 10 cols: {len(al) / ns * 1e5:.0f} alarms/100k, "
          f"{ns / dt:,.0f} events/s, peak {peak / 2**20:.1f} MiB")
    xs50 = rng.normal(size=(ns, 50))
    al = naive_ks(rng.normal(size=(50, 20000)), xs50)
    print(f"naive repeated KS stationary 50 cols: {len(al) / ns * 1e5:.0f} alarms/100k")
    print(f"speed ratio driftline/KSWIN {speed / base['KSWIN']:,.0f}x, "
          f"driftline/naive KS {speed / base['naive']:,.1f}x")


if __name__ == "__main__":
    main()
