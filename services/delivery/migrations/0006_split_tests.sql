-- Split tests (splittest.create): an A/B campaign with a split test first sends its variations to a
-- test group of TestSize % of its recipients; the others wait as 'Held' rows (no variation, no batch)
-- until, TestDuration hours later, the split-test decider (services/delivery/split_tests.py) picks
-- the winner and makes them Pending with the winner's email. The counts of migration 0005 need no
-- change: `total` counts rows whatever their status, Held ones included, and Held is neither Sent nor
-- Failed.
ALTER TABLE recipients DROP CONSTRAINT recipients_status_check;
ALTER TABLE recipients ADD CONSTRAINT recipients_status_check
    CHECK (status IN ('Pending', 'Held', 'Sending', 'Sent', 'Failed', 'Dropped'));

ALTER TABLE campaign_runs
    -- The occurrence's split test, NULL when it has none (or it sends to everybody at once):
    -- {"test_size_percent", "test_duration_hours", "winner": "highest_open_rate" | "most_unique_clicks",
    --  "test_recipients", "email_ids": [the variations' emails, in the campaign's order, for ties]}.
    ADD COLUMN split_test        jsonb,
    -- When the test group was queued (its batches published then, unless the campaign was paused); the
    -- winner is due TestDuration hours later, and waits while the campaign is not Sending.
    ADD COLUMN test_started_at   timestamptz,
    -- The winning variation's email and when it was chosen; NULL until then.
    ADD COLUMN winner_email_id   bigint,
    ADD COLUMN winner_decided_at timestamptz;

-- The decider looks for undecided split tests only.
CREATE INDEX campaign_runs_split_test_due_idx ON campaign_runs (test_started_at)
    WHERE split_test IS NOT NULL AND winner_decided_at IS NULL;
