-- Email content: what campaigns and their A/B variations send. Deletion is soft (deleted_at), so a
-- sent campaign's content stays readable for its archive page and web view.
CREATE TABLE emails (
    email_id          bigserial   PRIMARY KEY,
    owner_user_id     bigint      NOT NULL,
    name              text        NOT NULL DEFAULT '',
    subject           text        NOT NULL DEFAULT '',
    preheader_text    text        NOT NULL DEFAULT '',
    from_name         text        NOT NULL DEFAULT '',
    from_email        text        NOT NULL DEFAULT '',
    reply_to_name     text        NOT NULL DEFAULT '',
    reply_to_email    text        NOT NULL DEFAULT '',
    html_content      text        NOT NULL DEFAULT '',
    plain_content     text        NOT NULL DEFAULT '',
    content_type      text        NOT NULL DEFAULT 'HTML',
    mode              text        NOT NULL DEFAULT 'Empty',
    fetch_url         text        NOT NULL DEFAULT '',
    fetch_plain_url   text        NOT NULL DEFAULT '',
    template_id       bigint      NOT NULL DEFAULT 0,
    image_embedding   boolean     NOT NULL DEFAULT false,
    is_email_template boolean     NOT NULL DEFAULT false,
    extra_content1    text        NOT NULL DEFAULT '',
    extra_content2    text        NOT NULL DEFAULT '',
    open_tracking     boolean     NOT NULL DEFAULT true,
    link_tracking     boolean     NOT NULL DEFAULT true,
    -- {"enabled", "source", "medium", "campaign", "term", "content", "merge_tags"}
    utm               jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz,

    CONSTRAINT emails_owner_check CHECK (owner_user_id > 0),
    CONSTRAINT emails_content_type_check CHECK (content_type IN ('HTML', 'Plain', 'Both')),
    CONSTRAINT emails_mode_check CHECK (mode IN ('Empty', 'Editor', 'Template', 'Import', 'Unlayer', 'Stripo'))
);

CREATE INDEX emails_owner_idx ON emails (owner_user_id, email_id) WHERE deleted_at IS NULL;
