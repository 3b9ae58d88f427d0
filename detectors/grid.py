"""Exact slot lookup through a uniform grid: the fast path of :mod:`detectors.ranks`.

``np.searchsorted`` on a 10,000-value reference costs about 80 ns a value (a branchy
binary search). Here each column gets a uniform grid of about ``ratio`` cells per
distinct reference value, over a monotone transform of the axis; a table gives, per
cell, the first reference value at or after the cell. Because the cell of a value is a
monotone function of the value (IEEE subtraction, multiplication by a positive
constant, ``sqrt`` and truncation are all monotone), every reference value in an
earlier cell is smaller than ``x`` and every one in a later cell larger, so only the
values in ``x``'s own cell need comparing. Two gathers settle almost all values; the
few that share a cell with two or more reference values take a short loop. The result
is exactly ``np.searchsorted`` (tested), so the KS statistic stays exact.
"""

from __future__ import annotations

import numpy as np

_LINEAR_STEPS = 4
CHUNK = 3  # columns looked up together: their tables stay in a core's L2 cache


def column_chunks(ncols: int, size: int | None = None) -> list[slice]:
    """Balanced column groups of about ``size`` (default :data:`CHUNK`) columns."""
    k = max(1, round(ncols / (size or CHUNK)))
    edges = np.linspace(0, ncols, k + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _transform(v: np.ndarray, center: float, power: int) -> np.ndarray:
    """Monotone, exactly rounded squeeze of heavy tails: ``sign(y) |y|^(1/2^power)``."""
    if power == 0:
        return v
    y = v - center
    u = np.abs(y)
    for _ in range(power):
        np.sqrt(u, out=u)
    return np.copysign(u, y, out=u)


class SlotLookup:
    """Slots of many columns at once, each column against its distinct sorted values.

    Parameters
    ----------
    values
        Per column, the sorted distinct reference values (``RankTransform.values``).
    ratio
        Grid cells per distinct value (memory: 4 bytes a cell).

    Examples
    --------
    Slots are *global*: column ``j`` uses ``2 * starts[j] + local slot``, its NaN code
    is ``nan_code[j]`` (local ``2k + 1``) and ``empty_code[j]`` (local ``2k + 2``) marks
    a window position not filled yet; both sort after every real slot of the column.

    >>> lk = SlotLookup([np.array([1.0, 2.0, 3.0]), np.array([0.0])])
    >>> lk.local(lk.slots(np.array([[2.0, 2.5, np.nan], [-1.0, 0.0, 1.0]]))).tolist()
    [[3, 4, 7], [0, 1, 2]]
    """

    def __init__(self, values: list[np.ndarray], ratio: float = 4.0) -> None:
        self.ncols = len(values)
        vals, firsts, starts = [], [], []
        scale, shift, lo, hi, centers, powers = [], [], [], [], [], []
        off_v = off_g = 0
        for v in values:
            v = np.asarray(v, dtype=np.float64)
            k = len(v)
            cells = max(int(ratio * k), 1)
            best = None
            for power in (0, 1, 2):
                center = float(v[k // 2])
                t = _transform(v, center, power)
                q0, q1 = np.quantile(t, [0.001, 0.999]) if k > 1 else (t[0], t[0])
                s = cells / (q1 - q0) if q1 > q0 else 1.0
                c = self._cell(t, s, off_g - q0 * s, off_g, off_g + cells - 1)
                # share of reference values that sit with another one in their cell
                crowd = float(np.mean(np.r_[c[1:] == c[:-1], False]
                                      | np.r_[False, c[1:] == c[:-1]])) if k > 1 else 0.0
                if best is None or crowd < best[0] - 0.02:
                    best = (crowd, power, center, s, off_g - q0 * s, c)
                if crowd < 0.05:
                    break
            _, power, center, s, b, c = best
            powers.append(power); centers.append(center)
            scale.append(s); shift.append(b)
            lo.append(off_g); hi.append(off_g + cells - 1)
            firsts.append(np.searchsorted(c, np.arange(off_g, off_g + cells)) + off_v)
            starts.append(off_v)
            vals.append(np.r_[v, np.nan, np.nan])  # two sentinels: never < or == x
            off_v += k + 2
            off_g += cells
        self.vals = np.concatenate(vals) if vals else np.zeros(0)
        # int32 where it fits: half the cache footprint of the tables' hot lookups
        itype = np.int32 if off_v + 2 < 2**31 - 1 else np.intp
        self.first = np.concatenate(firsts).astype(itype) if firsts else np.zeros(0, itype)
        col = (slice(None), None)
        self.scale = np.array(scale)[col]
        self.shift = np.array(shift)[col]
        self.lo = np.array(lo, dtype=np.float64)[col]
        self.hi = np.array(hi, dtype=np.float64)[col]
        self.start2 = 2 * np.array(starts, dtype=np.intp)[col]
        self.centers, self.powers = np.array(centers), np.array(powers)
        self.starts = np.array(starts, dtype=np.intp)
        self.sizes = np.array([len(v) for v in values], dtype=np.intp)
        self.nan_code = 2 * (self.starts + self.sizes) + 1
        self.empty_code = self.nan_code + 1
        self.n_slots = 2 * len(self.vals)  # size of a table indexed by global slot

    def local(self, slots: np.ndarray) -> np.ndarray:
        """Global slots (columns, n) to per-column local slots."""
        return slots - self.start2

    @staticmethod
    def _cell(t, s, b, lo, hi):
        u = t * s
        u += b
        np.fmax(u, lo, out=u)  # fmax/fmin: NaN becomes a valid cell, masked later
        np.fmin(u, hi, out=u)
        return u.astype(np.intp)

    def slots(self, x: np.ndarray) -> np.ndarray:
        """Global slot of every value of ``x`` (columns, n)."""
        x = np.asarray(x, dtype=np.float64)
        chunks = column_chunks(self.ncols)
        if len(chunks) == 1:
            return self._slots(x, slice(None))
        # a few columns at a time, so that their tables stay in the core's cache
        out = np.empty(x.shape, dtype=self.first.dtype)
        for cols in chunks:
            out[cols] = self._slots(x[cols], cols)
        return out

    def _slots(self, x: np.ndarray, cols: slice) -> np.ndarray:
        t = x
        powers = self.powers[cols]
        if powers.any():
            t = x.copy()
            for p in (1, 2):
                rows = np.flatnonzero(powers == p)
                if rows.size:
                    t[rows] = _transform(x[rows], self.centers[cols][rows][:, None], p)
        g = self._cell(t, self.scale[cols], self.shift[cols], self.lo[cols], self.hi[cols])
        fg = np.take(self.first, g)
        v0 = np.take(self.vals, fg)
        slot = fg + fg
        slot += v0 < x
        slot += v0 < x
        slot += v0 == x
        fg += 1
        crowded = np.flatnonzero(np.take(self.vals, fg) <= x)
        if crowded.size:
            slot.flat[crowded] = self._crowded(x.ravel()[crowded], fg.ravel()[crowded],
                                               crowded // x.shape[1] + (cols.start or 0))
        nan = np.isnan(x)
        if nan.any():
            np.copyto(slot, self.nan_code[cols, None], where=nan)
        return slot

    def _crowded(self, x: np.ndarray, a: np.ndarray, row: np.ndarray) -> np.ndarray:
        """Slots of values whose cell holds two or more reference values <= them."""
        a = a.copy()
        todo = np.arange(len(x))
        for _ in range(_LINEAR_STEPS):
            step = self.vals[a[todo]] < x[todo]
            a[todo] += step
            todo = todo[step]
            if not todo.size:
                break
        for j in np.unique(row[todo]):  # rare: a very crowded cell
            sel = todo[row[todo] == j]
            st = self.starts[j]
            a[sel] = st + np.searchsorted(self.vals[st:st + self.sizes[j]], x[sel])
        eq = self.vals[a] == x
        return 2 * a + eq
