-- Everything campaign.update stores beyond the basics: schedule details, targeting, auto-resend,
-- approval and tracking settings, A/B variations and the split test.
ALTER TABLE campaigns
    -- The instant the campaign is due: the Future send time, the next Recursive occurrence, or when an
    -- Immediate campaign was armed; NULL when not scheduled. The picker finds due campaigns by it.
    ADD COLUMN scheduled_at              timestamptz,
    -- The IANA zone the user scheduled in (Future or Recursive); '' means UTC.
    ADD COLUMN schedule_time_zone        text        NOT NULL DEFAULT '',
    -- The Recursive rule: {"days_of_week", "days_of_month", "months", "hours", "minutes", "max_instances"}.
    -- Read and written whole, never queried into, so one jsonb value rather than six array columns.
    ADD COLUMN recurrence                jsonb,
    -- [{"list_id": N, "segment_id": N}, ...]; segment 0 is the whole list.
    ADD COLUMN recipients_included       jsonb       NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN recipients_excluded       jsonb       NOT NULL DEFAULT '[]'::jsonb,
    -- The legacy RulesJsonBundle ({"operator", "criteria": [...]}); NULL when there are no rules.
    ADD COLUMN rules_bundle              jsonb,
    ADD COLUMN auto_resend_enabled       boolean     NOT NULL DEFAULT false,
    ADD COLUMN auto_resend_wait_days     integer     NOT NULL DEFAULT 0,
    ADD COLUMN auto_resend_subject       text        NOT NULL DEFAULT '',
    ADD COLUMN auto_resend_preheader     text        NOT NULL DEFAULT '',
    ADD COLUMN approval_user_explanation text        NOT NULL DEFAULT '',
    ADD COLUMN google_analytics_domains  text        NOT NULL DEFAULT '',
    ADD COLUMN publish_on_rss            boolean     NOT NULL DEFAULT false,
    ADD COLUMN s2s_enabled               boolean     NOT NULL DEFAULT false,
    -- Set by delivery when the last recipient was handled.
    ADD COLUMN send_finished_at          timestamptz,
    ADD CONSTRAINT campaigns_future_scheduled_check CHECK (schedule_type <> 'Future' OR scheduled_at IS NOT NULL),
    ADD CONSTRAINT campaigns_recursive_rule_check CHECK ((schedule_type = 'Recursive') = (recurrence IS NOT NULL)),
    ADD CONSTRAINT campaigns_auto_resend_wait_check CHECK (auto_resend_wait_days BETWEEN 0 AND 365);

-- The picker's query: Ready campaigns whose due instant has come, oldest first.
CREATE INDEX campaigns_due_idx ON campaigns (scheduled_at) WHERE status = 'Ready' AND scheduled_at IS NOT NULL;
-- campaigns.get's date range and SendDate ordering use the send date: when sent, else when due.
CREATE INDEX campaigns_owner_send_date_idx ON campaigns (owner_user_id, (coalesce(send_started_at, scheduled_at)));

-- A/B variations: the emails a campaign's recipients are split across, by relative weight.
CREATE TABLE campaign_variations (
    campaign_id bigint   NOT NULL REFERENCES campaigns (campaign_id) ON DELETE CASCADE,
    -- The order the user gave them in, from 0.
    position    smallint NOT NULL,
    email_id    bigint   NOT NULL,
    weight      integer  NOT NULL,
    PRIMARY KEY (campaign_id, position),
    CONSTRAINT campaign_variations_position_check CHECK (position BETWEEN 0 AND 4),
    CONSTRAINT campaign_variations_email_check CHECK (email_id > 0),
    CONSTRAINT campaign_variations_weight_check CHECK (weight > 0)
);

-- At most one split test per campaign; a second CreateSplitTest replaces the settings and keeps the id.
CREATE TABLE campaign_split_tests (
    split_test_id       bigserial   PRIMARY KEY,
    campaign_id         bigint      NOT NULL UNIQUE REFERENCES campaigns (campaign_id) ON DELETE CASCADE,
    test_size_percent   integer     NOT NULL,
    test_duration_hours integer     NOT NULL,
    winner              text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaign_split_tests_size_check CHECK (test_size_percent BETWEEN 1 AND 99),
    CONSTRAINT campaign_split_tests_duration_check CHECK (test_duration_hours BETWEEN 1 AND 720),
    CONSTRAINT campaign_split_tests_winner_check CHECK (winner IN ('Highest Open Rate', 'Most Unique Clicks'))
);
