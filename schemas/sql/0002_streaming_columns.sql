-- Columns the design document's own queries read but its DDL lacks, and what the
-- streaming design needs: which model and version a row is about, and the trigger's
-- deterministic id, unique so that a redelivered trigger is never logged twice.
ALTER TABLE model_retraining_events
    ADD COLUMN improvement_rmse_percent FLOAT,
    ADD COLUMN improvement_accuracy_percent FLOAT,
    ADD COLUMN model_id VARCHAR(200),
    ADD COLUMN model_version VARCHAR(50),
    ADD COLUMN trigger_id VARCHAR(100);

ALTER TABLE model_retraining_events
    ADD CONSTRAINT uq_retraining_trigger_id UNIQUE (trigger_id);

CREATE INDEX idx_retraining_model_triggered_at
    ON model_retraining_events(model_id, triggered_at DESC);
