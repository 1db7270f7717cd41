-- Deferred mail (issue 13): a recipient whose send was answered with a temporary failure (a 4xx reply,
-- or no connection to the relay) leaves its batch as 'Deferred' and is retried through JetStream on a
-- mail server's schedule (services/delivery/retries.py): `attempts` counts the sends tried so far,
-- `last_error` keeps the reply, `next_attempt_at` is when the next one is due, and `deferred_since`
-- when it was first deferred (it fails for good HERALD_DELIVERY_MAX_DEFER_HOURS later).
ALTER TABLE recipients DROP CONSTRAINT recipients_status_check;
ALTER TABLE recipients ADD CONSTRAINT recipients_status_check
    CHECK (status IN ('Pending', 'Held', 'Sending', 'Deferred', 'Sent', 'Failed', 'Dropped'));

ALTER TABLE recipients
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN deferred_since  timestamptz,
    ADD CONSTRAINT recipients_deferred_check
        CHECK (status <> 'Deferred' OR (next_attempt_at IS NOT NULL AND deferred_since IS NOT NULL));

-- The sweeper looks for Deferred rows whose retry is long overdue (a lost retry message); few rows
-- are Deferred at any time.
CREATE INDEX recipients_deferred_due_idx ON recipients (next_attempt_at) WHERE status = 'Deferred';

-- The counts of migration 0005 gain the Deferred rows (TotalDeferred).
ALTER TABLE recipient_counts ADD COLUMN deferred bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION count_recipient_changes() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    changed_rows text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT campaign_id, owner_user_id, status, sent_at, 1 AS sign FROM new_rows'
        WHEN 'DELETE' THEN 'SELECT campaign_id, owner_user_id, status, sent_at, -1 AS sign FROM old_rows'
        ELSE 'SELECT campaign_id, owner_user_id, status, sent_at, 1 AS sign FROM new_rows '
             'UNION ALL SELECT campaign_id, owner_user_id, status, sent_at, -1 AS sign FROM old_rows'
    END;
    left_sent bigint[];
BEGIN
    -- As in migration 0005, with the Deferred rows counted too.
    EXECUTE format($upsert$
        INSERT INTO recipient_counts AS c
            (campaign_id, owner_user_id, total, sent, failed, deferred, first_sent_at, last_sent_at)
        SELECT campaign_id,
               min(owner_user_id),
               sum(sign),
               coalesce(sum(sign) FILTER (WHERE status = 'Sent'), 0),
               coalesce(sum(sign) FILTER (WHERE status = 'Failed'), 0),
               coalesce(sum(sign) FILTER (WHERE status = 'Deferred'), 0),
               min(sent_at) FILTER (WHERE sign > 0 AND status = 'Sent'),
               max(sent_at) FILTER (WHERE sign > 0 AND status = 'Sent')
        FROM (%s) AS changed
        GROUP BY campaign_id
        HAVING sum(sign) <> 0
            OR coalesce(sum(sign) FILTER (WHERE status = 'Sent'), 0) <> 0
            OR coalesce(sum(sign) FILTER (WHERE status = 'Failed'), 0) <> 0
            OR coalesce(sum(sign) FILTER (WHERE status = 'Deferred'), 0) <> 0
        ORDER BY campaign_id
        ON CONFLICT (campaign_id) DO UPDATE SET
            total = c.total + excluded.total,
            sent = c.sent + excluded.sent,
            failed = c.failed + excluded.failed,
            deferred = c.deferred + excluded.deferred,
            first_sent_at = least(c.first_sent_at, excluded.first_sent_at),
            last_sent_at = greatest(c.last_sent_at, excluded.last_sent_at)
        $upsert$, changed_rows);

    IF TG_OP <> 'INSERT' THEN
        SELECT array_agg(DISTINCT campaign_id) INTO left_sent FROM old_rows WHERE status = 'Sent';
        IF left_sent IS NOT NULL THEN
            PERFORM FROM recipient_counts WHERE campaign_id = ANY(left_sent) ORDER BY campaign_id FOR UPDATE;
            UPDATE recipient_counts AS c
            SET (first_sent_at, last_sent_at) = (
                SELECT min(r.sent_at), max(r.sent_at)
                FROM recipients AS r
                WHERE r.campaign_id = c.campaign_id AND r.status = 'Sent')
            WHERE c.campaign_id = ANY(left_sent);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION recount_recipient_counts() RETURNS void
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    LOCK TABLE recipients IN SHARE MODE;
    DELETE FROM recipient_counts;
    INSERT INTO recipient_counts
        (campaign_id, owner_user_id, total, sent, failed, deferred, first_sent_at, last_sent_at)
    SELECT campaign_id,
           min(owner_user_id),
           count(*),
           count(*) FILTER (WHERE status = 'Sent'),
           count(*) FILTER (WHERE status = 'Failed'),
           count(*) FILTER (WHERE status = 'Deferred'),
           min(sent_at) FILTER (WHERE status = 'Sent'),
           max(sent_at) FILTER (WHERE status = 'Sent')
    FROM recipients
    GROUP BY campaign_id;
END
$$;
