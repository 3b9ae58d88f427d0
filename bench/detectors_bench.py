"""Bench of driftline's streaming core: the quality targets, speed, baselines.

Run ``python -m bench.detectors_bench [--quick] [--baselines] [--speed-only]``. Speed is
rows per second of CPU time on one core (the process is pinned to one CPU; on a shared
machine wall-clock time measures the neighbours), each next to in-process baselines
measured in the same run on the same rows: scipy's ``ks_2samp`` repeated on the
sliding window (the design's check) and River's ADWIN, one per column. Prints the table
of the target cases (fixed seeds; delays are the mean over 10 seeded runs,
3 with --quick, the median and slowest printed beside it; serially dependent Gaussian-copula AR(1)
streams with mixed marginals whose reference is the 5,000 rows before the stream, as a
time-ordered training export would be; independent streams; shifts, variance, outliers,
a categorical change, changes of concept, severity of the first trigger) and the
simulation check of the confidence's meaning; then false alarms per 100,000 stationary
events and events per second (10 and 50 columns), the per-scenario delays, and with
``--baselines`` River's detectors and a naive repeated KS on the same scenarios.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from scipy.signal import lfilter

from detectors import DetectorConfig, ModelMonitor, ReferenceProfile
from bench import estimate_targets, output_targets
from detectors.calibration import count_tests

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


def scenario(name, rng, change_at=CHANGE, n=30000, cols=(3, 7)):
    x = rng.normal(size=(n, 10))
    cols = list(cols)
    if name == "shift_0.3":
        x[change_at:, cols] += 0.3
    elif name == "shift_1.0":
        x[change_at:, cols] += 1.0
    elif name == "variance_x2":
        x[change_at:, cols] *= np.sqrt(2)
    elif name == "ramp":
        x[change_at:, cols] += np.linspace(0, 2, n - change_at)[:, None]
    elif name == "outliers_8pct":
        hit = rng.random(n - change_at) < 0.08
        for j in cols:
            x[change_at:, j][hit] = 6 * rng.choice([-1, 1], size=hit.sum())
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


def pin_one_core() -> str:
    """Pin the process to one CPU (the targets are for one core); returns its name."""
    import os
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"CPU {cpu}"
    except (AttributeError, OSError):  # not on Linux: unpinned
        return "unpinned"


def cpu_rate(fn, rows, repeats=1, setup=None):
    """Best rows per CPU second of ``fn(setup())`` over ``repeats`` runs (``setup``,
    e.g. building a monitor, is not timed)."""
    best = 0.0
    for _ in range(repeats):
        arg = setup() if setup else None
        t = time.process_time()
        fn(arg) if setup else fn()
        best = max(best, rows / max(time.process_time() - t, 1e-9))
    return best


def speed_table(args, cfg):
    """The speed targets: rows/s (not column updates) of the streaming core on
    mixed marginals (normal, lognormal, uniform, exponential, t, Poisson with ties),
    CPU time on one core, best of 3 on a fresh monitor each (batches of 10,000 rows;
    building the monitor, once per model, is not timed), with in-process baselines on
    the same rows and their ratios."""
    from river import drift
    where = pin_one_core()
    rows = []
    for cols, n, target in ((10, 200_000 if args.quick else 1_000_000, 1_000_000),
                            (50, 60_000 if args.quick else 300_000, 200_000)):
        rng = np.random.default_rng(cols + 1000)
        p = profile(rng, cols)
        x = mixed(rng, n, cols)
        ours = cpu_rate(lambda mon: run_monitor(mon, x), n, repeats=3,
                        setup=lambda: ModelMonitor(p, cfg))
        t_wall = time.perf_counter()
        run_monitor(ModelMonitor(p, cfg), x)
        wall = n / (time.perf_counter() - t_wall)
        nk = 20_000
        ref = [np.asarray(s_) for s_ in p.samples]
        ks = cpu_rate(lambda: naive_ks(ref, x[:nk]), nk)
        na = 5_000 if cols == 10 else 1_000
        adwin = cpu_rate(lambda: river_alarms(drift.ADWIN, x[:na]), na)
        rows.append((cols, ours, wall, ks, adwin, target))
    print(f"\n## speed of the streaming core: rows/s of CPU time on one core "
          f"({where}), mixed marginals with ties\n")
    print("| columns | driftline rows/s (CPU) | wall clock (shared machine) | scipy ks_2samp "
          "every 500 rows | ratio | River ADWIN per column | ratio | target | met |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cols, ours, wall, ks, adwin, target in rows:
        print(f"| {cols} | {ours:,.0f} | {wall:,.0f} | {ks:,.0f} | {ours / ks:,.0f}x | "
              f"{adwin:,.0f} | {ours / adwin:,.0f}x | >= {target:,} | "
              f"{'yes' if ours >= target else 'NO'} |")
    return {cols: ours for cols, ours, *_ in rows}


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


# -- serially dependent streams and the target table ---------------------

REF_ROWS = 5_000  # the time-ordered reference: the rows just before the stream
NAMES10 = [f"x{j}" for j in range(10)]


def _marginal(u, kind):
    """Column of marginal ``kind`` from latent standard normal ``u`` (Gaussian copula):
    ties (Poisson) and heavy tails (Student t, lognormal) included."""
    p = stats.norm.cdf(u)
    if kind == "normal":
        return u.copy()
    if kind == "lognormal":
        return np.exp(u)
    if kind == "uniform":
        return p
    if kind == "exponential":
        return -np.log1p(-p)
    if kind == "student_t":
        return stats.t.ppf(p, 4)
    return stats.poisson.ppf(p, 3)


def latent_ar(rng, n, cols, phi):
    """Standard normal AR(1) columns with coefficient ``phi``, started stationary:
    ``u_0 = e_0``, ``u_t = phi u_(t-1) + sqrt(1 - phi^2) e_t``."""
    e = rng.normal(size=(n, cols))
    if not phi:
        return e
    e[1:] *= np.sqrt(1 - phi * phi)
    return lfilter([1.0], [1.0, -phi], e, axis=0)


def ar_mixed(rng, n, cols, phi):
    """``n`` events of ``cols`` mixed-marginal columns, AR(1) ``phi`` in the copula."""
    u = latent_ar(rng, n, cols, phi)
    return np.column_stack([_marginal(u[:, j], DISTS[j % len(DISTS)]) for j in range(cols)])


MAR_COLS, MAR_SHARE = (1, 4), 0.05  # stationary cases: values missing at random


def with_missing(x, rng, cols=MAR_COLS, share=MAR_SHARE):
    """``x`` with ``share`` of the values of ``cols`` missing at random (NaN)."""
    for j in cols:
        x[rng.random(len(x)) < share, j] = np.nan
    return x


def split_ref(x, cols=None):
    """Reference profile of the first REF_ROWS rows (time-ordered), and the stream."""
    names = cols or [f"x{j}" for j in range(x.shape[1])]
    ref = pd.DataFrame(x[:REF_ROWS], columns=names)
    return ReferenceProfile.from_frame(ref), x[REF_ROWS:]


def stationary_count(profile_, x, cfg, batch=10000):
    """False alarms on ``x``, rows per CPU second, the monitor."""
    mon = ModelMonitor(profile_, cfg)
    t = time.process_time()
    dec = run_monitor(mon, x, batch)
    return len(dec), len(x) / (time.process_time() - t), mon


def first_decision(profile_, x, change, cfg, batch=1000, categorical=None):
    """First decision at or after ``change`` (None) and the number before it."""
    mon = ModelMonitor(profile_, cfg)
    dec = []
    for s0 in range(0, len(x), batch):
        cats = None if categorical is None else {k: v[s0:s0 + batch]
                                                  for k, v in categorical.items()}
        dec += mon.update_features(x[s0:s0 + batch], cats)
    after = [d for d in dec if d.offset >= change]
    return (after[0] if after else None), sum(d.offset < change for d in dec)


def zipf_levels(rng, levels, size):
    """``size`` draws of ``levels`` string levels with Zipf(1.1) frequencies."""
    p = np.arange(1, levels + 1, dtype=np.float64) ** -1.1
    names = np.array([f"L{i}" for i in range(levels)], dtype=object)
    return names[rng.choice(levels, size=size, p=p / p.sum())]


def zipf_false_alarms(rng, levels, n, cfg, batch=10000):
    """Decisions on ``n`` stationary events of one Zipf(1.1) categorical column whose
    reference is 50,000 rows (the reference misses some rare levels, as a real one does)."""
    ref = pd.DataFrame({"level": zipf_levels(rng, levels, 50_000)})
    mon = ModelMonitor(ReferenceProfile.from_frame(ref), cfg)
    cat = zipf_levels(rng, levels, n)
    return sum(len(mon.update_features(np.zeros((len(cat[s:s + batch]), 0)),
                                       {"level": cat[s:s + batch]}))
               for s in range(0, n, batch))


def categorical_shapes(args, cfg):
    """Mean delays of shapes of a 0.08 TV shift among the 5 levels of the target case,
    beside a bound no test at the chi-square's level can beat: Lorden's, a CUSUM that
    knows both distributions needs about log(ARL) / KL(after || before) events, with the
    chi-square test's own ARL (``target_arl`` times the tests of the model)."""
    reps = 3 if args.quick else 10
    p0 = np.array([0.3, 0.25, 0.2, 0.15, 0.1, 0.0])
    move = {"a -> e (the target case)": [-1, 0, 0, 0, 1, 0],
            "e -> a": [1, 0, 0, 0, -1, 0],
            "a -> b (two common levels)": [-1, 1, 0, 0, 0, 0],
            "a -> spread over b..e": np.r_[-1, p0[1:5] / 0.7, 0],
            "toward uniform": (np.r_[np.full(5, 0.2), 0] - p0) / 0.15,
            "a -> a new level": [-1, 0, 0, 0, 0, 1]}
    levels = np.array(["a", "b", "c", "d", "e", "new"], dtype=object)
    log_arl = np.log(cfg.target_arl * count_tests(10, 1, cfg.mean_large_weight))
    print("\n## categorical: shapes of a 0.08 TV shift among 5 levels (10 independent "
          "numeric columns beside)\n| shape | mean delay | Lorden's bound |\n|---|---|---|")
    for name, d in move.items():
        p1 = p0 + 0.08 * np.asarray(d, dtype=np.float64)
        res = []
        for rep in range(reps):
            rng = np.random.default_rng(400 + rep)
            ref = pd.DataFrame(rng.normal(size=(20000, 10)), columns=NAMES10)
            ref["level"] = rng.choice(levels[:5], size=20000, p=p0[:5])
            cat = np.r_[rng.choice(levels, size=CHANGE, p=p0),
                        rng.choice(levels, size=30_000 - CHANGE, p=p1)]
            d0, _ = first_decision(ReferenceProfile.from_frame(ref),
                                   rng.normal(size=(30_000, 10)), CHANGE, cfg,
                                   categorical={"level": cat})
            res.append(d0)
        old = p0 > 0
        kl = float(np.sum(p1[old] * np.log(p1[old] / p0[old])))
        bound = f"{log_arl / kl:.0f}" if p1[~old].sum() == 0 else "- (a new level)"
        print(f"| {name} | {fmt_delays(delays_of(res, CHANGE))} | {bound} |", flush=True)


def delays_of(decisions, change):
    return [None if d is None else d.offset - change for d in decisions]


def fmt_delays(delays):
    ok = [d for d in delays if d is not None]
    if not ok:
        return "missed"
    miss = sum(d is None for d in delays)
    return (f"mean {np.mean(ok):.0f}, median {np.median(ok):.0f}, max {max(ok)}"
            + (f", {miss} missed" if miss else ""))


def delay_met(delays, limit):
    """A delay target is met by the average detection delay over the seeded runs (the
    usual measure of a sequential detector: its delay is a random variable, and the
    slowest of ten runs is its tail), and no run may miss the change."""
    return all(d is not None for d in delays) and float(np.mean(delays)) <= limit


def concept_stream(rng, task, n=8000, change=4000):
    """Labelled events of a model whose concept changes at ``change`` (inputs as
    before): regression RMSE +50 %; classification accuracy 0.87 -> 0.74 (the
    13-point drop of a SEA-like concept change). The first REF_ROWS-long stretch
    before it, with the old concept, is the reference's predictions."""
    m = REF_ROWS + n
    if task == "regression":
        act = rng.normal(size=m)
        scale = np.r_[np.full(REF_ROWS + change, 0.5), np.full(n - change, 0.75)]
        pred = act + rng.normal(size=m) * scale
    else:
        act = (rng.random(m) < 0.5).astype(float)
        wrong = rng.random(m) < np.r_[np.full(REF_ROWS + change, 0.13),
                                      np.full(n - change, 0.26)]
        pred = np.where(wrong, 1 - act, act)
    return pred, act


def targets(args, cfg):
    """The target table (fixed seeds)."""
    quick = args.quick
    rows = []  # (case, target, result, met)

    def add(case, target, result, met):
        rows.append((case, target, result, "yes" if met else "NO"))
        print(f"  {case}: {result}", flush=True)

    print("## targets (computing)")
    n_ar = 200_000 if quick else 1_000_000
    for phi, allowed in ((0.3, 0), (0.5, 0), (0.8, 1)):
        x = ar_mixed(np.random.default_rng(int(phi * 10)), REF_ROWS + n_ar, 10, phi)
        p, stream = split_ref(with_missing(x, np.random.default_rng(99)))
        k, speed, mon = stationary_count(p, stream, cfg)
        dep = mon.dependence["columns"]
        fac = ", ".join(f"{dep[c]['factor']:.1f}" for c in NAMES10[:6])
        add(f"stationary AR(1) phi={phi}, 10 mixed cols, 5 % missing in 2, {n_ar:,} events",
            f"<= {allowed} false alarms", f"{k} false alarms (factors {fac} ...; "
            f"true {(1 + phi) / (1 - phi):.2f}; {speed:,.0f} rows/s CPU)", k <= allowed)
    for cols, n in ((10, 200_000 if quick else 1_000_000), (50, 60_000 if quick else 300_000)):
        rng = np.random.default_rng(cols)
        p = ReferenceProfile.from_frame(pd.DataFrame(
            with_missing(mixed(rng, 20000, cols), rng), columns=[f"x{j}" for j in range(cols)]))
        k, speed, _ = stationary_count(p, with_missing(mixed(rng, n, cols), rng), cfg)
        add(f"independent stationary, {cols} mixed cols, 5 % missing in 2, {n:,} events",
            "0 false alarms",
            f"{k} false alarms ({speed:,.0f} rows/s CPU)", k == 0)
    # a time-of-day-like periodic mean (period 1,000 events, amplitude 1 sd) in 3 of 10
    # columns, which the 20,000-row reference covers: a pattern the reference has
    n_per = 200_000 if quick else 1_000_000
    x = np.random.default_rng(11).normal(size=(20_000 + n_per, 10))
    x[:, [1, 4, 8]] += np.sin(2 * np.pi * np.arange(len(x)) / 1000)[:, None]
    with_missing(x, np.random.default_rng(12))
    p = ReferenceProfile.from_frame(pd.DataFrame(x[:20_000], columns=NAMES10))
    k, speed, _ = stationary_count(p, x[20_000:], cfg)
    add(f"periodic mean (period 1,000, 1 sd) in 3 of 10 cols, in the reference too, "
        f"5 % missing in 2, {n_per:,} events", "0 false alarms", f"{k} false alarms ({speed:,.0f} rows/s CPU)",
        k == 0)
    reps = 3 if quick else 10
    # +0.5 sd in 2 of 10 AR(1) phi = 0.5 columns (x0 and x6 have normal marginals)
    res, early = [], 0
    for rep in range(reps):
        x = ar_mixed(np.random.default_rng(300 + rep), REF_ROWS + 30_000, 10, 0.5)
        x[REF_ROWS + CHANGE:, [0, 6]] += 0.5
        p, stream = split_ref(x)
        d, e = first_decision(p, stream, CHANGE, cfg)
        res.append(d)
        early += e
    dl = delays_of(res, CHANGE)
    add("+0.5 sd in 2 of 10 AR(1) phi=0.5 cols", "mean delay <= 1,200",
        f"delay {fmt_delays(dl)}; false alarms before: {early}",
        delay_met(dl, 1200))
    pn = profile(np.random.default_rng(1), 10, mix=False)
    for name, target, limit, cols in (("shift_0.3", "+0.3 sd in 2 of 10", 300, [3, 7]),
                                      ("shift_1.0", "+1 sd in 2 of 10", 50, [3, 7]),
                                      ("variance_x2", "variance x2 in 3 of 10", 100,
                                       [2, 5, 8]),
                                      ("outliers_8pct", "8 % outliers in 3 of 10", 100,
                                       [2, 5, 8])):
        res, sev = [], []
        for rep in range(reps):
            x = scenario(name, np.random.default_rng(100 + rep), cols=cols)
            d, _ = first_decision(pn, x, CHANGE, cfg)
            res.append(d)
            sev.append(d.severity if d else "-")
        dl = delays_of(res, CHANGE)
        add(f"independent: {target} cols", f"mean delay <= {limit}",
            f"delay {fmt_delays(dl)}; first severities {sorted(set(sev))}",
            delay_met(dl, limit)
            and (name != "outliers_8pct" or all(s in ("MEDIUM", "HIGH", "CRITICAL")
                                               for s in sev)))
    # categorical: a 5-level string column, total variation 0.08
    res = []
    for rep in range(reps):
        rng = np.random.default_rng(400 + rep)
        levels = np.array(["a", "b", "c", "d", "e"])
        p0, p1 = [0.3, 0.25, 0.2, 0.15, 0.1], [0.22, 0.25, 0.2, 0.15, 0.18]
        ref = pd.DataFrame(rng.normal(size=(20000, 10)), columns=NAMES10)
        ref["level"] = rng.choice(levels, size=20000, p=p0)
        prof = ReferenceProfile.from_frame(ref)
        x = rng.normal(size=(30_000, 10))
        cat = np.r_[rng.choice(levels, size=CHANGE, p=p0),
                    rng.choice(levels, size=30_000 - CHANGE, p=p1)].astype(object)
        d, _ = first_decision(prof, x, CHANGE, cfg, categorical={"level": cat})
        res.append(d)
    dl = delays_of(res, CHANGE)
    add("5-level string column, TV 0.08", "mean delay <= 700", f"delay {fmt_delays(dl)}",
        delay_met(dl, 700))
    # categorical: stationary long-tailed columns (a merchant, a product id)
    n_zipf = 200_000 if quick else 1_000_000
    for levels in (1_000, 10_000):
        alarms = zipf_false_alarms(np.random.default_rng(levels), levels, n_zipf, cfg)
        add(f"stationary Zipf(1.1) column, {levels:,} levels, {n_zipf:,} events",
            "0 false alarms", f"{alarms} false alarms", alarms == 0)
    # change of concept
    for task, limit in (("regression", 600), ("classification", 1500)):
        res, sev = [], []
        for rep in range(reps):
            rng = np.random.default_rng(500 + rep)
            pred, act = concept_stream(rng, task)
            ref = pd.DataFrame(rng.normal(size=(REF_ROWS, 3)), columns=["a", "b", "c"])
            ref["pred"], ref["act"] = pred[:REF_ROWS], act[:REF_ROWS]
            if task == "classification":
                ref["act"] = ref["act"].astype(int)
            prof = ReferenceProfile.from_frame(ref, prediction_column="pred",
                                               actual_column="act")
            mon = ModelMonitor(prof, cfg, task=task)
            dec = []
            for s0 in range(REF_ROWS, len(pred), 500):
                dec += mon.update_labelled(pred[s0:s0 + 500], act[s0:s0 + 500])
            after = [d for d in dec if d.offset >= 4000]
            res.append(after[0] if after else None)
            sev.append(after[0].severity if after else "-")
        dl = delays_of(res, 4000)
        add(f"change of concept, {task}", f"mean delay <= {limit} labelled events, first >= MEDIUM",
            f"delay {fmt_delays(dl)}; first severities {sorted(set(sev))}",
            delay_met(dl, limit)
            and all(s in ("MEDIUM", "HIGH", "CRITICAL") for s in sev))
    # severity of the first trigger
    for shift, cols, want in ((1.5, [4], ("CRITICAL",)), (1.0, [1, 6], ("HIGH", "CRITICAL"))):
        sev = []
        for rep in range(reps):
            x = np.random.default_rng(600 + rep).normal(size=(30_000, 10))
            x[CHANGE:, cols] += shift
            d, _ = first_decision(pn, x, CHANGE, cfg)
            sev.append(d.severity if d else "-")
        add(f"severity, {shift} sd in {len(cols)} col(s)", " or ".join(want),
            f"first severities {sev}", all(s in want for s in sev))
    estimate_targets.rows(quick, cfg, add)
    output_targets.rows(quick, cfg, add, fmt_delays, delay_met)
    quality_targets(add, reps, cfg)
    core_speed_against_round_base(add, quick)
    print("\n| case | target | result | met |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return rows


def quality_case(seed, kind):
    """A reference of 10 mixed columns and a categorical (REF_ROWS rows) and a stream
    of 30,000 events whose feed breaks at CHANGE: ``kind`` says how."""
    rng = np.random.default_rng(seed)
    x = mixed(rng, REF_ROWS + 30_000, 10)
    levels = np.array(["card", "cash", "wire", "voucher", "gift"])
    cat = rng.choice(levels, size=len(x), p=[0.4, 0.3, 0.15, 0.1, 0.05]).astype(object)
    at = REF_ROWS + CHANGE
    after = rng.random(len(x) - at)
    if kind == "missing 0->40":
        x[at:, 3][after < 0.4] = np.nan
    elif kind == "missing 10->25":
        x[:at, 3][rng.random(at) < 0.10] = np.nan
        x[at:, 3][after < 0.25] = np.nan
    elif kind == "stuck":  # the Poisson column: its median is a tied value
        x[at:, 5] = np.median(x[:REF_ROWS, 5])
    elif kind == "unseen":
        cat[at:][after < 0.03] = "crypto"
    ref = pd.DataFrame(x[:REF_ROWS], columns=NAMES10)
    ref["pay"] = cat[:REF_ROWS]
    return ReferenceProfile.from_frame(ref), x[REF_ROWS:], {"pay": cat[REF_ROWS:]}


def quality_targets(add, reps, cfg):
    """The data-quality cases: the signal and column named by the first decision after
    the break, its delay and severity."""
    for kind, signal, column, limit, high in (("missing 0->40", "missing", "x3", 200, True),
                                              ("missing 10->25", "missing", "x3", 500, False),
                                              ("stuck", "stuck", "x5", 300, True),
                                              ("unseen", "unseen_category", "pay", 300, False)):
        res, sev, named, early = [], [], [], 0
        for rep in range(reps):
            p, x, cats = quality_case(800 + rep, kind)
            d, e = first_decision(p, x, CHANGE, cfg, categorical=cats)
            early += e
            cause = [r for r in (d.root_cause if d else []) if r["signal"] == signal]
            ok = bool(cause) and cause[0]["column"] == column and (
                signal != "unseen_category" or "crypto" in cause[0]["detail"]["levels"])
            res.append(d if ok else None)
            named.append(ok)
            sev.append(d.severity if d else "-")
        dl = delays_of(res, CHANGE)
        add(f"{kind}{' at its median' if kind == 'stuck' else ''}: {signal} naming {column}"
            + (" and the level" if kind == "unseen" else ""),
            f"mean delay <= {limit}" + (", >= HIGH" if high else ""),
            f"delay {fmt_delays(dl)}; named {sum(named)}/{reps}; first severities "
            f"{sorted(set(sev))}; false alarms before: {early}",
            delay_met(dl, limit) and early == 0
            and (not high or all(s in ("HIGH", "CRITICAL") for s in sev)))


CORE_SPEED = """
import time, numpy as np
from bench.detectors_bench import mixed, profile, run_monitor, pin_one_core
from detectors import DetectorConfig, ModelMonitor
pin_one_core()
rng = np.random.default_rng(1010)
p = profile(rng, 10)
x = mixed(rng, {n}, 10)
best = 0.0
for _ in range(3):
    mon = ModelMonitor(p, DetectorConfig())
    t = time.process_time()
    run_monitor(mon, x)
    best = max(best, {n} / (time.process_time() - t))
print(best)
"""


ROUND_BASE = "e737e01"  # the streaming core before this round's new signals


def core_speed_against_round_base(add, quick, base=ROUND_BASE):
    """Rows/s (CPU, one core, best of 3) of the streaming core, 10 mixed columns, with
    this tree's code and with the code at ``base`` (exported from git), each in its own
    process, in the same run."""
    import os
    import subprocess
    import sys
    import tempfile
    n = 200_000 if quick else 1_000_000
    here = Path(__file__).resolve().parents[1]
    rate = {}
    with tempfile.TemporaryDirectory() as old:
        subprocess.run(f"git archive {base} | tar -x -C {old}", shell=True, check=True, cwd=here)
        for name, tree in (("this tree", str(here)), (base, old)):
            env = {**os.environ, "PYTHONPATH": tree}
            out = subprocess.run([sys.executable, "-c", CORE_SPEED.format(n=n)], env=env,
                                 cwd=tree, capture_output=True, text=True, check=True)
            rate[name] = float(out.stdout.split()[-1])
    ratio = rate["this tree"] / rate[base]
    add("streaming core, 10 numeric cols, every signal on",
        f">= 1,000,000 rows/s CPU or >= 0.85x the round's base ({base})",
        f"{rate['this tree']:,.0f} rows/s CPU vs {rate[base]:,.0f} at {base}: {ratio:.2f}x",
        rate["this tree"] >= 1_000_000 or ratio >= 0.85)


def confidence_check(args):
    """On stationary streams a confidence >= c must occur in at most (1 - c) of the
    target_arl horizons. Checked with a short horizon (target_arl = 20,000 events) on
    AR(1) phi = 0.5 streams of 10 mixed columns (the claim does not depend on the
    horizon's length; a short one makes horizons countable)."""
    arl = 20_000
    cfg = DetectorConfig(target_arl=arl)
    n_streams = 2 if args.quick else 5
    per = 400_000 if args.quick else 1_000_000
    best = []
    for k in range(n_streams):
        x = ar_mixed(np.random.default_rng(700 + k), REF_ROWS + per, 10, 0.5)
        p, stream = split_ref(x)
        dec = run_monitor(ModelMonitor(p, cfg), stream)
        conf = np.zeros(per // arl)
        for d in dec:
            h = d.offset // arl
            if h < len(conf):
                conf[h] = max(conf[h], d.confidence)
        best.append(conf)
    best = np.concatenate(best)
    print(f"\n## confidence on stationary AR(1) phi=0.5 streams: {len(best)} horizons of "
          f"target_arl = {arl:,} events")
    print("| c | share of horizons with a confidence >= c | bound 1 - c | met |\n|---|---|---|---|")
    for c in (0.37, 0.5, 0.8, 0.9, 0.95, 0.99):
        share = float(np.mean(best >= c))
        # binomial noise: allowed up to 2 standard errors over the bound
        tol = 2 * np.sqrt(max((1 - c) * c, 1e-9) / len(best))
        print(f"| {c} | {share:.3f} | {1 - c:.2f} | {'yes' if share <= 1 - c + tol else 'NO'} |")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--baselines", action="store_true",
                    help="also River's detectors and the naive repeated KS (slow)")
    ap.add_argument("--targets-only", action="store_true")
    ap.add_argument("--estimate-only", action="store_true",
                    help="only the targets of the performance estimated without labels")
    ap.add_argument("--outputs-only", action="store_true",
                    help="only the targets of prediction_drift and multivariate")
    ap.add_argument("--speed-only", action="store_true",
                    help="only the speed table")
    args = ap.parse_args(argv)
    cfg = DetectorConfig()
    print(f"# driftline bench (quick={args.quick})")
    if args.speed_only:
        speed_table(args, cfg)
        return
    if args.estimate_only or args.outputs_only:
        rows = []
        add = lambda *r: rows.append((*r[:3], "yes" if r[3] else "NO"))  # noqa: E731
        if args.estimate_only:
            estimate_targets.rows(args.quick, cfg, add)
        else:
            output_targets.rows(args.quick, cfg, add, fmt_delays, delay_met)
        print("\n| case | target | result | met |\n|---|---|---|---|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    targets(args, cfg)
    categorical_shapes(args, cfg)
    confidence_check(args)
    if args.targets_only:
        return
    speed_table(args, cfg)
    print()
    speeds = soak_and_speed(args, cfg)
    driftline_delays(args, cfg)
    if args.baselines:
        print("baselines (delay = first alarm at or after the change that names a changed "
              "column; see their false alarm rates below):")
        baseline_delays(args)
        baseline_speed(args, speeds)


if __name__ == "__main__":
    main()
