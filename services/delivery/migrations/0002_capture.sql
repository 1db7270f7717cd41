-- What the local capture SMTP server (`herald serve mail-capture`, started by `herald run` when
-- SMTP_URL is unset) received: every message exactly as it arrived, with its SMTP envelope, so that
-- a developer can read at /mail what a campaign sent and tests can check who got what.
CREATE TABLE captured_messages (
    captured_message_id bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- One id per SMTP connection: messages that share it came over one session.
    session_id          uuid        NOT NULL,
    -- The client's address and the name it gave in EHLO/HELO.
    peer                text        NOT NULL DEFAULT '',
    helo_name           text        NOT NULL DEFAULT '',
    envelope_from       text        NOT NULL,
    envelope_to         text[]      NOT NULL CHECK (cardinality(envelope_to) > 0),
    -- Decoded from the headers when the message arrived, so the listing never parses messages.
    subject             text        NOT NULL DEFAULT '',
    message_id          text        NOT NULL DEFAULT '',
    -- The RFC 5322 message as received (after SMTP dot-unstuffing).
    raw                 bytea       NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now()
);

