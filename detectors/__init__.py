"""driftline detectors: pure drift statistics, one streaming core, the design's API.

No I/O, logging or metrics here: state in, numbers out. The names below load on first
use (PEP 562), so a command that needs only the settings or the streaming core does not
pay for scipy.stats and pandas, which the design's batch API (`detectors.api`) imports.
"""

from importlib import import_module
from typing import Any

_HOMES = {
    "AutomaticRetrainingOrchestrator": "api", "ConceptDriftDetector": "api",
    "DataDriftDetector": "api", "ModelPerformanceMonitor": "api", "RetrainingTrigger": "api",
    "format_decision_banner": "api",
    "Calibration": "calibration", "CalibrationCache": "calibration", "calibrate": "calibration",
    "DetectorConfig": "config",
    "ConfigError": "errors", "DetectorError": "errors", "EmptyReferenceError": "errors",
    "StateError": "errors",
    "Decision": "fusion", "DriftType": "fusion",
    "ModelMonitor": "monitor",
    "ReferenceProfile": "profile",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'detectors' has no attribute {name!r}")
    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
