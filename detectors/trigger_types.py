"""The kinds of trigger (the design document's ``DriftType``), in a module of their own so
that settings and messages can name them without importing the detectors' numerics."""

from __future__ import annotations

import enum


class DriftType(str, enum.Enum):
    """Kinds of trigger (the design document's ``DriftType``)."""

    DATA_DRIFT = "data_drift"
    CONCEPT_DRIFT = "concept_drift"
    PERFORMANCE_DEGRADATION = "performance_degradation"
    OUTLIERS = "outliers"
    ESTIMATED_PERFORMANCE_DEGRADATION = "estimated_performance_degradation"
    PREDICTION_DRIFT = "prediction_drift"
    DATA_QUALITY = "data_quality"  # a broken feed: values missing, stuck, of new levels
