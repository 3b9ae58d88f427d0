"""The N-of-M persistence rule: a signal counts only when alarmed in n of its last m
checks (the current one included and alarmed).

A *check* is each evaluation of the signal: every event for the sequential tests
(CUSUMs, labelled signals), every ``ks_stride`` events for the windowed tests (KS,
chi-square). The last ``m - 1`` flags of every signal are part of the monitor's state,
so the rule does not depend on how the stream is cut into micro-batches.
"""

from __future__ import annotations

import numpy as np


def n_of_m(flags: np.ndarray, history: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply the rule to ``flags`` (signals, checks) given the previous ``m - 1``
    flags per signal in ``history`` (signals, m - 1); return ``(ok, new_history)``.

    >>> ok, hist = n_of_m(np.array([[1, 0, 1, 1, 0, 0, 1]], bool), np.zeros((1, 2), bool), 2)
    >>> ok.astype(int).tolist(), hist.astype(int).tolist()
    ([[0, 0, 1, 1, 0, 0, 0]], [[0, 1]])
    """
    m1 = history.shape[1]
    if m1 == 0:
        return flags, history
    k = flags.shape[1]
    both = np.concatenate([history, flags], axis=1)
    cum = np.zeros((len(flags), m1 + k + 1), dtype=np.int32)
    np.cumsum(both, axis=1, out=cum[:, 1:])
    count = cum[:, m1 + 1:] - cum[:, :k]  # alarms among the last m checks
    return flags & (count >= n), both[:, -m1:].copy()
