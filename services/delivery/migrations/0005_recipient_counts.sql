-- What the queue rows of each campaign add up to (rows, Sent, Failed, first and last send), kept by
-- PostgreSQL itself so that statistics read one row per campaign instead of scanning its queue: a
-- client polling campaign.get during a large send would otherwise scan every row of it on each poll.
--
-- Statement-level triggers with transition tables keep the counts: whatever statement writes queue
-- rows (queueing, claims, worker outcomes, retryfailed, cancel, stale-claim resolution, a DELETE by
-- hand), the counts change with it, in its transaction, with one upsert per statement (not per row).
-- The upsert locks the campaign's counts row until the writing transaction ends; every writer of
-- queue rows keeps its transactions short, and a deadlock (two handlings of one batch at once) is
-- detected and retried by the worker like any other failed statement.
CREATE TABLE recipient_counts (
    campaign_id   bigint      PRIMARY KEY,
    owner_user_id bigint      NOT NULL,
    -- Queue rows, whatever their status.
    total         bigint      NOT NULL DEFAULT 0,
    sent          bigint      NOT NULL DEFAULT 0,
    failed        bigint      NOT NULL DEFAULT 0,
    -- The earliest and latest sent_at of the Sent rows; NULL while none is Sent.
    first_sent_at timestamptz,
    last_sent_at  timestamptz
);

-- Adds a statement's changes to the counts of the campaigns it touched.
--
-- The statement's rows are counted with a sign: +1 as they are now (inserted, or after the update),
-- -1 as they were (deleted, or before the update). A data-modifying WITH that updates queue rows
-- several times (a worker's record-and-claim) fires the trigger once, with all of its rows.
--
-- Counts add up; first/last send only widen (least/greatest), which is right while a Sent row never
-- changes again: no code path updates a Sent row (claims take Pending rows, outcomes Sending or
-- ambiguous Failed ones, retryfailed requeues Failed rows only, a cancel drops Pending rows). Should
-- a Sent row still be updated or deleted, its campaign's first/last send is recomputed from the
-- table instead, by a statement that runs after the counts row is locked, so that in READ COMMITTED
-- it sees every transaction that changed the counts before this one.
--
-- The function keeps the search_path it was created with (this schema): the send pipeline's
-- connections use the default one.
CREATE FUNCTION count_recipient_changes() RETURNS trigger
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
    -- The transition tables each trigger declares differ by event, so the source is chosen here and
    -- the one upsert is written once. Campaigns are locked in id order, so that two statements
    -- touching several campaigns never deadlock on their counts.
    EXECUTE format($upsert$
        INSERT INTO recipient_counts AS c
            (campaign_id, owner_user_id, total, sent, failed, first_sent_at, last_sent_at)
        SELECT campaign_id,
               min(owner_user_id),
               sum(sign),
               coalesce(sum(sign) FILTER (WHERE status = 'Sent'), 0),
               coalesce(sum(sign) FILTER (WHERE status = 'Failed'), 0),
               min(sent_at) FILTER (WHERE sign > 0 AND status = 'Sent'),
               max(sent_at) FILTER (WHERE sign > 0 AND status = 'Sent')
        FROM (%s) AS changed
        GROUP BY campaign_id
        -- A statement that moves rows only between other statuses (a claim, a requeue for a new
        -- generation, a cancel dropping Pending rows) changes no count and leaves the row unlocked.
        HAVING sum(sign) <> 0
            OR coalesce(sum(sign) FILTER (WHERE status = 'Sent'), 0) <> 0
            OR coalesce(sum(sign) FILTER (WHERE status = 'Failed'), 0) <> 0
        ORDER BY campaign_id
        ON CONFLICT (campaign_id) DO UPDATE SET
            total = c.total + excluded.total,
            sent = c.sent + excluded.sent,
            failed = c.failed + excluded.failed,
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

-- A trigger with transition tables may fire on one event only (PostgreSQL refuses "INSERT OR UPDATE
-- OR DELETE" with REFERENCING), hence three.
CREATE TRIGGER recipients_counted_after_insert
    AFTER INSERT ON recipients REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_recipient_changes();
CREATE TRIGGER recipients_counted_after_update
    AFTER UPDATE ON recipients REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_recipient_changes();
CREATE TRIGGER recipients_counted_after_delete
    AFTER DELETE ON recipients REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_recipient_changes();

-- TRUNCATE has no transition tables: it empties the counts with the queue.
CREATE FUNCTION forget_recipient_counts() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    TRUNCATE recipient_counts;
    RETURN NULL;
END
$$;

CREATE TRIGGER recipients_counted_after_truncate
    AFTER TRUNCATE ON recipients
    FOR EACH STATEMENT EXECUTE FUNCTION forget_recipient_counts();

-- Recounts every campaign from its queue rows: the backfill below, and a repair should the counts
-- ever be suspected (say, after the triggers were disabled by hand). Writers of queue rows wait
-- until the transaction that calls it ends, so that no change slips between the count and the
-- triggers.
CREATE FUNCTION recount_recipient_counts() RETURNS void
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    LOCK TABLE recipients IN SHARE MODE;
    DELETE FROM recipient_counts;
    INSERT INTO recipient_counts (campaign_id, owner_user_id, total, sent, failed, first_sent_at, last_sent_at)
    SELECT campaign_id,
           min(owner_user_id),
           count(*),
           count(*) FILTER (WHERE status = 'Sent'),
           count(*) FILTER (WHERE status = 'Failed'),
           min(sent_at) FILTER (WHERE status = 'Sent'),
           max(sent_at) FILTER (WHERE status = 'Sent')
    FROM recipients
    GROUP BY campaign_id;
END
$$;

SELECT recount_recipient_counts();
