-- Fed batches (services/delivery/feeder.py): a queued occurrence does not publish its batch messages when its
-- rows commit; the feeder publishes them, a few at a time and in turn with the other Sending campaigns,
-- and published_batches is the highest batch id it has published. NULL: every batch is published as it is queued
-- (an occurrence queued before this migration).
ALTER TABLE campaign_runs ADD COLUMN published_batches integer;
-- The trace the fed batch messages continue: that of the send request which queued the occurrence.
ALTER TABLE campaign_runs ADD COLUMN published_traceparent text;
-- The feeder asks for the runs with batches to publish several times a second.
CREATE INDEX campaign_runs_unpublished_idx ON campaign_runs (campaign_id) WHERE published_batches < batches;
