-- CSV imports into a list: the job with its progress and report, and the stored source a
-- background job reads (inline Data or a fetched URL). Rows go to subscribers.
CREATE TABLE imports (
    import_id          bigserial   PRIMARY KEY,
    list_id            bigint      NOT NULL REFERENCES lists (list_id) ON DELETE CASCADE,
    -- The list's owner (an admin may start an import for anyone's list).
    owner_user_id      bigint      NOT NULL,
    status             text        NOT NULL DEFAULT 'Pending'
        CHECK (status IN ('Pending', 'Running', 'Completed', 'Failed')),
    -- 'stored': the source is in import_sources, so any replica may run (or re-run) the job;
    -- 'stream': a caller streams the source to the replica serving its call (StreamImport).
    origin             text        NOT NULL CHECK (origin IN ('stored', 'stream')),
    -- The CsvFormat: field_terminator, field_encloser, escaped_by, header, mapped_fields.
    format             jsonb       NOT NULL,
    update_duplicates  boolean     NOT NULL DEFAULT false,
    add_to_suppression boolean     NOT NULL DEFAULT false,
    trigger_actions    boolean     NOT NULL DEFAULT false,
    tags               jsonb       NOT NULL DEFAULT '[]',
    source_url         text        NOT NULL DEFAULT '',
    source_bytes       bigint      NOT NULL DEFAULT 0,
    -- Progress, then the report: data rows read, and what became of them.
    total_rows         bigint      NOT NULL DEFAULT 0,
    imported           bigint      NOT NULL DEFAULT 0,
    updated            bigint      NOT NULL DEFAULT 0,
    duplicates         bigint      NOT NULL DEFAULT 0,
    rejected           bigint      NOT NULL DEFAULT 0,
    -- The first 1,000 rows not imported for a reason of their own: [{row, reason, raw}].
    rejected_rows      jsonb       NOT NULL DEFAULT '[]',
    -- Records (header and blank lines included) whose effects are committed: a job re-run after a
    -- crash resumes after them.
    rows_done          bigint      NOT NULL DEFAULT 0,
    failure            text        NOT NULL DEFAULT '',
    attempts           integer     NOT NULL DEFAULT 0,
    -- The worker running the job and its last sign of life; a Running job whose heartbeat is
    -- stale was abandoned (its process died) and is taken over.
    claimed_by         text        NOT NULL DEFAULT '',
    heartbeat_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz
);

CREATE INDEX imports_list ON imports (list_id, import_id);
CREATE INDEX imports_unfinished ON imports (import_id) WHERE status IN ('Pending', 'Running');

-- The source of a stored job in pieces of about 1 MiB, read in order; deleted once the job ends.
CREATE TABLE import_sources (
    import_id bigint  NOT NULL REFERENCES imports (import_id) ON DELETE CASCADE,
    seq       integer NOT NULL,
    data      bytea   NOT NULL,
    PRIMARY KEY (import_id, seq)
);
