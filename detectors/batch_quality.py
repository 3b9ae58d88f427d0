"""Data quality of a batch of recent rows against the reference, for `driftline check`
and the design's batch API: the batch counterpart of the streaming signals `missing`,
`stuck` and `unseen_category` (:mod:`detectors.signals`), with their effect floors.

Each is a one-sided binomial test of a rate in the recent rows against the reference's
rate of the same thing, Bonferroni-corrected over every test of the check, and counts
only past its floor (the streaming signals' design effects):

- missing: the share of missing values (null, NaN) of a feature column, 10 points;
- stuck: the share of a numeric column's values equal to the one before, 30 points;
- unseen: the share of a categorical column's values of levels the reference lacks,
  2 points over what the reference's levels seen once make plausible (Good-Turing).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binom

MISSING_FLOOR = 0.10
STUCK_FLOOR = 0.30
UNSEEN_FLOOR = 0.02
BROKEN_FEED = 0.20  # points more missing that make a broken feed (at least HIGH)
NEW_LEVELS_SHOWN = 5


def data_quality(reference: pd.DataFrame, recent: pd.DataFrame, features: list[str],
                 alpha: float, tests: int) -> dict[str, Any]:
    """Per column its rates and, for those past a floor and significant at ``alpha``
    over ``tests`` tests, a signal (``signal``, ``column``, ``strength``, ``detail``).

    >>> ref = pd.DataFrame({"x": np.arange(1000.0), "c": ["a", "b"] * 500})
    >>> new = pd.DataFrame({"x": [np.nan] * 40 + [5.0] * 60, "c": ["a"] * 90 + ["z"] * 10})
    >>> [(s["signal"], s["column"]) for s in data_quality(ref, new, ["x", "c"], 0.05, 2)["signals"]]
    [('missing', 'x'), ('stuck', 'x'), ('unseen_category', 'c')]
    """
    columns: dict[str, dict[str, Any]] = {}
    signals: list[dict[str, Any]] = []
    for name in features:
        ref, new = reference[name], recent[name]
        rates = columns[name] = {}
        checks = [("missing", ref.isna().to_numpy(), new.isna().to_numpy(), MISSING_FLOOR, 0.0)]
        if pd.api.types.is_numeric_dtype(ref):
            checks.append(("stuck", _repeats(ref), _repeats(new), STUCK_FLOOR, 0.0))
        else:
            unseen, plausible = _unseen(ref, new)
            checks.append(("unseen_category", None, unseen, UNSEEN_FLOOR, plausible))
        for signal, before, after, floor, base in checks:
            signal_rates, fired = _rate_test(before, after, floor, base, alpha / max(tests, 1))
            rates.update({f"{signal}_{k}": v for k, v in signal_rates.items()})
            if fired is not None:
                signals.append({"signal": signal, "column": name, "strength": fired,
                                "detail": _detail(signal, signal_rates, ref, new)})
    return {"columns": columns, "signals": signals}


def broken_feed(signals: list[dict[str, Any]], quality: dict[str, Any]) -> bool:
    """A stuck column, or one BROKEN_FEED points more missing: at least HIGH."""
    for s in signals:
        rates = quality["columns"].get(s["column"], {})
        if s["signal"] == "stuck" or (s["signal"] == "missing" and rates["missing_recent"]
                                      - rates["missing_reference"] >= BROKEN_FEED):
            return True
    return False


def _repeats(values: pd.Series) -> np.ndarray:
    """Whether each value (after the first) equals the one before; missing ones never do."""
    x = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return x[1:] == x[:-1]


def _unseen(reference: pd.Series, recent: pd.Series) -> tuple[np.ndarray, float]:
    """Whether each recent value's level is new, and the new-level rate the reference
    makes plausible: its share of values whose level it holds once."""
    ref = reference.dropna().astype(str)
    counts = ref.value_counts()
    known = set(counts.index)
    new = recent.dropna().astype(str)
    plausible = float((counts == 1).sum() / max(len(ref), 1))
    return ~new.isin(known).to_numpy(), plausible


def _rate_test(before: np.ndarray | None, after: np.ndarray, floor: float, base: float,
               alpha: float) -> tuple[dict[str, float], float | None]:
    """The rates and, when the recent rate passes the reference's by more than ``floor``
    and the binomial test says so at ``alpha``, its strength (rise over floor)."""
    reference = float(before.mean()) if before is not None and len(before) else base
    recent = float(after.mean()) if len(after) else 0.0
    rates = {"reference": reference, "recent": recent}
    rise = recent - reference
    if not len(after) or rise <= floor:
        return rates, None
    p = float(binom.sf(int(after.sum()) - 1, len(after), min(reference + floor, 1.0)))
    rates["p_value"] = p
    return rates, (rise / floor if p < alpha else None)


def _detail(signal: str, rates: dict[str, float], reference: pd.Series, recent: pd.Series) -> str:
    if signal == "missing":
        return f"{rates['recent']:.1%} missing, {rates['reference']:.1%} in the reference"
    if signal == "stuck":
        top = recent.dropna().mode()
        stuck = f" at {top.tolist()[0]!r}" if len(top) else ""
        return f"{rates['recent']:.1%} of values repeat the one before{stuck}, " \
               f"{rates['reference']:.1%} in the reference"
    levels = ", ".join(f"{level!r} {share:.1%}" for level, share in new_levels(reference, recent).items())
    return f"new levels: {levels}"


def new_levels(reference: pd.Series, recent: pd.Series) -> dict[str, float]:
    """The most frequent levels the reference lacks, with their shares of the recent rows."""
    known = set(reference.dropna().astype(str))
    new = recent.dropna().astype(str)
    shares = new[~new.isin(known)].value_counts() / max(len(recent), 1)
    return {str(k): float(v) for k, v in shares.head(NEW_LEVELS_SHOWN).items()}
