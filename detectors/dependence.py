"""Serial dependence of a monitored series: its long-run variance factor.

Every sequential test of the monitor sums (or windows) a per-event series: the normal
scores ``z`` (mean CUSUMs), ``z**2`` (variance CUSUM), outlier indicators, level
indicators (KS and chi-square windows), the model's errors. On independent events the
variance of a sum of ``n`` of them is ``n * var``; on a serially dependent stream it is
about ``n * var * tau`` with the *long-run variance factor*

    ``tau = 1 + 2 * sum_k rho_k``   (``rho_k``: lag-k autocorrelation),

the inverse of the effective-sample-size ratio: ``n`` dependent events carry the
information of ``n / tau`` independent ones. For an AR(1) series ``tau = (1 + phi) /
(1 - phi)``: 1.86 for phi = 0.3, 3 for 0.5, 9 for 0.8.

Estimator (Andrews & Monahan 1992): the series is prewhitened with its least-squares
AR(1) coefficient ``phi``; the long-run variance of the residuals is a Bartlett-kernel
sum of their autocovariances with the Andrews (1991) AR(1) plug-in bandwidth, then
recoloured by ``1 / (1 - phi)**2``. An AR(1) stream is thus estimated almost without
bias (the residuals are white), and other short-memory patterns are picked up by the
kernel. ``phi`` is capped at :data:`PHI_CAP` (a near unit root would make ``tau``
explode: such a reference has no stable distribution to compare with).

A pattern that a short-memory estimate misses (a periodic mean, say the time of day,
whose period the reference covers) shows at longer scales: ``L`` times the variance of
the means of ``L``-event blocks, over ``g0``, is ``tau`` at scale ``L``. For block
lengths ``L = 32, 64, ...`` up to an eighth of the series, its lower confidence bound
(a chi-square bound at level :data:`BLOCK_LEVEL`, shared over the scales) takes over
when it exceeds the kernel estimate: a reference's own pattern then widens the tests
instead of firing them, while on short-memory series (AR, independent) the bound stays
below the kernel estimate and changes nothing. What the calibration cannot know is the
phase: a pattern is tolerated at its reference amplitude, not modelled, so a shift that
it masks is found later.

The calibration uses ``max(tau, 1)``: negative dependence is not used to tighten a
threshold.
"""

from __future__ import annotations

import numpy as np

PHI_CAP = 0.97
MIN_ROWS = 50  # below this no estimate: tau = 1
BLOCK_LEVEL = 0.01  # of the block-means bound, over all its scales together
MIN_BLOCK, MIN_BLOCKS = 32, 8


def long_run_factor(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Long-run variance factor ``tau`` and lag-1 autocorrelation of every column of
    ``x`` (n, columns) or of a 1-D series; time runs along axis 0. NaN rows of a column
    are dropped (the column's events are taken as consecutive). A constant column gets
    ``tau = 1``.

    >>> from scipy.signal import lfilter
    >>> e = np.random.default_rng(0).normal(size=(20000, 2))
    >>> ar = lfilter([1.0], [1.0, -0.5], e[:, 1])  # AR(1), phi = 0.5: tau = 3
    >>> tau, rho = long_run_factor(np.c_[e[:, 0], ar])
    >>> np.round(tau, 1).tolist(), np.round(rho, 1).tolist()
    ([1.0, 2.9], [0.0, 0.5])
    """
    x = np.asarray(x, dtype=np.float64)
    one = x.ndim == 1
    if one:
        x = x[:, None]
    taus, rhos = [], []
    for j in range(x.shape[1]):
        v = x[:, j]
        v = v[np.isfinite(v)]
        t, r = _one(v)
        taus.append(t)
        rhos.append(r)
    tau, rho = np.array(taus), np.array(rhos)
    return (tau[0], rho[0]) if one else (tau, rho)


def _autocov(v: np.ndarray, lags: int) -> np.ndarray:
    n = len(v)
    return np.array([v[k:] @ v[:n - k] / n for k in range(lags + 1)])


def _one(v: np.ndarray) -> tuple[float, float]:
    n = len(v)
    if n < MIN_ROWS:
        return 1.0, 0.0
    v = v - v.mean()
    g0 = float(v @ v) / n
    if not g0 > 0:
        return 1.0, 0.0
    rho1 = float(v[1:] @ v[:-1]) / n / g0
    phi = float(np.clip(v[1:] @ v[:-1] / max(float(v[:-1] @ v[:-1]), 1e-300),
                        -PHI_CAP, PHI_CAP))
    e = v[1:] - phi * v[:-1]
    m = len(e)
    ge0 = float(e @ e) / m
    if not ge0 > 0:
        return 1.0, rho1
    r = float(np.clip(e[1:] @ e[:-1] / m / ge0, -PHI_CAP, PHI_CAP))
    alpha = 4 * r * r / ((1 - r) ** 2 * (1 + r) ** 2)
    band = 1.1447 * (alpha * m) ** (1 / 3)  # Andrews' Bartlett bandwidth
    lags = int(min(np.floor(band), m // 4))
    ge = _autocov(e, lags)
    w = 1 - np.arange(1, lags + 1) / (band + 1)
    lrv_e = ge[0] + 2 * float(w @ ge[1:])
    lrv = max(lrv_e, 0.0) / (1 - phi) ** 2
    return max(float(lrv / g0), _block_bound(v, g0)), rho1


def _block_bound(v: np.ndarray, g0: float) -> float:
    """Largest lower confidence bound of the block-means factor over the scales (see
    the module docstring) of the centred series ``v`` with variance ``g0``.

    >>> t = np.arange(20000)
    >>> e = np.random.default_rng(1).normal(size=20000)
    >>> round(_block_bound(e, 1.0), 1) < 1.0  # independent: the bound stays low
    True
    >>> wave = e + np.sin(2 * np.pi * t / 1000)  # a periodic mean of 1 sd
    >>> _block_bound(wave - wave.mean(), wave.var()) > 20
    True
    """
    from scipy.special import gammaincinv

    n = len(v)
    scales = []
    size = MIN_BLOCK
    while n // size >= MIN_BLOCKS:
        scales.append(size)
        size *= 2
    best = 0.0
    for size in scales:
        k = n // size
        means = v[:k * size].reshape(k, size).mean(axis=1)
        factor = size * float(means.var(ddof=1)) / g0
        upper = 2.0 * float(gammaincinv((k - 1) / 2.0, 1.0 - BLOCK_LEVEL / len(scales)))
        best = max(best, float(factor * (k - 1) / upper))
    return best


def normal_scores(v: np.ndarray) -> np.ndarray:
    """Normal scores ``Phi^-1(midrank / (n + 1))`` of a series (NaN kept as NaN)."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    v = np.asarray(v, dtype=np.float64)
    out = np.full(v.shape, np.nan)
    ok = np.isfinite(v)
    if ok.any():
        out[ok] = ndtri(rankdata(v[ok]) / (ok.sum() + 1.0))
    return out


def score_factors(z: np.ndarray) -> dict[str, np.ndarray]:
    """The factors the monitor calibrates with, from the normal scores ``z`` (n, c)
    of time-ordered values.

    * ``mean``: of ``z`` (the mean CUSUMs);
    * ``var``: of ``z**2`` (the variance CUSUM; also catches volatility clustering,
      which leaves ``z`` uncorrelated);
    * ``ks``: the largest of those and of the median indicator ``z > 0`` (the KS
      window; for a Gaussian copula no level indicator is more dependent than ``z``);
    * ``out``: the largest of ``mean`` and ``var`` (outlier indicators: too rare in a
      reference to estimate their own dependence; for a Gaussian copula their
      autocorrelations are below those of ``z``);
    * ``lag1``: the lag-1 autocorrelation of ``z`` (for reports).

    Each is at least 1.
    """
    z = np.asarray(z, dtype=np.float64)
    t1, r1 = long_run_factor(z)
    t2, _ = long_run_factor(z * z)
    with np.errstate(invalid="ignore"):
        tm, _ = long_run_factor(np.where(np.isnan(z), np.nan, (z > 0).astype(float)))
    t1, t2, tm = (np.maximum(np.atleast_1d(t), 1.0) for t in (t1, t2, tm))
    return {"mean": t1, "var": t2, "ks": np.maximum(np.maximum(t1, t2), tm),
            "out": np.maximum(t1, t2), "lag1": np.atleast_1d(r1)}


def indicator_factor(codes: np.ndarray, min_share: float = 0.01) -> float:
    """Largest factor over the level indicators of a categorical series (levels with
    at least ``min_share`` of the values; negative codes are missing), at least 1."""
    codes = np.asarray(codes)
    ok = codes >= 0
    c = codes[ok]
    if len(c) < MIN_ROWS:
        return 1.0
    levels, counts = np.unique(c, return_counts=True)
    keep = levels[counts >= min_share * len(c)]
    if not len(keep):
        return 1.0
    ind = (c[:, None] == keep[None, :]).astype(np.float64)
    tau, _ = long_run_factor(ind)
    return float(max(np.max(tau), 1.0))
