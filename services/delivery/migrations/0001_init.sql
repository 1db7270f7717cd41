-- The send queue and what happened to it. Campaign, subscriber and email ids point into other
-- services' data, so they carry no foreign keys. Every table carries the campaign's owner so that
-- every query is scoped to the caller without asking the campaign service.

-- One row per campaign that was queued: TotalRecipients is fixed when the queue is written, so
-- later list changes never move it.
CREATE TABLE campaign_runs (
    campaign_id      bigint      PRIMARY KEY,
    owner_user_id    bigint      NOT NULL CHECK (owner_user_id > 0),
    total_recipients bigint      NOT NULL DEFAULT 0 CHECK (total_recipients >= 0),
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);

CREATE INDEX campaign_runs_owner_idx ON campaign_runs (owner_user_id, campaign_id);

-- One row per recipient of a campaign: the queue itself. Workers claim Pending rows of a batch,
-- send, and record the outcome on the row.
CREATE TABLE recipients (
    campaign_id   bigint      NOT NULL,
    recipient_id  bigint      GENERATED ALWAYS AS IDENTITY,
    owner_user_id bigint      NOT NULL CHECK (owner_user_id > 0),
    -- 1 for the first send; admin.campaign.retryfailed requeues Failed rows under a new generation.
    generation    integer     NOT NULL DEFAULT 1 CHECK (generation >= 1),
    -- The batch (within the generation) the row is sent in; NULL until batches are cut.
    batch_id      integer,
    subscriber_id bigint      NOT NULL,
    email_address text        NOT NULL CHECK (email_address <> ''),
    -- Lower-cased part after the @, stored so per-domain statistics group on a plain column.
    domain        text        NOT NULL,
    first_name    text        NOT NULL DEFAULT '',
    last_name     text        NOT NULL DEFAULT '',
    -- The A/B variation's email; NULL when the campaign has no A/B test (its own email is sent).
    email_id      bigint,
    status        text        NOT NULL DEFAULT 'Pending'
        CONSTRAINT recipients_status_check CHECK (status IN ('Pending', 'Sending', 'Sent', 'Failed', 'Dropped')),
    attempts      integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- The last SMTP reply or connection error; '' when there was none.
    last_error    text        NOT NULL DEFAULT '',
    -- Which worker claimed the row and when (Sending); a claim older than the batch timeout is stale.
    claimed_at    timestamptz,
    claimed_by    text,
    queued_at     timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz,
    failed_at     timestamptz,
    -- The Message-ID header of the message sent, so a resend after a crash can be recognised.
    message_id    text,
    PRIMARY KEY (campaign_id, recipient_id),
    CONSTRAINT recipients_sent_at_check CHECK (status <> 'Sent' OR sent_at IS NOT NULL)
);

-- Nobody is queued twice for one campaign, whatever the case of their address.
CREATE UNIQUE INDEX recipients_campaign_address_key ON recipients (campaign_id, lower(email_address));
-- Statistics count by status; workers and completion checks look for Pending rows.
CREATE INDEX recipients_campaign_status_idx ON recipients (campaign_id, status);
-- Workers claim the rows of one batch of one generation.
CREATE INDEX recipients_batch_idx ON recipients (campaign_id, generation, batch_id);
-- Per-domain and per-variation statistics group on these.
CREATE INDEX recipients_campaign_domain_idx ON recipients (campaign_id, domain);
CREATE INDEX recipients_campaign_variation_idx ON recipients (campaign_id, email_id) WHERE email_id IS NOT NULL;

-- Opens and clicks recorded by the tracking endpoints (one row per hit; unique figures count
-- distinct recipients).
CREATE TABLE events (
    event_id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id   bigint      NOT NULL,
    recipient_id  bigint      NOT NULL,
    owner_user_id bigint      NOT NULL CHECK (owner_user_id > 0),
    kind          text        NOT NULL CONSTRAINT events_kind_check CHECK (kind IN ('open', 'click')),
    -- The clicked link; '' for an open.
    url           text        NOT NULL DEFAULT '',
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (campaign_id, recipient_id) REFERENCES recipients (campaign_id, recipient_id) ON DELETE CASCADE
);

-- Campaign totals and distinct-recipient counts per kind read this index only.
CREATE INDEX events_campaign_kind_idx ON events (campaign_id, kind, recipient_id);
