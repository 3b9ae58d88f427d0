"""Vectorised one-sided CUSUM on log-likelihood-ratio increments."""

from __future__ import annotations

import numpy as np

from .base import StreamDetector


BLOCK = 16  # events per block of the cheap upper bound in :func:`lindley_scan`


def _halve(u: np.ndarray, op, block: int) -> np.ndarray:
    """Per-block reduction along axis 1 by pairwise halving of neighbours (SIMD-friendly,
    unlike a reduction over a short last axis); ``block`` is a power of two."""
    while block > 1:
        u = op(u[:, 0::2], u[:, 1::2])
        block //= 2
    return u


def lindley_scan(walk: np.ndarray, s0: np.ndarray, h: float | np.ndarray,
                 block: int = BLOCK):
    """Final value of many CUSUMs and the exact paths of those that may pass ``h``.

    ``walk`` is (rows, n): the cumulative sums of the increments over the batch, so the
    CUSUM is ``S_t = walk_t - min(-s0, min_{s<=t} walk_s)``. Computing every path needs
    a running minimum, a sequential pass numpy cannot vectorise (about 3 ns a value).
    Instead each block of ``block`` events gets the bound ``max walk in the block -
    running min of block minima`` (two halving reductions and an accumulate over
    ``n / block`` values); only rows whose bound passes ``h`` get the exact path.

    Returns ``(s_end, rows, paths, last0)``: the final statistic of every row, the row
    indices that may pass ``h`` in the batch, their exact paths (len(rows), n), and per
    row the index of the last event at which the CUSUM stood at zero (-1 if it never
    did in the batch). That index is the last argmin of the walk when its minimum is
    at most ``-s0`` (Page's change-point estimate); it is found from the block minima
    plus one block per row, so it costs ``n / block`` comparisons.

    >>> w = np.cumsum(np.array([[1.0, -3.0, 2.0], [-1.0, -1.0, -1.0]]), axis=1)
    >>> s, rows, paths, last0 = lindley_scan(w, np.array([0.5, 0.0]), 2.5)  # bounds 4, 2
    >>> s.tolist(), rows.tolist(), paths.tolist(), last0.tolist()
    ([2.0, 0.0], [0], [[1.5, 0.0, 2.0]], [1, 2])
    """
    r, n = walk.shape
    s0 = np.asarray(s0, dtype=np.float64)
    h = np.broadcast_to(np.asarray(h, dtype=np.float64), (r,))
    if n == 0:
        return s0.copy(), np.zeros(0, np.intp), np.zeros((0, 0)), np.full(r, -1, np.intp)
    pad = (-n) % block  # padding repeats the last value: block extremes unchanged
    w = np.concatenate([walk, np.repeat(walk[:, -1:], pad, axis=1)], axis=1) if pad \
        else walk
    bmax = _halve(w, np.maximum, block)
    bmin = _halve(w, np.minimum, block)
    low = np.minimum.accumulate(bmin, axis=1)
    wmin = low[:, -1].copy()
    np.minimum(low, -s0[:, None], out=low)
    s_end = walk[:, -1] - low[:, -1]  # the last running minimum is the overall one
    last0 = _last_zero(w, bmin, wmin, s0, block, n)
    rows = np.flatnonzero((bmax - low).max(axis=1) > h)
    if not rows.size:
        return s_end, rows, np.zeros((0, n)), last0
    sub = walk[rows]
    run = np.minimum.accumulate(sub, axis=1)
    np.minimum(run, -s0[rows, None], out=run)
    return s_end, rows, sub - run, last0


def _last_zero(w: np.ndarray, bmin: np.ndarray, wmin: np.ndarray, s0: np.ndarray,
               block: int, n: int) -> np.ndarray:
    """Last index of the minimum ``wmin`` of each row of the (padded) walk ``w`` when
    it is at most ``-s0`` (the CUSUM's last zero), else -1: the last block holding the
    minimum, then the last position inside it."""
    r, nb = bmin.shape
    b = nb - 1 - (bmin == wmin[:, None])[:, ::-1].argmax(axis=1)
    inside = w.reshape(r, nb, block)[np.arange(r), b]  # (a view: w is contiguous)
    inside = inside == wmin[:, None]
    pos = b * block + (block - 1) - inside[:, ::-1].argmax(axis=1)
    pos[wmin > -s0] = -1
    np.minimum(pos, n - 1, out=pos)  # padding repeats the last value
    return pos


def block_extremes(cz: np.ndarray, block: int = BLOCK,
                   fine: int | None = None):
    """Per row of ``cz`` (rows, n), the maximum and minimum of each block of ``block``
    values (the last block padded with the last value); with ``fine`` (a power of two
    below ``block``) also those of blocks of ``fine`` values, found on the way:
    ``((bmax, bmin), (fine_max, fine_min))``."""
    pad = (-cz.shape[1]) % block
    w = np.concatenate([cz, np.repeat(cz[:, -1:], pad, axis=1)], axis=1) if pad else cz
    if fine is None:
        return _halve(w, np.maximum, block), _halve(w, np.minimum, block)
    fmax, fmin = _halve(w, np.maximum, fine), _halve(w, np.minimum, fine)
    return ((_halve(fmax, np.maximum, block // fine), _halve(fmin, np.minimum, block // fine)),
            (fmax, fmin))


def monotone_extremes(c: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """:func:`block_extremes` of cumulative sums of a non-negative series (outlier
    counts, squared scores): a block's maximum is its last value, its minimum its first
    (floating-point addition of a non-negative number never decreases a sum), so no
    reduction is needed.

    >>> c = np.cumsum(np.array([[1.0, 0.0, 2.0, 3.0, 0.5]]), axis=1)
    >>> [np.array_equal(a, b) for a, b in zip(monotone_extremes(c, 2), block_extremes(c, 2))]
    [True, True]
    """
    n = c.shape[1]
    last = np.minimum(np.arange(block - 1, n + block - 1, block), n - 1)
    return c[:, last], c[:, ::block]


def affine_scan(cz: np.ndarray, bmax: np.ndarray, bmin: np.ndarray, scale: np.ndarray,
                drift: np.ndarray, s0: np.ndarray, h: np.ndarray, block: int = BLOCK):
    """:func:`lindley_scan` of the walk ``cz * scale[:, None] - outer(drift, t)``
    (``t = 1..n``) without forming it: ``cz`` (rows, n) are cumulative sums of a series
    and ``bmax``/``bmin`` its block extremes (:func:`block_extremes`), which every CUSUM
    on that series shares (the mean CUSUMs up and down, for small and large shifts).

    In block ``b`` (events ``t0..t1``) the walk lies between ``min(scale * cz) -
    drift * t1`` and ``max(scale * cz) - drift * t0`` (``drift >= 0``; the other way
    round otherwise), so the bound of :func:`lindley_scan` follows from the block
    extremes of ``cz``; rounding is monotone, so these are bounds on the computed walk
    too. The walk's minimum and its last argmin (for the final statistic and the last
    zero) are then found exactly among the few blocks whose lower bound is at most the
    smallest upper bound of a block minimum. Returns what :func:`lindley_scan` returns
    on the formed walk: the same final statistics, last zeros and exact paths (the
    candidate rows may be more: the bound is looser by ``|drift| * block`` at most).

    >>> rng = np.random.default_rng(0)
    >>> cz = np.cumsum(rng.normal(size=(3, 50)), axis=1)
    >>> sc, dr = np.array([0.5, -0.5, 1.0]), np.array([0.1, 0.1, 0.5])
    >>> s0, h = np.array([0.0, 1.0, 2.0]), np.full(3, 3.0)
    >>> walk = cz * sc[:, None] - np.multiply.outer(dr, np.arange(1.0, 51.0))
    >>> want = lindley_scan(walk, s0, h)
    >>> got = affine_scan(cz, *block_extremes(cz), sc, dr, s0, h)
    >>> [np.array_equal(a, b) for a, b in zip(got[:1] + got[3:], want[:1] + want[3:])]
    [True, True]
    >>> set(want[1].tolist()) <= set(got[1].tolist())
    True
    """
    r, n = cz.shape
    s0 = np.asarray(s0, dtype=np.float64)
    if n == 0:
        return s0.copy(), np.zeros(0, np.intp), np.zeros((0, 0)), np.full(r, -1, np.intp)
    nb = bmax.shape[1]
    col = scale[:, None]
    up = scale >= 0
    if up.all():  # (a CUSUM's rows share a direction: one product each)
        umax, umin = bmax * col, bmin * col
    elif not up.any():
        umax, umin = bmin * col, bmax * col
    else:
        umax = np.where(up[:, None], bmax * col, bmin * col)
        umin = np.where(up[:, None], bmin * col, bmax * col)
    # events of each block (1-based); blocks of padding only (the extremes may have
    # been found with a coarser block's padding) stand at the last event
    t0 = np.minimum(np.arange(nb, dtype=np.float64) * block + 1.0, n)
    t1 = np.minimum(t0 + (block - 1), n)
    d0, d1 = np.multiply.outer(drift, t0), np.multiply.outer(drift, t1)
    if (drift >= 0).all():
        lo_d, hi_d = d0, d1
    else:
        lo_d, hi_d = np.minimum(d0, d1), np.maximum(d0, d1)
    ub = np.subtract(umax, lo_d, out=umax)  # >= the walk in the block
    lb = umin - hi_d  # <= the walk in the block
    ubmin = np.subtract(umin, lo_d, out=umin)  # >= the block's minimum of the walk
    # candidate rows for a path past h (as lindley_scan, with the looser bounds)
    low = np.minimum.accumulate(lb, axis=1)
    np.minimum(low, -s0[:, None], out=low)
    rows = np.flatnonzero((ub - low).max(axis=1) > h)
    # the exact minimum of the walk and its last argmin, from the candidate blocks
    cand = lb <= ubmin.min(axis=1)[:, None]
    ri, bi = np.nonzero(cand)
    pos = np.minimum(bi[:, None] * block + np.arange(block), n - 1)
    vals = cz[ri[:, None], pos] * scale[ri, None] - drift[ri, None] * (pos + 1.0)
    starts = np.searchsorted(ri, np.arange(r))  # (every row has a candidate block)
    wmin = np.minimum.reduceat(vals.min(axis=1), starts)
    eq = vals == wmin[ri][:, None]
    last = np.where(eq, pos, -1).max(axis=1)
    argmin = np.maximum.reduceat(last, starts)
    walk_n = cz[:, -1] * scale - drift * float(n)
    s_end = walk_n - np.minimum(wmin, -s0)
    last0 = np.where(wmin <= -s0, argmin, -1)
    if not rows.size:
        return s_end, rows, np.zeros((0, n)), last0
    sub = cz[rows] * scale[rows, None] - np.multiply.outer(drift[rows], np.arange(1.0, n + 1))
    run = np.minimum.accumulate(sub, axis=1)
    np.minimum(run, -s0[rows, None], out=run)
    return s_end, rows, sub - run, last0


def lindley(incr: np.ndarray, s0: np.ndarray) -> np.ndarray:
    """All values of ``S_t = max(0, S_{t-1} + incr_t)`` along axis 0, without a loop.

    ``S_t = C_t - min(-S_0, min_{s<=t} C_s)`` with ``C`` the cumulative sum of the
    increments (the Lindley recursion unrolled).

    >>> lindley(np.array([[1.0], [-3.0], [2.0]]), np.array([0.5])).ravel().tolist()
    [1.5, 0.0, 2.0]
    """
    c = np.cumsum(incr, axis=0)
    low = np.minimum.accumulate(c, axis=0)
    np.minimum(low, -s0, out=low)
    return c - low


class CUSUM(StreamDetector):
    """One-sided CUSUM per column: ``S = max(0, S + scale * x - drift)``.

    With ``drift = log E0[exp(scale * x)]`` the increments are a log-likelihood ratio
    whose exponential is a mean-one martingale under no drift, so by Ville's inequality
    the mean run length to a false alarm is at least ``exp(threshold)``.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> x = np.r_[rng.normal(size=500), rng.normal(1.0, size=200)][:, None]
    >>> det = CUSUM(scale=[0.5], drift=[0.125], threshold=[9.0])
    >>> path = det.update_many(x)
    >>> int(np.argmax(path[:, 0] > 9.0))  # change at 500
    523
    """

    _state_fields = ("s", "n")
    _settings = ("scale", "drift", "threshold")

    def __init__(self, scale, drift, threshold) -> None:
        self.scale = np.asarray(scale, dtype=np.float64)
        # one drift and threshold per column (a scalar applies to all)
        self.drift = np.broadcast_to(np.asarray(drift, np.float64), self.scale.shape).copy()
        self.threshold = np.broadcast_to(np.asarray(threshold, np.float64),
                                         self.scale.shape).copy()
        self._reset()

    def _reset(self) -> None:
        self.s = np.zeros_like(self.scale)
        # run length: events since the statistic last stood at zero (Page's estimate
        # of the change point is its last reset); the segment mean of the increments
        # is (s / n), whence the effect estimates of :meth:`effect`
        self.n = np.zeros(self.scale.shape, dtype=np.int64)

    @property
    def drift_detected(self) -> np.ndarray:
        return self.s > self.threshold

    def update_many(self, values: np.ndarray) -> np.ndarray:
        """Feed ``values`` (n, columns); return the statistic after every event."""
        path = lindley(values * self.scale - self.drift, self.s)
        if len(path):
            self.s = path[-1].copy()
            zero = path == 0
            hit = zero.any(axis=0)
            last0 = len(path) - 1 - np.argmax(zero[::-1], axis=0)
            self.n = np.where(hit, len(path) - 1 - last0, self.n + len(path))
        return path

    def segment_mean(self, cols=slice(None)) -> np.ndarray:
        """Mean of ``scale * x`` since the last zero (Page's change-point estimate):
        ``(s + n * drift) / n``; 0 where the run is empty.

        >>> det = CUSUM([1.0], [0.5], [9.0])
        >>> _ = det.update_many(np.array([[-3.0], [2.0], [1.0]]))
        >>> det.s.tolist(), det.n.tolist(), det.segment_mean().tolist()
        ([2.0], [2], [1.5])
        """
        n = self.n[cols]
        return np.where(n > 0, self.s[cols] / np.maximum(n, 1) + self.drift[cols], 0.0)

    def advance(self, walk: np.ndarray, cols: slice = slice(None)):
        """Fast path: ``walk`` (columns ``cols``, n) are cumulative sums of
        ``scale*x - drift``.

        Updates the state of those columns; returns the (absolute) columns that may
        pass the threshold in the batch and their exact paths (see
        :func:`lindley_scan`).
        """
        s_end, rows, paths, last0 = lindley_scan(walk, self.s[cols],
                                                 self.threshold[cols])
        self.s[cols] = s_end
        if walk.shape[1]:
            self.n[cols] = np.where(last0 >= 0, walk.shape[1] - 1 - last0,
                                    self.n[cols] + walk.shape[1])
        return rows + (cols.start or 0), paths

    def advance_affine(self, cz: np.ndarray, extremes, cols: slice = slice(None),
                       block: int = BLOCK):
        """As :meth:`advance` for the walk ``cz * scale - drift * t`` given the cumulative
        sums ``cz`` of the raw series of columns ``cols`` and their extremes in blocks of
        ``block`` events (see :func:`affine_scan`); several CUSUMs on one series share
        both. (The bound is looser by ``2 * drift * block``: a CUSUM with a large drift
        needs short blocks, else it would often take the exact path.)"""
        s_end, rows, paths, last0 = affine_scan(
            cz, *extremes, self.scale[cols], self.drift[cols], self.s[cols],
            self.threshold[cols], block)
        self.s[cols] = s_end
        if cz.shape[1]:
            self.n[cols] = np.where(last0 >= 0, cz.shape[1] - 1 - last0,
                                    self.n[cols] + cz.shape[1])
        return rows + (cols.start or 0), paths
