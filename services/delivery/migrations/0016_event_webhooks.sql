-- Event webhooks (services/delivery/event_webhooks.py, docs/webhooks.md): a user's endpoints, one row per
-- event to deliver to each endpoint (in order per campaign, each with its stable event id), and the log of
-- every POST.
CREATE TABLE webhook_endpoints (
    endpoint_id      bigserial PRIMARY KEY,
    owner_user_id    bigint      NOT NULL,
    url              text        NOT NULL,
    event_kinds      text[]      NOT NULL,
    description      text        NOT NULL DEFAULT '',
    -- The signing secret, sealed (AES-GCM under a key derived from the token secret).
    sealed_secret    bytea       NOT NULL,
    -- After a rotation, the previous secret signs deliveries too until previous_secret_expires_at.
    sealed_previous_secret     bytea,
    previous_secret_expires_at timestamptz,
    enabled          boolean     NOT NULL DEFAULT true,
    disabled_reason  text        NOT NULL DEFAULT '',
    disabled_at      timestamptz,
    -- Since when every attempt failed (NULL after a success): the endpoint is disabled once this is older
    -- than the retry horizon.
    failing_since    timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_owner ON webhook_endpoints (owner_user_id);

CREATE TABLE webhook_events (
    endpoint_id     bigint      NOT NULL REFERENCES webhook_endpoints ON DELETE CASCADE,
    -- The stable id (webhook-id header): derived from the JetStream message and the event's place in it.
    event_id        text        NOT NULL,
    -- Order of delivery within (endpoint, campaign): the events stream's sequence, then the place in the message.
    stream_sequence bigint      NOT NULL,
    position        integer     NOT NULL,
    campaign_id     bigint      NOT NULL,
    event_type      text        NOT NULL,
    body            bytea       NOT NULL,
    delivered       boolean     NOT NULL DEFAULT false,
    attempts        integer     NOT NULL DEFAULT 0,
    -- When the next attempt is due; while an attempt runs, pushed past its timeout (a claim).
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint_id, event_id)
);
-- The head of each (endpoint, campaign) queue: its oldest undelivered event.
CREATE INDEX webhook_events_undelivered ON webhook_events (endpoint_id, campaign_id, stream_sequence, position)
    WHERE NOT delivered;

CREATE TABLE webhook_attempts (
    attempt_id     bigserial   PRIMARY KEY,
    endpoint_id    bigint      NOT NULL REFERENCES webhook_endpoints ON DELETE CASCADE,
    event_id       text        NOT NULL,
    event_type     text        NOT NULL,
    campaign_id    bigint      NOT NULL,
    attempt_number integer     NOT NULL,
    attempted_at   timestamptz NOT NULL DEFAULT now(),
    status_code    integer     NOT NULL DEFAULT 0,
    error          text        NOT NULL DEFAULT '',
    latency_ms     integer     NOT NULL,
    delivered      boolean     NOT NULL
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, attempt_id DESC);
