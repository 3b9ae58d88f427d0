"""The warm-up of a monitor whose reference says nothing of the serial dependence (a
shuffled or short reference): the stream's first ``config.dependence_warmup`` events
are kept, as numeric slots and categorical codes, until the dependence is estimated
from them at its end (:mod:`detectors.dependence`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from . import dependence as dep
from .calibration import Calibration, calibrate
from .profile import ReferenceProfile


class Warmup:
    """The events kept until event ``until`` (0: no warm-up): ``slots`` (numeric
    columns, events) and ``codes`` (categorical columns, events)."""

    def __init__(self, until: int, n_numeric: int, n_categorical: int,
                 slot_dtype) -> None:
        self.until = until
        self.slots = np.zeros((n_numeric, 0), dtype=slot_dtype)
        self.codes = np.zeros((n_categorical, 0), dtype=np.int64)

    def keep(self, slots: np.ndarray, codes: np.ndarray) -> None:
        self.slots = np.concatenate([self.slots, slots], axis=1)
        self.codes = np.concatenate([self.codes, codes], axis=1)

    def dependence(self, profile: ReferenceProfile, score: np.ndarray,
                   nan_code: np.ndarray) -> dict:
        """The profile's dependence with what it lacks estimated from the kept events
        (``score``: normal score per slot; ``nan_code``: each column's missing-value
        slot, left out); the kept events are dropped."""
        z = score[self.slots].T
        z[(self.slots >= nan_code[:, None]).T] = np.nan
        f = dep.score_factors(z)
        old = profile.dependence or {}
        known = dict(old)
        for key in ("mean", "var", "ks", "out", "lag1"):
            v = np.asarray(old.get(key, np.full(len(f[key]), np.nan)), dtype=np.float64)
            known[key] = np.where(np.isfinite(v), v, f[key]) if len(v) == len(f[key]) \
                else f[key]
        cats = dict(old.get("categorical", {}))
        for j, name in enumerate(profile.categorical_columns):
            if not np.isfinite(cats.get(name, np.nan)):
                cats[name] = dep.indicator_factor(self.codes[j])
        known["categorical"] = cats
        known.setdefault("errors", float("nan"))
        self.slots, self.codes = self.slots[:, :0], self.codes[:, :0]
        return known

    def calibration(self, context, current: Calibration) -> Calibration:
        """The calibration with the dependence learnt from the kept events (the labelled
        side keeps its own: see :class:`~detectors.labelled.LabelledSignals`); ``context``
        is the monitor's :class:`~detectors.signals.base.Context`."""
        known = self.dependence(context.profile, context.score, context.window.lookup.nan_code)
        cal = calibrate(context.profile, context.config, context.window.transforms,
                        dependence=known, source="warmup")
        return dataclasses.replace(cal, err_tau=current.err_tau)
