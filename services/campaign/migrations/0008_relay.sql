-- The SMTP relay a campaign is sent through, by its name in the delivery workers' SMTP_URL ('': the From
-- domain's route, or any relay; docs/operations.md, "Several relays").
ALTER TABLE campaigns ADD COLUMN relay text NOT NULL DEFAULT '';
