-- The delivery pipeline (services/delivery/queue.py and worker.py): the state of each campaign's run,
-- its content snapshot, and what a queue row needs to be rendered and tracked.
ALTER TABLE campaign_runs
    -- The campaign's status as the campaign service last announced it (campaign.status_changed); workers
    -- send only while it is 'Sending'.
    ADD COLUMN state                 text        NOT NULL DEFAULT 'Sending',
    -- The content sent, fixed when the occurrence was queued: {"emails": {"<email_id>": {...}}, ...}.
    -- NULL while the run is only a placeholder for a status seen before its send request.
    ADD COLUMN content               jsonb,
    -- The occurrence queued last (a Recursive campaign queues one per occurrence); 0 for a placeholder.
    ADD COLUMN occurrence            integer     NOT NULL DEFAULT 0,
    ADD COLUMN occurrence_started_at timestamptz,
    -- The last generation published: every publication of batches (queueing, resume, retry) takes a new
    -- one, so that its messages' Nats-Msg-Ids are new.
    ADD COLUMN generation            integer     NOT NULL DEFAULT 0,
    -- Batch ids handed out so far; ids are unique within the campaign across occurrences and retries.
    ADD COLUMN batches               integer     NOT NULL DEFAULT 0,
    ADD COLUMN reason                text        NOT NULL DEFAULT '',
    ADD CONSTRAINT campaign_runs_counters_check CHECK (occurrence >= 0 AND generation >= 0 AND batches >= 0);

ALTER TABLE recipients
    ADD COLUMN occurrence    integer NOT NULL DEFAULT 1,
    -- The list the recipient came from and their custom fields, for the unsubscribe link and personalization.
    ADD COLUMN list_id       bigint  NOT NULL DEFAULT 0,
    ADD COLUMN custom_fields jsonb;

-- Each occurrence sends to every address once; a later occurrence may send to it again.
DROP INDEX recipients_campaign_address_key;
CREATE UNIQUE INDEX recipients_campaign_address_key ON recipients (campaign_id, occurrence, lower(email_address));
-- Workers claim the rows of one batch by status; the older index leads with generation.
DROP INDEX recipients_batch_idx;
CREATE INDEX recipients_batch_idx ON recipients (campaign_id, batch_id, status);
