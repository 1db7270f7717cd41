-- Double opt-in (issue 14): when the last confirmation email was asked for (at most one an hour per
-- pending subscriber), and the address the confirm link was opened from.
ALTER TABLE subscribers
    ADD COLUMN opt_in_requested_at timestamptz,
    ADD COLUMN optin_ip            text NOT NULL DEFAULT '';
