"""Saving and restoring a :class:`~detectors.monitor.ModelMonitor`.

Two forms. ``state_to_bytes`` holds only what changes while streaming: the KS and
chi-square windows as per-column *local* slots / category codes in the smallest integer
type (a slot fixes the value's position in the reference exactly, so nothing the
statistics use is lost, and the derived arrays are rebuilt on restore), the CUSUM and
outlier statistics, the labelled window as its errors and actuals (squares recomputed
bit for bit), counters, n-of-m histories, the last statistics and the calibration.
The reference profile is left out and named by its fingerprint; ``to_bytes`` adds the
profile for a self-contained copy. Floats are stored as float64: a narrower type would
change the statistics after a restore.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._state import pack, unpack
from .calibration import Calibration
from .config import DetectorConfig
from .errors import StateError
from .profile import ReferenceProfile

_STATE_KIND = "ModelMonitorState"
# the signals whose state has its own place in the layout (fixed before the signal
# contract), and the names of their persistence histories there
_LAID_OUT = ("mean_shift", "variance", "outlier_rate", "ks", "categorical")
_HIST_KEYS = {"categorical": "cat"}
_HIST_KEYS_BACK = {v: k for k, v in _HIST_KEYS.items()}
_FULL_KIND = "ModelMonitor"


def _small_int(a: np.ndarray, high: int) -> np.ndarray:
    """``a`` (values in [-1, high]) in the narrowest signed integer type."""
    for dt in (np.int8, np.int16, np.int32):
        if high <= np.iinfo(dt).max:
            return a.astype(dt)
    return a.astype(np.int64)


_config_dicts: dict[Any, dict[str, Any]] = {}


def _config_dict(config: DetectorConfig) -> dict[str, Any]:
    """``config.to_dict()``, once per config (``dataclasses.asdict`` deep-copies: a third
    of the time of saving a state, paid per model per batch)."""
    try:
        return _config_dicts[config]
    except TypeError:  # unhashable
        return config.to_dict()
    except KeyError:
        if len(_config_dicts) > 64:
            _config_dicts.clear()
        found = _config_dicts[config] = config.to_dict()
        return found


def _body(mon) -> dict[str, Any]:
    window, lab = mon.context.window, mon.labelled
    lk = window.lookup
    ring = window.ring - lk.start2  # local slots: NaN 2k + 1, not filled 2k + 2
    profile_errors = mon.profile.errors if mon.profile.task == mon.task else None
    own_errors = lab.base_errors is not None and not (
        profile_errors is not None and np.array_equal(lab.base_errors, profile_errors))
    valid = int(lab.ring[:, 0].sum())
    cats = mon.signals["categorical"].windows.values()
    out = mon.signals["outlier_rate"].rate
    body = {
        "fingerprint": mon.profile.fingerprint, "config": _config_dict(mon.config),
        "task": mon.task, "calibration": mon.calibration.to_dict(),
        "ks": [_small_int(ring, int(2 * lk.sizes.max(initial=0) + 2)), window.seen],
        # mean up, down, variance, then the large-shift mean pair
        "cusum": np.stack([d.s for d in _cusums(mon)]),
        "cusum_n": np.stack([d.n for d in _cusums(mon)]),
        "gather": [mon._gather_until, [[k, j, lam] for (k, j), lam
                                       in sorted(mon._gather_seq.items())],
                   [[sig, col, st, lam] for (sig, col), (st, lam)
                    in mon._gather_other.items()]],
        "outliers": [out.s, out.seg_len, out.seg_count],
        "cats": [[_small_int(w.ring, len(w.counts) + 1), w.seen] for w in cats],
        "labelled": {"s": lab.s, "run": [lab.run_len, lab.run_sum],
                     "err": lab.ring[:, 1], "act": lab.ring[:, 3],
                     "valid": valid, "buffer": lab.buffer, "seen": lab.seen,
                     "baseline": lab.baseline,
                     "base_errors": lab.base_errors if own_errors else None,
                     "trend": [lab.trend_maes, lab.block_sum, lab.block_count,
                               lab.trend_last],
                     "tau": [lab.tau_e, lab.err_buffer]},
        "hist": {_HIST_KEYS.get(k, k): np.packbits(v, axis=1) if v.size else v.shape
                 for k, v in mon._hist.items()},
        "counters": [mon.events_seen, mon.labelled_seen, mon._next_feature_fire,
                     mon._next_label_fire],
        "last": mon._last,
        "warmup": [mon.warmup.until,
                   _small_int(mon.warmup.slots - lk.start2,
                              int(2 * lk.sizes.max(initial=0) + 2)),
                   _small_int(mon.warmup.codes, max([len(w.counts) + 1 for w in cats] or [1]))],
    }
    # signals added after this layout was fixed save their own state under their name
    newer = {name: sig.get_state() for name, sig in mon.signals.items() if name not in _LAID_OUT}
    if newer:
        body["signals"] = newer
    return body


def _cusums(mon):
    mean, var = mon.signals["mean_shift"], mon.signals["variance"]
    return (mean.up, mean.down, var.cusum, mean.up_large, mean.down_large)


def _restore(cls, profile: ReferenceProfile, b: dict[str, Any], config, task):
    if b["fingerprint"] != profile.fingerprint:
        raise StateError(f"saved state belongs to reference profile {b['fingerprint'][:12]}, "
                         f"not {profile.fingerprint[:12]}")
    recorded = DetectorConfig.from_mapping(b["config"])
    if config is not None and config != recorded:
        raise StateError("saved state was written with a different detector config")
    if task is not None and task != b["task"]:
        raise StateError(f"saved state is for task {b['task']!r}, not {task!r}")
    cal = Calibration(**{k: np.asarray(v) if isinstance(v, (np.ndarray, list)) else v
                         for k, v in b["calibration"].items()})
    mon = cls(profile, recorded, b["task"], calibration=cal)
    window = mon.context.window
    lk = window.lookup
    ring, window.seen = b["ks"]
    if ring.shape != window.ring.shape:
        raise StateError("saved KS window does not fit the profile and config")
    window.ring = (ring.astype(np.int64) + lk.start2).astype(window.ring.dtype)
    # (older states: three rows, no large-shift pair; run lengths restart at 0 in
    # states written before them)
    for det, s, n in zip(_cusums(mon), b["cusum"], b.get("cusum_n", [None] * 5)):
        det.s = np.array(s)
        if n is not None:
            det.n = np.array(n, dtype=np.int64)
    until, seq, other = b.get("gather", [-1, [], []])
    mon._gather_until = int(until)
    mon._gather_seq = {(int(g[0]), int(g[1])): float(g[2]) if len(g) > 2 else 1.0
                       for g in seq}
    mon._gather_other = {(g[0], g[1]): (float(g[2]), float(g[3]) if len(g) > 3 else 1.0)
                         for g in other}
    s, seg_len, seg_count = b["outliers"]
    mon.signals["outlier_rate"].rate.set_state({"s": s, "seg_len": seg_len,
                                                 "seg_count": seg_count})
    for w, (ring, seen) in zip(mon.signals["categorical"].windows.values(), b["cats"]):
        # (a state written with another window length keeps its newest values)
        ring = np.r_[np.full(max(w.window - len(ring), 0), -1), ring[-w.window:]]
        w.set_state({"ring": ring.astype(np.int64), "seen": seen})
    for name, state in b.get("signals", {}).items():
        mon.signals[name].set_state(state)
    _restore_labelled(mon.labelled, b["labelled"])
    for k, v in b["hist"].items():
        key = _HIST_KEYS_BACK.get(k, k)
        if isinstance(v, np.ndarray):
            # (a state saved with fewer tests: the tests added since start with no flags)
            have = mon._hist[key]
            have[:len(v)] = np.unpackbits(v, axis=1, count=have.shape[1]).astype(bool)
    (mon.events_seen, mon.labelled_seen,
     mon._next_feature_fire, mon._next_label_fire) = b["counters"]
    mon._last = b["last"]
    until, slots, codes = b.get("warmup", [0, None, None])
    mon.warmup.until = int(until)
    if slots is not None and np.asarray(slots).size:
        mon.warmup.slots = (np.asarray(slots, dtype=np.int64) + lk.start2).astype(
            window.ring.dtype)
    if codes is not None and np.asarray(codes).size:
        mon.warmup.codes = np.asarray(codes, dtype=np.int64)
    return mon


def _restore_labelled(lab, b: dict[str, Any]) -> None:
    ring = np.zeros_like(lab.ring)
    if b["valid"]:
        ring[-b["valid"]:, 0] = 1.0
    ring[:, 1], ring[:, 3] = b["err"], b["act"]
    ring[:, 2], ring[:, 4] = ring[:, 1] * ring[:, 1], ring[:, 3] * ring[:, 3]
    maes, block_sum, block_count, last = b["trend"]
    base = b["base_errors"] if b["base_errors"] is not None else lab.base_errors
    run_len, run_sum = b.get("run", [0, 0.0])
    tau_e, err_buffer = b.get("tau", [lab.tau, np.zeros(0)])
    lab.set_state({"tau_e": float(tau_e), "err_buffer": np.asarray(err_buffer, float),"s": b["s"], "run_len": int(run_len), "run_sum": float(run_sum),
                   "ring": ring, "buffer": b["buffer"], "seen": b["seen"],
                   "baseline": b["baseline"], "base_errors": base, "trend_maes": maes,
                   "block_sum": block_sum, "block_count": block_count,
                   "trend_last": np.asarray(last, dtype=np.float64)})


def state_to_bytes(mon) -> bytes:
    return pack(_STATE_KIND, _body(mon))


def from_state(cls, profile, data: bytes, config=None, task=None):
    b = unpack(_STATE_KIND, data)
    try:
        return _restore(cls, profile, b, config, task)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, StateError):
            raise
        raise StateError(f"saved monitor state is incomplete: {exc!r}") from exc


def full_to_bytes(mon) -> bytes:
    return pack(_FULL_KIND, {"profile": np.frombuffer(mon.profile.to_bytes(), np.uint8),
                             "state": _body(mon)})


def full_from_bytes(cls, data: bytes):
    b = unpack(_FULL_KIND, data)
    try:
        profile = ReferenceProfile.from_bytes(b["profile"].tobytes())
        return _restore(cls, profile, b["state"], None, None)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, StateError):
            raise
        raise StateError(f"saved monitor is incomplete: {exc!r}") from exc


class Saving:
    """The saving and restoring methods of :class:`~detectors.monitor.ModelMonitor`."""

    def to_bytes(self) -> bytes:
        """Everything, the reference profile included (see :meth:`state_to_bytes`)."""
        return full_to_bytes(self)

    @classmethod
    def from_bytes(cls, data: bytes):
        """Inverse of :meth:`to_bytes`."""
        return full_from_bytes(cls, data)

    def state_to_bytes(self) -> bytes:
        """The changing state only: the signals', counters, persistence, the last
        statistics and the calibration, with the profile's fingerprint but not the
        profile (tens of kB instead of about 1 MB for 10 columns).

        Restore with :meth:`from_state` and the same profile.
        """
        return state_to_bytes(self)

    @classmethod
    def from_state(cls, profile: ReferenceProfile, state: bytes,
                   config: DetectorConfig | None = None, task: str | None = None):
        """A monitor over ``profile`` that continues exactly where the one that wrote
        ``state`` (with :meth:`state_to_bytes`) stopped.

        ``config`` and ``task`` default to the ones recorded in the state; given, they
        must equal them. Raises :class:`~detectors.errors.StateError` when the profile's
        fingerprint, the config or the task differ, or the bytes are not such a state.
        """
        return from_state(cls, profile, state, config, task)
