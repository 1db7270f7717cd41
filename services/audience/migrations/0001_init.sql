-- Lists, their subscribers and segments, and each user's suppression list. Nothing outside the
-- audience service reads these tables: campaigns and delivery ask over gRPC.
CREATE TABLE lists (
    list_id               bigserial   PRIMARY KEY,
    owner_user_id         bigint      NOT NULL,
    name                  text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    description           text        NOT NULL DEFAULT '',
    opt_in_mode           text        NOT NULL DEFAULT 'Single' CHECK (opt_in_mode IN ('Single', 'Double')),
    sender_name           text        NOT NULL DEFAULT '',
    sender_email_address  text        NOT NULL DEFAULT '',
    sender_company        text        NOT NULL DEFAULT '',
    sender_address        text        NOT NULL DEFAULT '',
    -- An email of the campaign service (no foreign key across services); 0 when none.
    confirmation_email_id bigint      NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now(),
    archived_at           timestamptz
);

CREATE INDEX lists_owner ON lists (owner_user_id, list_id);

CREATE TABLE subscribers (
    subscriber_id       bigserial   PRIMARY KEY,
    list_id             bigint      NOT NULL REFERENCES lists (list_id) ON DELETE CASCADE,
    -- The list's owner, copied so that suppression joins and owner scoping need no join.
    owner_user_id       bigint      NOT NULL,
    -- Normalised by email-validator (domain lower-cased); email_key is lower(email_address) and
    -- is what deduplication, exclusion and suppression compare.
    email_address       text        NOT NULL,
    email_key           text        NOT NULL,
    first_name          text        NOT NULL DEFAULT '',
    last_name           text        NOT NULL DEFAULT '',
    -- Custom field id (or alias) → value, every value a JSON string.
    custom_fields       jsonb       NOT NULL DEFAULT '{}',
    status              text        NOT NULL DEFAULT 'Subscribed'
        CHECK (status IN ('Subscribed', 'Unsubscribed', 'Opt-In Pending', 'Opt-Out Pending')),
    bounce_type         text        NOT NULL DEFAULT 'Not Bounced' CHECK (bounce_type IN ('Not Bounced', 'Soft', 'Hard')),
    subscription_date   timestamptz,
    subscription_ip     text        NOT NULL DEFAULT '',
    unsubscription_date timestamptz,
    unsubscription_ip   text        NOT NULL DEFAULT '',
    optin_date          timestamptz,
    source              text        NOT NULL DEFAULT 'API',
    source_ref          text        NOT NULL DEFAULT '' CHECK (char_length(source_ref) <= 64),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (list_id, email_key)
);

-- Targeting scans one list's Subscribed rows in subscriber id order (keyset pagination).
CREATE INDEX subscribers_list_status ON subscribers (list_id, status, subscriber_id);

CREATE TABLE segments (
    segment_id               bigserial   PRIMARY KEY,
    list_id                  bigint      NOT NULL REFERENCES lists (list_id) ON DELETE CASCADE,
    owner_user_id            bigint      NOT NULL,
    name                     text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    operator                 text        NOT NULL CHECK (operator IN ('and', 'or')),
    -- Array of groups of rules, validated by the service before it is stored.
    rules                    jsonb       NOT NULL DEFAULT '[]',
    randomness               boolean     NOT NULL DEFAULT false,
    randomness_audience_size bigint      NOT NULL DEFAULT 0 CHECK (randomness_audience_size >= 0),
    created_at               timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX segments_list ON segments (list_id, segment_id);
CREATE INDEX segments_owner ON segments (owner_user_id, segment_id);

-- Addresses a user never sends to, whatever list they are on.
CREATE TABLE suppressions (
    owner_user_id bigint      NOT NULL,
    email_key     text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_user_id, email_key)
);
