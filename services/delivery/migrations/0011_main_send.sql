-- The main send's figures (issue 13): a campaign is Sent once nothing is Pending, while its deferred
-- recipients are still retried. CampaignThroughput covers the main send, not that tail: when an
-- occurrence finishes, the messages Sent so far and the last of their send times are kept here, and
-- statistics measure the throughput with them until the run sends again (a resume, a retryfailed).
ALTER TABLE campaign_runs
    ADD COLUMN main_sent         bigint,
    ADD COLUMN main_last_sent_at timestamptz;
