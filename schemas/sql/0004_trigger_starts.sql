-- How many times the retrainer began handling a trigger (reading its data, training,
-- validating) without writing its outcome: a trigger whose handling kills the retrainer
-- itself (out of memory, a crash) is given up after `retrain.max_attempts` starts
-- instead of crash-looping on every restart. The row goes once the outcome is written.
CREATE TABLE retrain_trigger_starts (
    trigger_id VARCHAR(100) PRIMARY KEY,
    model_id VARCHAR(200),
    starts INTEGER NOT NULL,
    last_started_at TIMESTAMP NOT NULL
);
