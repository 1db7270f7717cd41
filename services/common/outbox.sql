-- Transactional outbox: rows written in the same transaction as the state change they announce,
-- published to JetStream by the relay (services/common/outbox.py) and deleted once acknowledged.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    subject     text        NOT NULL,
    msg_id      text        NOT NULL UNIQUE,
    payload     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    attempts    int         NOT NULL DEFAULT 0,
    last_error  text
);
