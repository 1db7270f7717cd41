-- Identity belongs to the translator: users, admins, their API keys (hashed) and login sessions.
CREATE TABLE users (
    user_id         bigserial PRIMARY KEY,
    username        text        NOT NULL,
    email_address   text        NOT NULL DEFAULT '',
    first_name      text        NOT NULL DEFAULT '',
    last_name       text        NOT NULL DEFAULT '',
    password_hash   text        NOT NULL,
    api_key_hash    text        NOT NULL UNIQUE,
    permissions     text[]      NOT NULL DEFAULT '{}',
    untrusted       boolean     NOT NULL DEFAULT false,
    account_status  text        NOT NULL DEFAULT 'Active',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

CREATE TABLE admins (
    admin_id        bigserial PRIMARY KEY,
    username        text        NOT NULL,
    password_hash   text        NOT NULL,
    api_key_hash    text        NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_login_at   timestamptz
);
CREATE UNIQUE INDEX admins_username_key ON admins (lower(username));

CREATE TABLE sessions (
    session_hash    text        PRIMARY KEY,
    user_id         bigint      REFERENCES users ON DELETE CASCADE,
    admin_id        bigint      REFERENCES admins ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    CHECK ((user_id IS NULL) <> (admin_id IS NULL))
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
