"""One decision from many signals: severity, confidence, reason and root cause."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import DetectorConfig
from .severity import at_least
from .trigger_types import DriftType


SIGNAL_TYPE = {"ks": DriftType.DATA_DRIFT, "mean_shift": DriftType.DATA_DRIFT,
               "variance": DriftType.DATA_DRIFT, "categorical": DriftType.DATA_DRIFT,
               "outlier_rate": DriftType.OUTLIERS,
               "prediction_drift": DriftType.PREDICTION_DRIFT,
               "multivariate": DriftType.DATA_DRIFT, "mae": DriftType.CONCEPT_DRIFT,
               "trend": DriftType.CONCEPT_DRIFT,
               "r2": DriftType.PERFORMANCE_DEGRADATION,
               "rmse": DriftType.PERFORMANCE_DEGRADATION,
               "accuracy": DriftType.PERFORMANCE_DEGRADATION,
               "estimated_performance": DriftType.ESTIMATED_PERFORMANCE_DEGRADATION,
               **dict.fromkeys(("missing", "stuck", "unseen_category"), DriftType.DATA_QUALITY)}


@dataclass(frozen=True)
class Decision:
    """A fused retraining decision.

    ``offset`` is the 0-based index of the event at which the decision fired, counted
    in the stream given to the update method that returned it: feature events for
    ``update_features``, labelled events for ``update_labelled``.
    """

    triggered: bool
    offset: int
    trigger_types: list[str]
    severity: str
    confidence: float
    reason: str
    root_cause: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    # the model's performance estimated without labels over the events since the
    # change, when the model has an estimator (see :func:`fuse`)
    expected_impact: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """As a plain dict; ``expected_impact`` only when the model has an estimate (the
        dicts of other models are as before)."""
        d = dataclasses.asdict(self)
        if d["expected_impact"] is None:
            del d["expected_impact"]
        return d


_LABELLED = {"mae", "trend", "r2", "rmse", "accuracy", "estimated_performance"}


def severity_of(strengths: list[float], config: DetectorConfig,
                signals: list[str] | None = None) -> str:
    """The design's table (LOW monitor, MEDIUM investigate, HIGH retrain soon, CRITICAL
    immediate) from effect sizes: a signal's strength is its estimated effect over the
    design's threshold for it (a 1.5 sd mean shift over the 0.3 sd design shift is 5;
    an accuracy drop of 15 % over the 5 % threshold is 3; an outlier share over the
    5 %), so a single strong signal is actionable on its own.

    * CRITICAL: a signal at ``very_strong_factor`` (4) times its threshold or more, or
      three or more strong ones;
    * HIGH: a signal at ``strong_factor`` (2) times its threshold or more, or two or
      more signals whose strengths sum to at least ``2 * strong_factor``;
    * MEDIUM: several signals; or any signal past a threshold the design states as an
      action by itself: a change of the model's error or performance (the design
      retrains on it), an outlier share above the design's 5 %;
    * LOW: a single mild change of one input's distribution.

    ``signals`` names the signal of each strength (for the MEDIUM floor).

    >>> cfg = DetectorConfig()
    >>> severity_of([5.0], cfg), severity_of([1.2, 3.3], cfg), severity_of([1.1], cfg)
    ('CRITICAL', 'HIGH', 'LOW')
    >>> severity_of([1.1], cfg, ["mae"]), severity_of([1.0], cfg, ["outlier_rate"])
    ('MEDIUM', 'MEDIUM')
    """
    if not strengths:
        return "NONE"
    strong = sum(s >= config.strong_factor for s in strengths)
    top = max(strengths)
    if top >= config.very_strong_factor or strong >= 3:
        return "CRITICAL"
    if top >= config.strong_factor or (len(strengths) >= 2 and
                                       sum(strengths) >= 2 * config.strong_factor):
        return "HIGH"
    actionable = any(n in _LABELLED or n == "outlier_rate" for n in (signals or ()))
    if len(strengths) >= 2 or actionable:
        return "MEDIUM"
    return "LOW"


def reason_of(types: list[str], columns: list[str]) -> str:
    if not types:
        return "No drift detected"
    if len(types) > 1:
        return f"Multiple triggers detected: {', '.join(types)}"
    where = f" in columns: {', '.join(columns)}" if columns else ""
    return f"{types[0].replace('_', ' ').capitalize()} detected{where}"


def impact_severity(signals: list[dict[str, Any]], impact: dict[str, Any],
                    config: DetectorConfig) -> tuple[str, str]:
    """Severity and reason of a decision whose model has a performance estimate: the one
    place driftline departs from "any drift retrains".

    Drift whose expected impact is not harmful (the estimate within the design's floor
    of the reference, or better) is LOW ("monitor") and the reason says so, unless a
    signal about the performance itself fired (then the design's table). A harmful
    impact counts as one more signal of strength "relative harm over the floor" (an
    estimated accuracy drop of 10 % over the 5 % floor is 2) in the design's table.
    """
    names = [s["signal"] for s in signals]
    strengths = [float(s["strength"]) for s in signals]
    how = (f"estimated {impact['metric']} {impact['estimate']:.4g} over the last {impact['events']} events "
           f"against {impact['reference']:.4g} on the reference")
    if impact["harmful"]:
        return severity_of(strengths + [float(impact["strength"])], config,
                           names + ["estimated_performance"]), f"harmful expected impact: {how}"
    if any(n in _LABELLED for n in names):
        return severity_of(strengths, config, names), f"expected impact within the floor: {how}"
    return "LOW", f"no harmful expected impact ({how}): monitor"


def fuse(signals: list[dict[str, Any]], offset: int, config: DetectorConfig,
         metrics: dict[str, Any] | None = None, floor: str | None = None,
         expected_impact: dict[str, Any] | None = None) -> Decision:
    """Fuse signals (dicts with ``signal``, ``column``, ``strength`` >= 1 when past
    threshold, and ``lambda``) into one :class:`Decision`.

    ``lambda`` of a signal is the expected number of times per ``target_arl`` horizon
    that *some* test of the model reaches a statistic as extreme as this one on a
    stationary stream with the same serial dependence (1 just at a threshold; see
    :mod:`detectors.calibration`). The decision's confidence is ``exp(-min lambda)``:
    1 - the probability that a stationary stream with the same dependence produces a
    statistic this extreme within one ``target_arl`` horizon. It is about 0.37 for a
    statistic just at its threshold and approaches 1 for a statistic far past it; on
    stationary streams a confidence of at least ``c`` occurs in at most about
    ``1 - c`` of the horizons (checked by simulation in ``bench.detectors_bench``).
    Each root cause carries its own confidence. A signal without ``lambda`` counts
    as one at its threshold. ``floor`` is a least severity for a triggered decision
    (the monitor's for outliers above the design's 5 %, or a broken feed). A signal's
    ``detail`` (a data-quality signal's evidence: shares, a value, new levels) is kept
    in its root cause.

    ``expected_impact`` (a model with a performance estimate: its ``metric``,
    ``reference``, ``estimate``, ``change``, ``harmful`` and ``strength``, see
    :meth:`detectors.estimated_performance.EstimatedPerformance.expected_impact`) makes
    the severity that of :func:`impact_severity` and rides on the decision; without it
    severity is the design's table, as before.

    >>> d = fuse([{"signal": "ks", "column": "x", "strength": 2.5, "lambda": 0.05},
    ...           {"signal": "mae", "column": None, "strength": 1.2}], 7, DetectorConfig())
    >>> d.reason, d.severity, d.columns, d.confidence
    ('Multiple triggers detected: data_drift, concept_drift', 'HIGH', ['x'], 0.9512)
    """
    ranked = sorted(signals, key=lambda s: -s["strength"])
    types: list[str] = []
    columns: list[str] = []
    for s in ranked:
        t = SIGNAL_TYPE[s["signal"]].value
        if t not in types:
            types.append(t)
        if s.get("column") is not None and s["column"] not in columns:
            columns.append(s["column"])
    types.sort(key=[d.value for d in DriftType].index)
    strengths = [float(s["strength"]) for s in ranked]
    conf = [float(np.exp(-float(s.get("lambda", 1.0)))) for s in ranked]
    severity = severity_of(strengths, config, [s["signal"] for s in ranked])
    reason = reason_of(types, columns)
    if ranked and expected_impact is not None:
        severity, why = impact_severity(ranked, expected_impact, config)
        reason = f"{reason}; {why}"
    elif ranked and floor and not at_least(severity, floor):
        severity = floor
    return Decision(triggered=bool(ranked), offset=int(offset), trigger_types=types,
                    severity=severity,
                    confidence=round(max(conf, default=0.0), 4),
                    reason=reason,
                    root_cause=[{"signal": s["signal"], "column": s.get("column"),
                                 "strength": round(float(s["strength"]), 4),
                                 "confidence": round(c, 4),
                                 **({"detail": s["detail"]} if "detail" in s else {})}
                                for s, c in zip(ranked, conf)],
                    columns=columns, metrics=dict(metrics or {}),
                    expected_impact=None if expected_impact is None or not ranked else {
                        k: expected_impact[k] for k in IMPACT_FIELDS})


IMPACT_FIELDS = ("metric", "reference", "estimate", "change")
