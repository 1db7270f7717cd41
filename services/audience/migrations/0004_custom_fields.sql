-- Custom field definitions (issue 14): what a subscriber's custom field values may be, and how
-- personalization names them. Values stay in subscribers.custom_fields, keyed by custom_field_id.
CREATE TABLE custom_fields (
    custom_field_id   bigserial   PRIMARY KEY,
    owner_user_id     bigint      NOT NULL,
    -- The list the field belongs to; NULL for a global field, which every list of the owner sees.
    list_id           bigint      REFERENCES lists (list_id) ON DELETE CASCADE,
    name              text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 250),
    field_type        text        NOT NULL CHECK (field_type IN ('Single line', 'Paragraph text',
                          'Multiple choice', 'Drop down', 'Checkboxes', 'Hidden field', 'Date field', 'Time field')),
    default_value     text        NOT NULL DEFAULT '' CHECK (char_length(default_value) <= 250),
    -- [{"label": ..., "value": ..., "selected": bool}] for the choice types; [] otherwise.
    options           jsonb       NOT NULL DEFAULT '[]',
    required          boolean     NOT NULL DEFAULT false,
    is_unique         boolean     NOT NULL DEFAULT false,
    validation_method text        NOT NULL DEFAULT 'Disabled' CHECK (validation_method IN ('Disabled', 'Numbers',
                          'Letters', 'Numbers and letters', 'Email address', 'URL', 'Date', 'Time', 'Custom')),
    validation_rule   text        NOT NULL DEFAULT '',
    -- Unique among the fields one list sees, case-insensitively; the service checks it under a lock of
    -- the owner's fields (a list field's and a global field's aliases share one namespace).
    merge_tag_alias   text        NOT NULL DEFAULT '',
    visibility        text        NOT NULL DEFAULT 'User Only' CHECK (visibility IN ('Public', 'User Only', 'Hidden')),
    -- The years a Date field accepts; both 0 for any year.
    first_year        integer     NOT NULL DEFAULT 0,
    last_year         integer     NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX custom_fields_list ON custom_fields (list_id, custom_field_id);
CREATE INDEX custom_fields_owner ON custom_fields (owner_user_id, custom_field_id);

COMMENT ON COLUMN subscribers.custom_fields IS 'Custom field id -> value (every value a JSON string)';
