"""Targets of the performance estimated without labels (CBPE, DLE) and of severity from
the expected impact: seeded cases of ``python -m bench.detectors_bench --targets-only``
(``--estimate-only`` runs these alone).

Every case feeds the monitor features, predictions and scores only: no label arrives
in the measured span, as with labels 5,000 events late (each delay target is below
5,000), so whatever fires, fires before any post-change label.

* a calibrated binary classifier (``p = sigmoid(2.5 a + 0.5 b)``, ``c`` unused, the label
  drawn from ``p``) on AR(1) inputs: the estimate against the realized accuracy;
* harmful: ``a`` crowds the boundary (scaled by 0.57): accuracy 0.81 -> 0.73;
* harmless: ``a`` spreads 1.6x (accuracy 0.81 -> 0.87) and ``c`` moves 1 sd;
* regression: ``y = a + b + noise`` with noise sd ``0.3 + 0.6 |a|``, the prediction
  ``a + b`` (the model is right on average, less sure far from ``a = 0``); the shift
  moves ``a`` by 1.5 sd into the noisier region (MAE about +60 %).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from detectors import DetectorConfig, ModelMonitor, ReferenceProfile

REF = 20_000
CHANGE = 20_000
BATCH = 1_000


def ar1(rng, n, cols, phi):
    e = rng.normal(size=(n, cols))
    if not phi:
        return e
    e[1:] *= np.sqrt(1 - phi * phi)
    return lfilter([1.0], [1.0, -phi], e, axis=0)


def classifier(rng, x):
    """Calibrated scores, predictions and labels of the classification world."""
    p = 1.0 / (1.0 + np.exp(-(2.5 * x[:, 0] + 0.5 * x[:, 1])))
    return p, (p > 0.5).astype(int), (rng.random(len(p)) < p).astype(int)


def regressor(rng, x):
    pred = x[:, 0] + x[:, 1]
    return pred, pred + rng.normal(size=len(x)) * (0.3 + 0.6 * np.abs(x[:, 0]))


def class_profile(rng, phi=0.5):
    x = ar1(rng, REF, 3, phi)
    p, pred, y = classifier(rng, x)
    ref = pd.DataFrame(x, columns=["a", "b", "c"]).assign(prediction=pred, actual=y, score=p)
    return ReferenceProfile.from_frame(ref, prediction_column="prediction",
                                       actual_column="actual", score_column="score")


def run(mon, x, pred, scores=None):
    dec = []
    for s in range(0, len(x), BATCH):
        dec += mon.update_features(x[s:s + BATCH], None, pred[s:s + BATCH],
                                   None if scores is None else scores[s:s + BATCH])
    return dec


def stationary(seed, n, cfg):
    """Estimated-performance alarms, and the mean and largest |estimate - realized| of
    the accuracy over windows of 5,000 events."""
    rng = np.random.default_rng(seed)
    prof = class_profile(rng)
    x = ar1(rng, n, 3, 0.5)
    p, pred, y = classifier(rng, x)
    mon = ModelMonitor(prof, cfg, "classification")
    dec = run(mon, x, pred, p)
    alarms = sum("estimated_performance" in [r["signal"] for r in d.root_cause] for d in dec)
    est_err = mon.estimated_errors(x, pred, p)
    w = 5_000
    k = n // w
    est = 1 - est_err[:k * w].reshape(k, w).mean(axis=1)
    real = (pred == y)[:k * w].reshape(k, w).mean(axis=1)
    gap = np.abs(est - real)
    return alarms, float(gap.mean()), float(gap.max())


def shifted(seed, kind, cfg, n=CHANGE + 50_000):
    """The decisions after the change, the realized accuracy before and after."""
    rng = np.random.default_rng(seed)
    prof = class_profile(rng)
    x = ar1(rng, n, 3, 0.5)
    if kind == "harmful":
        x[CHANGE:, 0] *= 0.57
    else:
        x[CHANGE:, 0] *= 1.6
        x[CHANGE:, 2] += 1.0
    p, pred, y = classifier(rng, x)
    dec = run(ModelMonitor(prof, DetectorConfig(**{**cfg.to_dict()}), "classification"),
              x, pred, p)
    right = pred == y
    return [d for d in dec if d.offset >= CHANGE], sum(d.offset < CHANGE for d in dec), \
        (float(right[:CHANGE].mean()), float(right[CHANGE:].mean()))


def regression_delay(seed, cfg):
    rng = np.random.default_rng(seed)
    x = ar1(rng, REF, 2, 0.5)
    pred, y = regressor(rng, x)
    ref = pd.DataFrame(x, columns=["a", "b"]).assign(prediction=pred, actual=y)
    cfg = DetectorConfig(**{**cfg.to_dict(), "loss_estimator": True})
    prof = ReferenceProfile.from_frame(ref, prediction_column="prediction",
                                       actual_column="actual", config=cfg)
    x = ar1(rng, CHANGE + 10_000, 2, 0.5)
    x[CHANGE:, 0] += 1.5
    pred, y = regressor(rng, x)
    dec = run(ModelMonitor(prof, cfg, "regression"), x, pred)
    est = [d.offset - CHANGE for d in dec if d.offset >= CHANGE
           and "estimated_performance" in [r["signal"] for r in d.root_cause]]
    before = sum(d.offset < CHANGE for d in dec)
    first = [d for d in dec if d.offset >= CHANGE]
    mae = np.abs(y - pred)
    return (est[0] if est else None), before, first[0] if first else None, \
        (float(mae[:CHANGE].mean()), float(mae[CHANGE:].mean()))


def rows(quick: bool, cfg: DetectorConfig, add) -> None:
    """Add the cases' rows with ``add(case, target, result, met)``."""
    seeds = range(3) if quick else range(10)
    n = 200_000 if quick else 1_000_000
    st = [stationary(900 + s, n, cfg) for s in (seeds if not quick else range(1))]
    alarms = sum(a for a, _, _ in st)
    mean_gap = float(np.mean([g for _, g, _ in st]))
    add(f"stationary calibrated binary classifier, AR(1) phi=0.5 inputs, {n:,} events, "
        f"{len(st)} seeds", "0 estimated_performance alarms; |estimate - realized accuracy| "
        "<= 0.01 over windows of 5,000",
        f"{alarms} alarms; mean |gap| {mean_gap:.4f} (largest window "
        f"{max(m for _, _, m in st):.4f})", alarms == 0 and mean_gap <= 0.01)
    delays, sev, before, acc = [], [], 0, []
    for s in seeds:
        after, b, a = shifted(1000 + s, "harmful", cfg)
        before += b
        acc.append(a)
        d = after[0] if after else None
        delays.append(None if d is None else d.offset - CHANGE)
        sev.append(d.severity if d else "-")
    ok = [d for d in delays if d is not None]
    add("harmful covariate shift (accuracy "
        f"{np.mean([a for a, _ in acc]):.3f} -> {np.mean([b for _, b in acc]):.3f}), "
        "no label after the change", "first trigger >= HIGH, mean delay <= 1,500",
        f"delays mean {np.mean(ok):.0f} (max {max(ok)}; {len(delays) - len(ok)} missed); "
        f"severities {sev}; {before} triggers before the change",
        len(ok) == len(delays) and np.mean(ok) <= 1500
        and all(s in ("HIGH", "CRITICAL") for s in sev) and before == 0)
    sevs, changes, count, acc = set(), [], 0, []
    for s in seeds:
        after, b, a = shifted(1100 + s, "harmless", cfg)
        acc.append(a)
        count += len(after)
        sevs |= {d.severity for d in after}
        changes += [d.expected_impact["change"] for d in after if d.expected_impact]
    add("harmless drift (a spreads 1.6x: accuracy "
        f"{np.mean([a for a, _ in acc]):.3f} -> {np.mean([b for _, b in acc]):.3f}; "
        "unused c moves 1 sd), 50,000 events after the change",
        "every trigger LOW, expected_impact change >= 0",
        f"{count} triggers, severities {sorted(sevs)}, smallest change "
        f"{min(changes) if changes else float('nan'):+.4f}",
        sevs <= {"LOW"} and all(c >= 0 for c in changes) and len(changes) == count)
    reg = [regression_delay(1200 + s, cfg) for s in seeds]
    dl = [r[0] for r in reg]
    ok = [d for d in dl if d is not None]
    first = [r[2].severity if r[2] else "-" for r in reg]
    add("regression, shift into a noisier region (MAE "
        f"{np.mean([r[3][0] for r in reg]):.3f} -> {np.mean([r[3][1] for r in reg]):.3f}), "
        "DLE, no label after the change", "estimated_performance mean delay <= 2,000",
        f"mean {np.mean(ok) if ok else float('nan'):.0f} (max {max(ok) if ok else '-'}; "
        f"{len(dl) - len(ok)} missed); first triggers {first}; "
        f"{sum(r[1] for r in reg)} triggers before the change",
        len(ok) == len(dl) and np.mean(ok) <= 2000)
