-- Email templates (services/campaign/template_store.py): content an email copies in Template mode.
-- Emails keep their copy, so deleting a template is a real delete; emails.template_id may then name
-- a template that is gone, which only says where the content came from.
CREATE TABLE templates (
    template_id    bigserial   PRIMARY KEY,
    owner_user_id  bigint      NOT NULL,
    name           text        NOT NULL,
    subject        text        NOT NULL DEFAULT '',
    preheader_text text        NOT NULL DEFAULT '',
    html_content   text        NOT NULL DEFAULT '',
    plain_content  text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT templates_owner_check CHECK (owner_user_id > 0)
);

-- A user's templates in id order: ListTemplates pages through them by id.
CREATE INDEX templates_owner_idx ON templates (owner_user_id, template_id);
