"""Exact ranks of new values in a sorted reference sample, and normal scores.

Each value ``x`` is mapped to a *slot*: ``2a`` when it falls strictly between the
``a-1``-th and ``a``-th distinct reference values, ``2a + 1`` when it equals the
``a``-th. The slot fixes ``#ref < x`` and ``#ref <= x`` exactly, which is all the KS
statistic needs, and indexes a table of normal scores ``Phi^-1(midrank)`` that are
standardised to mean 0 and variance 1 under the reference distribution. The scores make
the sequential tests distribution-free: a lognormal or Poisson column looks like a
standard normal one to the CUSUMs.

:meth:`RankTransform.slots` is the plain per-column lookup; the streaming core uses
:class:`detectors.grid.SlotLookup`, which gives the same slots for many columns at once
several times faster.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

NAN_SLOT = -1


class RankTransform:
    """Slot lookup and score table for one column's sorted reference sample.

    Examples
    --------
    >>> rt = RankTransform(np.array([1.0, 2.0, 2.0, 3.0]))
    >>> rt.slots(np.array([0.5, 2.0, 9.0])).tolist()
    [0, 3, 6]
    >>> rt.le_count[[0, 3, 6]].tolist()
    [0, 3, 4]
    """

    def __init__(self, sample: np.ndarray) -> None:
        self.sample = np.asarray(sample, dtype=np.float64)
        values, counts = np.unique(self.sample, return_counts=True)
        self.values = values
        self.m = int(counts.sum())
        k = len(values)
        le = np.cumsum(counts)
        lt = le - counts
        # per slot: #ref < x and #ref <= x
        self.lt_count = np.empty(2 * k + 1, dtype=np.int64)
        self.le_count = np.empty(2 * k + 1, dtype=np.int64)
        self.lt_count[0:-1:2] = lt
        self.le_count[0:-1:2] = lt
        self.lt_count[-1] = self.le_count[-1] = self.m
        self.lt_count[1::2] = lt
        self.le_count[1::2] = le
        # probability of each slot for a new draw from the reference distribution:
        # atoms (values seen >= 2 times) keep their mass; singletons are treated as
        # continuous and spread over the gaps.
        prob = np.zeros(2 * k + 1)
        atoms = counts >= 2
        prob[1::2][atoms] = counts[atoms] / (self.m + 1)
        prob[0::2] = (np.count_nonzero(~atoms) + 1) / ((self.m + 1) * (k + 1))
        prob /= prob.sum()
        self.slot_prob = prob
        u = (self.lt_count + self.le_count + 1) / (2.0 * (self.m + 1))
        raw = ndtri(u)
        mean = float(prob @ raw)
        sd = float(np.sqrt(prob @ (raw - mean) ** 2))
        self.score = (raw - mean) / sd if sd > 0 else np.zeros_like(raw)

    def slots(self, x: np.ndarray) -> np.ndarray:
        """Slot index of each finite value of ``x`` (NaN gives :data:`NAN_SLOT`)."""
        x = np.asarray(x, dtype=np.float64)
        nan = np.isnan(x)
        if x.size > 256:
            # sorted keys let numpy's binary search reuse bounds: ~2.5x faster
            order = np.argsort(x, kind="stable")
            a = np.empty(x.shape, dtype=np.intp)
            a[order] = np.searchsorted(self.values, x[order], side="left")
        else:
            a = np.searchsorted(self.values, x, side="left")
        k = len(self.values)
        eq = self.values[np.minimum(a, k - 1)] == x
        slot = 2 * a + (eq & (a < k))
        slot[nan] = NAN_SLOT
        return slot

    def cgf(self, theta: float, power: int = 1) -> float:
        """``log E[exp(theta * score**power)]`` under the reference distribution."""
        s = self.score**power
        top = float(np.max(theta * s))
        return top + float(np.log(self.slot_prob @ np.exp(theta * s - top)))
