"""driftline detectors: pure drift statistics, one streaming core, the design's API.

No I/O, logging or metrics here: state in, numbers out.
"""

from .api import (AutomaticRetrainingOrchestrator, ConceptDriftDetector, DataDriftDetector,
                  ModelPerformanceMonitor, RetrainingTrigger, format_decision_banner)
from .calibration import Calibration, CalibrationCache, calibrate
from .config import DetectorConfig
from .errors import ConfigError, DetectorError, EmptyReferenceError, StateError
from .fusion import Decision, DriftType
from .monitor import ModelMonitor
from .profile import ReferenceProfile

__all__ = ["AutomaticRetrainingOrchestrator", "Calibration", "CalibrationCache",
           "ConceptDriftDetector", "ConfigError", "DataDriftDetector", "Decision",
           "DetectorConfig", "DetectorError", "DriftType", "EmptyReferenceError",
           "ModelMonitor", "ModelPerformanceMonitor", "ReferenceProfile",
           "RetrainingTrigger", "StateError", "calibrate", "format_decision_banner"]
