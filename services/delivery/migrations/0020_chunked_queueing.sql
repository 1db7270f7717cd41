-- Queueing in chunks (services/delivery/queue.py): while an occurrence is still being queued, queueing_after is
-- the highest subscriber id whose chunk was committed (0 before the first) and queueing_rows how many rows the
-- occurrence has queued so far; both are reset when the last chunk is in. A redelivered send request resumes the
-- stream after queueing_after, and completion waits while it is set.
ALTER TABLE campaign_runs ADD COLUMN queueing_after bigint;
ALTER TABLE campaign_runs ADD COLUMN queueing_rows bigint NOT NULL DEFAULT 0;
