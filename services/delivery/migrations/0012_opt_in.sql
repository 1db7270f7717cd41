-- Double opt-in confirmation emails (issue 14): each request audience made, by subscriber and request
-- time, so that a request delivered twice queues one message.
CREATE TABLE opt_in_requests (
    subscriber_id bigint      NOT NULL,
    request_time  timestamptz NOT NULL,
    run_id        bigint      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscriber_id, request_time)
);
