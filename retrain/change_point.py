"""Where a change of concept began, estimated from the served model's errors: pure.

A trigger's window (extended by the rows after it) holds the errors of the model that
served: before the change they are as small as its baseline, after it larger. The most
likely single rise of their mean (Hinkley's maximum-likelihood change point of a mean
shift) splits the rows into the old concept and the new; the split is used only when the
rise is clear (a z statistic over a threshold), else there is no estimate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_SEGMENT = 30  # rows on each side of an estimated change point
MIN_Z = 5.0  # how clear the rise of the mean error must be


def estimate(values: Any, min_segment: int = MIN_SEGMENT, min_z: float = MIN_Z) -> int | None:
    """Index of the first value after the most likely rise of the mean of `values` (in
    time order; NaN values are skipped), or None without a clear rise.

    >>> rng = np.random.default_rng(0)
    >>> estimate(np.r_[rng.normal(1, 0.5, 300), rng.normal(3, 0.5, 200)])
    300
    >>> estimate(rng.normal(1, 0.5, 500)) is None
    True
    """
    series = np.asarray(values, dtype=np.float64)
    positions = np.flatnonzero(np.isfinite(series))
    x = series[positions]
    n = len(x)
    if n < 2 * min_segment:
        return None
    cumulative = np.cumsum(x)
    k = np.arange(min_segment, n - min_segment + 1)  # size of the first segment
    before = cumulative[k - 1] / k
    after = (cumulative[-1] - cumulative[k - 1]) / (n - k)
    gain = np.where(after > before, k * (n - k) / n * (after - before) ** 2, -1.0)
    best = int(np.argmax(gain))
    if gain[best] <= 0:
        return None
    split = int(k[best])
    first, second = x[:split], x[split:]
    pooled = ((first.var() * len(first)) + (second.var() * len(second))) / max(n - 2, 1)
    z = (second.mean() - first.mean()) / np.sqrt(max(pooled, 1e-300) * (1 / len(first) + 1 / len(second)))
    return int(positions[split]) if z >= min_z else None
