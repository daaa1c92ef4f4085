-- The transactional outbox: one row per committed post write, appended in the same transaction.
-- AUTOINCREMENT so that a seq is never reused, even after pruning the newest rows.
CREATE TABLE post_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    post_id BIGINT NOT NULL,
    author_id BIGINT NOT NULL,
    payload TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX post_events_created_idx ON post_events (created_at);

-- One row: how far the dispatcher has published, how far history was pruned, and which
-- instance currently holds the publishing lease.
CREATE TABLE outbox_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    published_seq BIGINT NOT NULL DEFAULT 0,
    pruned_seq BIGINT NOT NULL DEFAULT 0,
    leader TEXT,
    lease_expires_at TIMESTAMP
);
INSERT INTO outbox_state (id) VALUES (1);
