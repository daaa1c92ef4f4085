-- Lists that cost what their page holds, whatever the archive's size.
--
-- Counts: posts per author and status, kept by triggers in the transaction of every write
-- (post_counts moves from the application to triggers too), so that the count of every filter
-- a list can carry is read, not counted. A post's author never changes.
CREATE TABLE author_post_counts (
    author_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (author_id, status)
) WITHOUT ROWID;
INSERT INTO author_post_counts (author_id, status, count)
SELECT author_id, status, count(*) FROM posts GROUP BY author_id, status;
UPDATE post_counts SET count = (SELECT count(*) FROM posts WHERE posts.status = post_counts.status);

CREATE TRIGGER posts_count_after_insert AFTER INSERT ON posts BEGIN
    UPDATE post_counts SET count = count + 1 WHERE status = new.status;
    INSERT INTO author_post_counts (author_id, status, count) VALUES (new.author_id, new.status, 1)
    ON CONFLICT (author_id, status) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER posts_count_after_delete AFTER DELETE ON posts BEGIN
    UPDATE post_counts SET count = count - 1 WHERE status = old.status;
    UPDATE author_post_counts SET count = count - 1
    WHERE author_id = old.author_id AND status = old.status;
END;
CREATE TRIGGER posts_count_after_update AFTER UPDATE OF status ON posts
WHEN old.status <> new.status BEGIN
    UPDATE post_counts SET count = count - 1 WHERE status = old.status;
    UPDATE post_counts SET count = count + 1 WHERE status = new.status;
    UPDATE author_post_counts SET count = count - 1
    WHERE author_id = old.author_id AND status = old.status;
    INSERT INTO author_post_counts (author_id, status, count) VALUES (new.author_id, new.status, 1)
    ON CONFLICT (author_id, status) DO UPDATE SET count = count + 1;
END;

-- Pages: for each ordering, one index walked in that order (with the id as tie-break) for each
-- filter a list can carry — none, status, author — holding the columns the visibility rule and
-- the filters test, so that a page and the rows it skips are read from the index alone.
DROP INDEX posts_created_idx;
DROP INDEX posts_status_created_idx;
DROP INDEX posts_author_created_idx;
CREATE INDEX posts_created_idx ON posts (created_at, id, status, author_id);
CREATE INDEX posts_status_created_idx ON posts (status, created_at, id, author_id);
CREATE INDEX posts_author_created_idx ON posts (author_id, created_at, id, status);
CREATE INDEX posts_updated_idx ON posts (updated_at, id, status, author_id);
CREATE INDEX posts_status_updated_idx ON posts (status, updated_at, id, author_id);
CREATE INDEX posts_author_updated_idx ON posts (author_id, updated_at, id, status);
CREATE INDEX posts_title_idx ON posts (title, id, status, author_id);
CREATE INDEX posts_status_title_idx ON posts (status, title, id, author_id);
CREATE INDEX posts_author_title_idx ON posts (author_id, title, id, status);
