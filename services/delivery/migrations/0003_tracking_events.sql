-- Tracking events as the public endpoints report them: unsubscribes join opens and clicks, and each
-- event may carry the reporter's key for that hit, so that a report sent again (after a timeout,
-- say) is recorded once.
ALTER TABLE events DROP CONSTRAINT events_kind_check;
ALTER TABLE events ADD CONSTRAINT events_kind_check CHECK (kind IN ('open', 'click', 'unsubscribe'));
ALTER TABLE events ADD COLUMN event_key text;

CREATE UNIQUE INDEX events_event_key_key ON events (campaign_id, event_key) WHERE event_key IS NOT NULL;
-- A recipient unsubscribes through a campaign once, however often they follow its link.
CREATE UNIQUE INDEX events_unsubscribe_key ON events (campaign_id, recipient_id) WHERE kind = 'unsubscribe';
