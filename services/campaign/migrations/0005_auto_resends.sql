-- Auto-resends (services/campaign/sending_events.py): when a campaign with AutoResendEnabled finishes
-- sending, the campaign service creates one campaign that resends it to its non-openers. original_campaign_id
-- is the legacy OriginalCampaignID, which a client may also set by hand; this column marks the resend Herald
-- made, and its UNIQUE constraint makes sure there is at most one per campaign, however often delivery's
-- report is handled and by however many replicas. Deleting the original deletes its resend.
ALTER TABLE campaigns
    ADD COLUMN auto_resend_of bigint REFERENCES campaigns (campaign_id) ON DELETE CASCADE,
    ADD CONSTRAINT campaigns_auto_resend_of_key UNIQUE (auto_resend_of),
    ADD CONSTRAINT campaigns_not_own_auto_resend_check CHECK (auto_resend_of <> campaign_id);
