-- What became of each trigger as a column of its own: promoted, rejected, failed,
-- skipped, or rolled_back (a promotion_regression trigger that put the previous
-- champion back). Until now only execution_metrics->>'outcome' said it.
ALTER TABLE model_retraining_events
    ADD COLUMN execution_status VARCHAR(20);

UPDATE model_retraining_events SET execution_status = execution_metrics->>'outcome';

CREATE INDEX idx_retraining_model_execution_status
    ON model_retraining_events(model_id, execution_status);
