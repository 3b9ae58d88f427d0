"""driftline's retrain consumer: from a trigger to a validated, promoted model.

Pure decisions (`policy`, `preparation`, `validation`, `outcome`) are kept apart from
the I/O around them (`consumer` for Kafka, `repository` for PostgreSQL, `model_store`,
`metrics`, `training_process`). The design's batch API is `RetrainingExecutor`.
"""

from retrain.executor import RetrainingExecutor

__all__ = ["RetrainingExecutor"]
