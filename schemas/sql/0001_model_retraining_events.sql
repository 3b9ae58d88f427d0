-- The design document's table and its four indexes, unchanged.
CREATE TABLE model_retraining_events (
    id SERIAL PRIMARY KEY,
    trigger_type VARCHAR(50),           -- data_drift, concept_drift, etc.
    severity VARCHAR(20),               -- LOW, MEDIUM, HIGH, CRITICAL
    drift_type VARCHAR(50),
    trigger_reason TEXT,
    trigger_metrics JSONB,              -- Raw metrics
    execution_attempted BOOLEAN,
    execution_successful BOOLEAN,
    execution_metrics JSONB,            -- Execution details
    retraining_model_version VARCHAR(50),
    retraining_r2 FLOAT,
    retraining_rmse FLOAT,
    retraining_accuracy FLOAT,
    comparison_previous_r2 FLOAT,
    improvement_r2_percent FLOAT,
    triggered_at TIMESTAMP,
    execution_completed_at TIMESTAMP
);

CREATE INDEX idx_retraining_severity ON model_retraining_events(severity);
CREATE INDEX idx_retraining_trigger_type ON model_retraining_events(trigger_type);
CREATE INDEX idx_retraining_triggered_at ON model_retraining_events(triggered_at DESC);
CREATE INDEX idx_retraining_execution_successful ON model_retraining_events(execution_successful);
