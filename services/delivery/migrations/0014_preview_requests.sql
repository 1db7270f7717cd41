-- Email previews (EmailService.SendEmailPreview): each request by its id, so that a request delivered
-- twice queues one message.
CREATE TABLE preview_requests (
    request_id text        PRIMARY KEY,
    run_id     bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
