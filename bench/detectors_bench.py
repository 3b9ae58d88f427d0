"""Bench of driftline's streaming core against River and a naive repeated KS.

Run ``python -m bench.detectors_bench [--quick]``. Prints, per detector: false alarms
per 100,000 stationary events (10 and 50 columns of mixed distributions), delay in
events and columns named per scenario, events per second (driftline, River and the
naive KS measured in the same run), peak memory and the monitor's state sizes.
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
SCENARIOS = ("shift_0.3", "shift_1.0", "variance_x2", "ramp", "outliers_8pct")
CHANGE = 20_000  # change point of the scenario streams
LEAD = 5_000  # baselines see only the last LEAD events before the change (they are slow)


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


def scenario(name, rng, change_at=CHANGE, n=30000):
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
    """The design's check repeated on a sliding window: ``(t, columns)`` per alarm."""
    alarms = []
    for t in range(window, len(x) + 1, every):
        w = x[t - window:t]
        cols = [j for j in range(x.shape[1])
                if stats.ks_2samp(ref[j], w[:, j], method="asymp").pvalue < 0.05]
        if cols:
            alarms.append((t - 1, cols))
    return alarms


def river_alarms(make, x):
    """One River detector per column: ``(t, columns)`` per event with an alarm."""
    dets = [make() for _ in range(x.shape[1])]
    alarms = []
    for t in range(len(x)):
        cols = []
        for j, d in enumerate(dets):
            d.update(float(x[t, j]))
            if d.drift_detected:
                cols.append(j)
        if cols:
            alarms.append((t, cols))
    return alarms


def timed(fn):
    tracemalloc.start()
    t = time.perf_counter()
    res = fn()
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return res, dt, peak


def best_speed(make, x, repeats=5, batch=10000):
    """Best of ``repeats`` runs (wall clock and CPU time) on a fresh monitor each."""
    wall = cpu = 0.0
    for _ in range(repeats):
        mon = make()
        t, c = time.perf_counter(), time.process_time()
        run_monitor(mon, x, batch)
        wall = max(wall, len(x) / (time.perf_counter() - t))
        cpu = max(cpu, len(x) / (time.process_time() - c))
    return wall, cpu


def first_after(alarms, change, changed=None):
    """Delay and columns of the first alarm at or after ``change`` (None if none); with
    ``changed``, the first that names a changed column (a detector that fires all the
    time would otherwise get a delay from its false alarms)."""
    for t, cols in alarms:
        if t >= change and (changed is None or set(cols) & changed):
            return t - change, ",".join(f"x{j}" for j in cols)
    return None, ""


def summary(delays, named):
    ok = [d for d in delays if d is not None]
    med = f"{np.median(ok):.0f}" if ok else "missed"
    return f"median delay {med} (runs {delays}), columns {sorted(set(named))}"


def soak_and_speed(args, cfg):
    rng = np.random.default_rng(0)
    n10 = 200_000 if args.quick else 1_000_000
    n50 = 60_000 if args.quick else 300_000
    speeds = {}
    for cols, n in ((10, n10), (50, n50)):
        p = profile(rng, cols)
        x = mixed(rng, n, cols)
        t0 = time.perf_counter()
        mon = ModelMonitor(p, cfg)
        cal_s = time.perf_counter() - t0
        t = time.perf_counter()
        dec = run_monitor(mon, x)
        dt = time.perf_counter() - t
        print(f"driftline stationary {cols} cols: {len(dec)} alarms in {n:,} events "
              f"({len(dec) / n * 1e5:.2f} per 100k), {n / dt:,.0f} events/s "
              f"(monitor built and calibrated in {cal_s * 1000:.0f} ms)")
        wall, cpu = best_speed(lambda: ModelMonitor(p, cfg), x[:200_000 if cols == 10
                                                                else 60_000])
        speeds[cols] = wall
        _, _, peak = timed(lambda: run_monitor(ModelMonitor(p, cfg), x[:50_000]))
        print(f"driftline speed {cols} cols: {wall:,.0f} events/s wall clock, {cpu:,.0f} "
              f"events/s CPU time (best of 5, batch 10,000), peak memory "
              f"{peak / 2**20:.1f} MiB; state_to_bytes {len(mon.state_to_bytes()):,} B, "
              f"to_bytes {len(mon.to_bytes()):,} B")
    return speeds


def driftline_delays(args, cfg):
    pn = profile(np.random.default_rng(1), 10, mix=False)
    for name in SCENARIOS:
        delays, named, sev = [], [], []
        for rep in range(3 if args.quick else 10):
            x = scenario(name, np.random.default_rng(100 + rep))
            dec = run_monitor(ModelMonitor(pn, cfg), x, batch=1000)
            after = [d for d in dec if d.offset >= CHANGE]
            early = [d for d in dec if d.offset < CHANGE]
            delays.append(after[0].offset - CHANGE if after else None)
            if after:
                named.append(",".join(sorted(after[0].columns)))
                sev.append(after[0].severity)
            if early:
                named.append(f"(false alarm at {early[0].offset})")
        print(f"driftline {name}: {summary(delays, named)}, first severity {sev}")
    delays, sev = [], []
    for rep in range(5):
        pred, act = error_stream(np.random.default_rng(200 + rep))
        dec = ModelMonitor(pn, cfg).update_labelled(pred, act)
        delays.append(dec[0].offset - 4000 if dec else None)
        sev += [dec[0].severity] if dec else []
    print(f"driftline error_rise(+50% rmse): {summary(delays, [])}, first severity {sev}")


def error_stream(r, n=8000):
    act = r.normal(size=n)
    pred = act + r.normal(scale=0.5, size=n)
    pred[n // 2:] = act[n // 2:] + r.normal(scale=0.75, size=n - n // 2)  # RMSE +50 %
    return pred, act


def baseline_delays(args):
    """Delays of River's detectors and the naive KS on the same scenarios (one detector
    per column, an alarm in any column counts; KSWIN, at about 100 events/s for 10
    columns, sees 500 events before the change and 1,500 after)."""
    from river import drift
    makers = {"ADWIN": drift.ADWIN, "PageHinkley": drift.PageHinkley,
              "KSWIN": lambda: drift.KSWIN(seed=1)}
    reps = 1 if args.quick else 3
    ref = np.random.default_rng(7).normal(size=(10, 20000))
    for name in SCENARIOS:
        rows = {k: ([], []) for k in (*makers, "naive KS")}
        for rep in range(reps):
            x = scenario(name, np.random.default_rng(100 + rep))[CHANGE - LEAD:]
            for det, make in makers.items():
                lead = 500 if det == "KSWIN" else LEAD
                if det == "KSWIN" and (args.quick and name != "shift_1.0"):
                    continue
                xs = x[LEAD - lead:LEAD + (1500 if det == "KSWIN" else 10_000)]
                d, cols = first_after(river_alarms(make, xs), lead, {3, 7})
                rows[det][0].append(d)
                rows[det][1].append(cols)
            d, cols = first_after(naive_ks(ref, x), LEAD, {3, 7})
            rows["naive KS"][0].append(d)
            rows["naive KS"][1].append(cols)
        for det, (delays, named) in rows.items():
            if delays:
                print(f"  {det} {name}: {summary(delays, named)}")
    for det, make in makers.items():
        delays = []
        for rep in range(2 if args.quick else 5):
            pred, act = error_stream(np.random.default_rng(200 + rep))
            err = np.abs(act - pred)[:, None]
            lead = 500 if det == "KSWIN" else 4000
            d, _ = first_after(river_alarms(make, err[4000 - lead:]), lead)
            delays.append(d)
        print(f"  {det} error_rise(+50% rmse) on |error|: {summary(delays, [])}")


def baseline_speed(args, speeds):
    from river import drift
    rng = np.random.default_rng(3)
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
    print(f"speed ratio (10 cols) driftline/KSWIN {speeds[10] / base['KSWIN']:,.0f}x, "
          f"driftline/naive KS {speeds[10] / base['naive']:,.1f}x")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    cfg = DetectorConfig()
    print(f"# driftline bench (quick={args.quick})")
    speeds = soak_and_speed(args, cfg)
    driftline_delays(args, cfg)
    print("baselines (delay = first alarm at or after the change that names a changed "
          "column; see their false alarm rates below):")
    baseline_delays(args)
    baseline_speed(args, speeds)


if __name__ == "__main__":
    main()
