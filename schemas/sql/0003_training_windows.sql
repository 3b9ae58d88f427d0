-- The rows a retrain trained and validated on, per trigger: row counts (history, labelled,
-- old-concept), the labelled topic's offsets per partition, the event-time range and the
-- change point that split old from new (retrain/preparation.py describe_window).
-- NULL when nothing was trained (skipped triggers).
ALTER TABLE model_retraining_events
    ADD COLUMN training_window JSONB,
    ADD COLUMN holdout_window JSONB;
