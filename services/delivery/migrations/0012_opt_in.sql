-- Double opt-in confirmation emails (issue 14): each request audience made, by subscriber and request
-- time, so that a request delivered twice queues one message.
CREATE TABLE opt_in_requests (
    subscriber_id bigint      NOT NULL,
    request_time  timestamptz NOT NULL,
    run_id        bigint      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscriber_id, request_time)
);

-- A campaign's occurrence has each address once; a list's opt-in run (campaign_id 2^62 + list_id,
-- services/delivery/sending.py) sends an address one row per confirmation asked for (again after
-- an hour), so the rule leaves those runs out.
DROP INDEX recipients_campaign_address_key;
CREATE UNIQUE INDEX recipients_campaign_address_key ON recipients (campaign_id, occurrence, lower(email_address))
    WHERE campaign_id < 4611686018427387904;
