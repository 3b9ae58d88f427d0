"""The feature signals of :class:`~detectors.monitor.ModelMonitor`, one module each on
the contract of :mod:`detectors.signals.base` (read it to write a new one).

A new signal is its module plus one entry in :data:`FEATURE_SIGNALS`. The order is the
order of the monitor's passes, of its root causes at equal strength and of its saved
``last`` readings: sequential signals first, then windows.
"""

from .base import (Checks, Context, FeatureBatch, SequentialSignal, Signal, WindowedSignal,
                   feature_arrays, prediction_array)
from .categorical import Categorical
from .estimated_performance import EstimatedPerformanceSignal
from .ks import KS
from .mean_shift import MeanShift
from .missing import Missing
from .multivariate import Multivariate
from .outlier_rate import Outliers
from .prediction_drift import PredictionDrift
from .stuck import Stuck
from .unseen_category import UnseenCategory
from .variance import Variance

FEATURE_SIGNALS: tuple[type[Signal], ...] = (MeanShift, Variance, Outliers,
                                             EstimatedPerformanceSignal, PredictionDrift,
                                             Multivariate, Missing, Stuck, UnseenCategory,
                                             KS, Categorical)

__all__ = ["FEATURE_SIGNALS", "Checks", "Context", "FeatureBatch", "SequentialSignal",
           "Signal", "WindowedSignal", "feature_arrays", "prediction_array"]
