CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL,
    username TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    is_staff BOOLEAN NOT NULL DEFAULT 0,
    is_active BOOLEAN NOT NULL DEFAULT 1,
    date_joined TIMESTAMP NOT NULL
);
-- Emails are stored lower-cased; the index enforces case-insensitive uniqueness even for rows
-- written by other tools.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE refresh_token_blacklist (
    jti TEXT PRIMARY KEY NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at TIMESTAMP NOT NULL,
    blacklisted_at TIMESTAMP NOT NULL
);
CREATE INDEX refresh_token_blacklist_expires_idx ON refresh_token_blacklist (expires_at);
