-- Issue 14: where a stored import's status is POSTed when it finishes (ImportStatusUpdateWebhookURL); '' for nowhere.
ALTER TABLE imports
    ADD COLUMN status_webhook_url text NOT NULL DEFAULT '';
