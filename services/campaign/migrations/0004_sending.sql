-- What the picker and the campaign_finished consumer keep about sending (services/campaign/picker.py,
-- services/campaign/sending_events.py).
ALTER TABLE campaigns
    -- Send requests issued so far: the n of each request's Nats-Msg-Id "campaign.send_requested:<id>:<n>".
    ADD COLUMN send_requests        integer NOT NULL DEFAULT 0,
    -- Occurrences started: 1 for a one-off campaign once it started; a Recursive campaign counts each
    -- occurrence, up to its max_instances.
    ADD COLUMN occurrences_started  integer NOT NULL DEFAULT 0,
    -- True from an occurrence's start until delivery reports it finished: a campaign picked again while
    -- it is true (Paused, resumed) continues that occurrence rather than starting a new one.
    ADD COLUMN occurrence_open      boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT campaigns_send_requests_check CHECK (send_requests >= 0 AND occurrences_started >= 0);
