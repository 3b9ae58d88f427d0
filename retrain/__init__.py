"""driftline's retrain consumer: from a trigger to a validated, promoted model.

Pure decisions (`policy`, `preparation`, `validation`, `outcome`) are kept apart from
the I/O around them (`consumer` for Kafka, `repository` for PostgreSQL, `model_store`,
`metrics`, `training_process`). The design's batch API is `RetrainingExecutor`.
"""

from typing import Any

__all__ = ["RetrainingExecutor"]


def __getattr__(name: str) -> Any:
    # Loaded on first use (PEP 562): the retrainer's modules need not import the batch
    # pipeline and, through it, the design's detectors API with scipy.stats and pandas.
    if name == "RetrainingExecutor":
        from retrain.executor import RetrainingExecutor

        return RetrainingExecutor
    raise AttributeError(f"module 'retrain' has no attribute {name!r}")
