-- What the mail world reports back (docs/bounces.md, "Subscribers and suppression"): why an address
-- is suppressed, a subscriber's run of soft bounces, and how a subscriber was unsubscribed.

-- 'manual': the user's (AddSuppressions, imports, unsubscriptions that asked for it), every entry
-- made before this migration included; 'bounce': a hard bounce, which a later delivery removes;
-- 'complaint': a spam complaint. Only 'bounce' entries are ever removed automatically.
ALTER TABLE suppressions
    ADD COLUMN reason      text   NOT NULL DEFAULT 'manual' CHECK (reason IN ('manual', 'bounce', 'complaint')),
    -- The campaign whose bounce or complaint suppressed the address; 0 for a manual entry.
    ADD COLUMN campaign_id bigint NOT NULL DEFAULT 0;

COMMENT ON COLUMN suppressions.created_at IS 'When the address was suppressed for its current reason';

-- The campaigns whose mail to the subscriber soft-bounced since its last delivery, each once:
-- HERALD_SOFT_BOUNCE_LIMIT of them make the subscriber Hard. Emptied by a delivery and by Hard.
ALTER TABLE subscribers
    ADD COLUMN soft_bounce_campaign_ids bigint[] NOT NULL DEFAULT '{}',
    -- 'complaint' when a spam complaint unsubscribed the subscriber; '' otherwise.
    ADD COLUMN unsubscription_channel   text     NOT NULL DEFAULT '' CHECK (unsubscription_channel IN ('', 'complaint'));

-- Bounce events name an address, not always a list: the owner's subscribers with that address.
CREATE INDEX subscribers_owner_email ON subscribers (owner_user_id, email_key);
