-- Transactional outbox: rows written in the same transaction as the state change they announce,
-- published to JetStream by the relay (services/common/outbox.py) and deleted once acknowledged.
-- `traceparent`: the W3C trace context of the span that wrote the row (NULL when tracing is off), published
-- as the message's traceparent header (services/common/tracing.py). Schemas made before it have it from
-- each service's own migration (`ADD COLUMN IF NOT EXISTS`).
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    subject     text        NOT NULL,
    msg_id      text        NOT NULL UNIQUE,
    payload     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    attempts    int         NOT NULL DEFAULT 0,
    last_error  text,
    traceparent text
);
