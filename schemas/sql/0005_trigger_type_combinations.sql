-- A trigger of several types (data drift and concept drift at once) records them all:
-- trigger_type is the combination joined by '+' in the design's order
-- (data_drift+concept_drift), drift_type the same joined by ','. Four types joined are
-- 57 characters, over the design's VARCHAR(50).
ALTER TABLE model_retraining_events
    ALTER COLUMN trigger_type TYPE VARCHAR(200),
    ALTER COLUMN drift_type TYPE VARCHAR(200);
