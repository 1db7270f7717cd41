-- A queue row changes status twice on its way out (Pending → Sending when a worker claims it, Sending → Sent
-- when the reply is recorded). While `status` was a column of an index (recipients_campaign_status_idx,
-- recipients_batch_idx) or of an index's predicate (recipients_deferred_due_idx), every such change was a
-- non-HOT update: a new entry in each of the table's indexes, three times per recipient counting the insert,
-- and indexes that grew with them. Without `status` in any index, and with room left on each page for a row's
-- next versions (fillfactor), PostgreSQL updates the row on its own page (a heap-only tuple) and writes no
-- index entry.
--
-- What the status index answered is kept by the counts of migration 0005 instead: the rows still Held (a
-- split test's standing) and the rows Dropped, so that a campaign's rows still open (Pending, Held or
-- Sending) are its total less those Sent, Failed, Deferred and Dropped, read from one row instead of the
-- index. Neither count changes when a worker claims a row, so claims still leave the counts row alone.
-- `unsent` says it once for every reader: completion, queueing's room, the queue-rows metric.
ALTER TABLE recipient_counts
    ADD COLUMN held    bigint NOT NULL DEFAULT 0,
    ADD COLUMN dropped bigint NOT NULL DEFAULT 0;
ALTER TABLE recipient_counts
    ADD COLUMN unsent  bigint GENERATED ALWAYS AS (total - sent - failed - deferred - dropped) STORED;

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
    -- As in migration 0009, with the Held and Dropped rows counted too.
    EXECUTE format($upsert$
        INSERT INTO recipient_counts AS c
            (campaign_id, owner_user_id, total, sent, failed, deferred, held, dropped, first_sent_at, last_sent_at)
        SELECT campaign_id,
               min(owner_user_id),
               sum(sign),
               coalesce(sum(sign) FILTER (WHERE status = 'Sent'), 0),
               coalesce(sum(sign) FILTER (WHERE status = 'Failed'), 0),
               coalesce(sum(sign) FILTER (WHERE status = 'Deferred'), 0),
               coalesce(sum(sign) FILTER (WHERE status = 'Held'), 0),
               coalesce(sum(sign) FILTER (WHERE status = 'Dropped'), 0),
               min(sent_at) FILTER (WHERE sign > 0 AND status = 'Sent'),
               max(sent_at) FILTER (WHERE sign > 0 AND status = 'Sent')
        FROM (%s) AS changed
        GROUP BY campaign_id
        HAVING sum(sign) <> 0
            OR coalesce(sum(sign) FILTER (WHERE status = 'Sent'), 0) <> 0
            OR coalesce(sum(sign) FILTER (WHERE status = 'Failed'), 0) <> 0
            OR coalesce(sum(sign) FILTER (WHERE status = 'Deferred'), 0) <> 0
            OR coalesce(sum(sign) FILTER (WHERE status = 'Held'), 0) <> 0
            OR coalesce(sum(sign) FILTER (WHERE status = 'Dropped'), 0) <> 0
        ORDER BY campaign_id
        ON CONFLICT (campaign_id) DO UPDATE SET
            total = c.total + excluded.total,
            sent = c.sent + excluded.sent,
            failed = c.failed + excluded.failed,
            deferred = c.deferred + excluded.deferred,
            held = c.held + excluded.held,
            dropped = c.dropped + excluded.dropped,
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
        (campaign_id, owner_user_id, total, sent, failed, deferred, held, dropped, first_sent_at, last_sent_at)
    SELECT campaign_id,
           min(owner_user_id),
           count(*),
           count(*) FILTER (WHERE status = 'Sent'),
           count(*) FILTER (WHERE status = 'Failed'),
           count(*) FILTER (WHERE status = 'Deferred'),
           count(*) FILTER (WHERE status = 'Held'),
           count(*) FILTER (WHERE status = 'Dropped'),
           min(sent_at) FILTER (WHERE status = 'Sent'),
           max(sent_at) FILTER (WHERE status = 'Sent')
    FROM recipients
    GROUP BY campaign_id;
END
$$;

SELECT recount_recipient_counts();

-- No index names `status` any more. Workers claim a batch's rows through (campaign, batch) and test the
-- status of its few rows; the sweeper finds overdue retries through next_attempt_at, which only Deferred
-- rows (and the retries claimed from them, until recorded) have set.
DROP INDEX recipients_campaign_status_idx;
DROP INDEX recipients_batch_idx;
CREATE INDEX recipients_batch_idx ON recipients (campaign_id, batch_id);
DROP INDEX recipients_deferred_due_idx;
CREATE INDEX recipients_deferred_due_idx ON recipients (next_attempt_at) WHERE next_attempt_at IS NOT NULL;

-- Room on each page for the versions a claim and an outcome write (a claim's versions grow the row, an
-- outcome's more, and a window's rows are updated in one statement, before the page can be pruned): inserts
-- fill a page to 30 %. Measured at a million recipients (docs/operations.md), 50 % left a fifth of the updates
-- non-HOT, 40 % a tenth, 30 % one in a hundred. Pages written before this migration keep their fill.
ALTER TABLE recipients SET (fillfactor = 30);
