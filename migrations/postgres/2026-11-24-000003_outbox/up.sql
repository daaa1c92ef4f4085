-- The transactional outbox: one row per committed post write, appended in the same transaction.
-- Writers take a transaction-scoped advisory lock just before appending, so seq values are
-- assigned in commit order and a reader of "seq > N" never skips a row that commits later.
CREATE TABLE post_events (
    seq BIGSERIAL PRIMARY KEY,
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
    id BIGINT PRIMARY KEY CHECK (id = 1),
    published_seq BIGINT NOT NULL DEFAULT 0,
    pruned_seq BIGINT NOT NULL DEFAULT 0,
    leader TEXT,
    lease_expires_at TIMESTAMP
);
INSERT INTO outbox_state (id) VALUES (1);
