-- Campaigns: one row per campaign, owned by exactly one user. Statuses and schedule types are stored
-- under their legacy names. Schedule details, targeting, A/B variations and auto-resend settings
-- arrive in later migrations.
CREATE TABLE campaigns (
    campaign_id          bigserial   PRIMARY KEY,
    owner_user_id        bigint      NOT NULL,
    name                 text        NOT NULL,
    status               text        NOT NULL DEFAULT 'Draft',
    -- Why the campaign is in its status (e.g. the cause of Failed); empty when there is nothing to say.
    status_reason        text        NOT NULL DEFAULT '',
    -- The email content sent; NULL until one is chosen.
    email_id             bigint,
    schedule_type        text        NOT NULL DEFAULT 'Not Scheduled',
    -- Set on an auto-resend: the campaign it resends. Deleting the original deletes its resends.
    original_campaign_id bigint      REFERENCES campaigns (campaign_id) ON DELETE CASCADE,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    send_started_at      timestamptz,

    -- Admins (user id 0) act on users' campaigns but never own one.
    CONSTRAINT campaigns_owner_check CHECK (owner_user_id > 0),
    CONSTRAINT campaigns_name_check CHECK (char_length(name) BETWEEN 1 AND 255),
    CONSTRAINT campaigns_status_check CHECK (
        status IN ('Draft', 'Ready', 'Sending', 'Paused', 'Pending Approval', 'Sent', 'Failed', 'Cancelled')
    ),
    CONSTRAINT campaigns_schedule_type_check CHECK (
        schedule_type IN ('Not Scheduled', 'Immediate', 'Future', 'Recursive')
    ),
    CONSTRAINT campaigns_email_check CHECK (email_id > 0),
    CONSTRAINT campaigns_not_own_original_check CHECK (original_campaign_id <> campaign_id)
);

-- Every query is scoped to one owner; listings page through an owner's campaigns by id.
CREATE INDEX campaigns_owner_idx ON campaigns (owner_user_id, campaign_id);
-- Finds an original's auto-resends when it is deleted (the cascade and DeleteCampaigns' recursion).
CREATE INDEX campaigns_original_idx ON campaigns (original_campaign_id) WHERE original_campaign_id IS NOT NULL;
-- No index for name search: a substring ILIKE needs pg_trgm, which is not available everywhere.
