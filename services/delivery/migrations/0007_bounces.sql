-- Bounces and complaints (docs/bounces.md): the SMTP reply that refused a recipient at send time and every
-- report received later (DSNs, plain-text bounces, ARF complaints, provider webhooks), each classified once
-- by services/common/bounces.py. Statistics count distinct recipients per kind; the per-recipient log
-- (ListQueuedRecipients) lists a recipient's rows oldest first.
CREATE TABLE bounces (
    bounce_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id   bigint      NOT NULL,
    recipient_id  bigint      NOT NULL,
    owner_user_id bigint      NOT NULL CHECK (owner_user_id > 0),
    kind          text        NOT NULL CONSTRAINT bounces_kind_check
        CHECK (kind IN ('hard', 'soft', 'policy', 'complaint')),
    source        text        NOT NULL CONSTRAINT bounces_source_check
        CHECK (source IN ('smtp_reply', 'dsn', 'plain_text', 'arf', 'ses', 'sendgrid', 'postmark')),
    -- The enhanced status code (RFC 3463) and the basic reply code, as reported or as read from the
    -- diagnostic text; '' and 0 when there were none.
    status_code   text        NOT NULL DEFAULT '',
    reply_code    integer     NOT NULL DEFAULT 0,
    diagnostic    text        NOT NULL DEFAULT '',
    -- The reporter's id of the report (a send-time reply's is smtp:<campaign>:<recipient>:<generation>):
    -- the same report arriving twice is recorded once.
    event_key     text        NOT NULL CHECK (event_key <> ''),
    occurred_at   timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (campaign_id, recipient_id) REFERENCES recipients (campaign_id, recipient_id) ON DELETE CASCADE
);

CREATE UNIQUE INDEX bounces_event_key_key ON bounces (event_key);
-- Statistics count distinct recipients per kind of each campaign from this index only.
CREATE INDEX bounces_campaign_kind_idx ON bounces (campaign_id, kind, recipient_id);
-- A recipient's log, oldest first.
CREATE INDEX bounces_recipient_idx ON bounces (campaign_id, recipient_id, occurred_at);

-- The row's address had bounced (hard or soft) before it was sent: audience said so when the occurrence
-- was queued, or a bounce was recorded for the row while it was not Sent (a Failed row, which
-- admin.campaign.retryfailed may send again). When such a row is Sent, delivery announces it (RecipientDeliveredEvent) and audience clears
-- the bounce state. A constant default: adding it rewrites nothing.
ALTER TABLE recipients ADD COLUMN bounced_before boolean NOT NULL DEFAULT false;
