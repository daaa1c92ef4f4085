DROP TABLE outbox_state;
DROP TABLE post_events;
