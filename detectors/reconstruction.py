"""The reference's joint structure for the ``multivariate`` signal: PCA data
reconstruction (NannyML's idea) on the numeric columns' normal scores.

The columns' normal scores (marginals standardised, so a change of a marginal alone
moves nothing here) are projected on the *dropped* principal components: those left
after the leading ones that explain ``share`` of the variance. Their squared
projections, each over its variance, averaged over the dropped components, are the
event's *reconstruction error* ``e`` (mean 1 on the reference). A correlation that
changes sign or vanishes puts variance in a direction the reference had little of:
``e`` grows, however unchanged every marginal is.

Held out: the components are fitted on the reference's older 70 % and each dropped
direction is scaled by its variance on the newest 30 %, so the held-out errors are
distributed as a new stream's (the smallest eigenvalues of a fitted covariance are
biased low: on 50 independent columns and 3,500 rows by about 20 %, which in-sample
scaling would turn into a permanent false shift). The held-out error series gives the
CUSUM's cumulant and its dependence factor.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import dependence as dep

SHARE = 0.9  # the leading components kept explain this share of the variance
MIN_ROWS = 500  # fewer complete reference rows: no multivariate signal
HELD_OUT = 0.3  # the newest share of the reference rows, for the errors' scale
MAX_ROWS = 200_000


def fit(z: np.ndarray, share: float = SHARE) -> dict[str, Any] | None:
    """The reconstruction of the reference's normal scores ``z`` (rows in time order,
    columns; NaN counts 0, as a missing value in the stream): ``weights`` (columns,
    dropped) map an event's scores to its whitened residual coordinates, ``scale`` is
    each dropped direction's held-out standard deviation, ``errors`` the held-out
    errors, ``tau`` their long-run variance factor. None with fewer than two columns
    or :data:`MIN_ROWS` rows."""
    z = np.nan_to_num(np.asarray(z, dtype=np.float64)[-MAX_ROWS:])
    rows, c = z.shape
    if c < 2 or rows < MIN_ROWS:
        return None
    n_fit = int(rows * (1 - HELD_OUT))
    vals, vecs = np.linalg.eigh(np.cov(z[:n_fit], rowvar=False))
    order = np.argsort(vals)[::-1]
    explained = np.cumsum(vals[order]) / max(float(vals.sum()), 1e-300)
    keep = min(int(np.searchsorted(explained, share)) + 1, c - 1)
    dropped = vecs[:, order[keep:]]
    held = z[n_fit:] @ dropped
    scale = np.sqrt(np.maximum(np.mean(held * held, axis=0), 1e-12))
    weights = dropped / scale
    errors = errors_of(z[n_fit:], weights)
    tau = float(max(dep.long_run_factor(errors)[0], 1.0))
    return {"weights": weights, "scale": scale, "errors": errors, "tau": tau}


def errors_of(z: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per event (rows of ``z``), the mean squared whitened residual coordinate."""
    p = z @ weights
    return np.einsum("ij,ij->i", p, p) / weights.shape[1]


def residual_shares(pp: np.ndarray, weights: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Each column's share of the squared residual (column space, unwhitened) given
    the sum ``pp`` of the whitened residual coordinates' outer products."""
    basis = weights * scale  # the dropped directions, unit length
    unwhite = pp * np.outer(scale, scale)
    contrib = np.einsum("jd,de,je->j", basis, unwhite, basis)
    total = float(contrib.sum())
    return contrib / total if total > 0 else np.zeros(len(contrib))
