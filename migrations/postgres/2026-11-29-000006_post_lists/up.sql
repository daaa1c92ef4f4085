-- Lists that cost what their page holds, whatever the archive's size.
--
-- Counts: posts per author and status, kept by a trigger in the transaction of every write
-- (post_counts moves from the application to the trigger too), so that the count of every
-- filter a list can carry is read, not counted. A post's author never changes.
CREATE TABLE author_post_counts (
    author_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (author_id, status)
);
INSERT INTO author_post_counts (author_id, status, count)
SELECT author_id, status, count(*) FROM posts GROUP BY author_id, status;
UPDATE post_counts SET count = (SELECT count(*) FROM posts WHERE posts.status = post_counts.status);

-- Statement-level triggers: a statement that writes many posts (an import) moves each counter
-- once, not once per row (each update of a row leaves a version the next one steps over, so
-- per-row counting of a bulk insert costs the square of its size). Each counter table changes
-- in one statement per write.
CREATE FUNCTION posts_count_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE post_counts p SET count = p.count + d.n
        FROM (SELECT status, count(*) AS n FROM came GROUP BY status) d
        WHERE p.status = d.status;
        INSERT INTO author_post_counts AS a (author_id, status, count)
        SELECT author_id, status, count(*) FROM came GROUP BY author_id, status
        ON CONFLICT (author_id, status) DO UPDATE SET count = a.count + excluded.count;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE post_counts p SET count = p.count - d.n
        FROM (SELECT status, count(*) AS n FROM gone GROUP BY status) d
        WHERE p.status = d.status;
        UPDATE author_post_counts a SET count = a.count - d.n
        FROM (SELECT author_id, status, count(*) AS n FROM gone GROUP BY author_id, status) d
        WHERE a.author_id = d.author_id AND a.status = d.status;
    ELSE
        UPDATE post_counts p SET count = p.count + d.n
        FROM (
            SELECT status, sum(n) AS n FROM (
                SELECT status, 1 AS n FROM came UNION ALL SELECT status, -1 FROM gone
            ) moves GROUP BY status HAVING sum(n) <> 0
        ) d
        WHERE p.status = d.status;
        INSERT INTO author_post_counts AS a (author_id, status, count)
        SELECT author_id, status, sum(n) FROM (
            SELECT author_id, status, 1 AS n FROM came
            UNION ALL SELECT author_id, status, -1 FROM gone
        ) moves GROUP BY author_id, status HAVING sum(n) <> 0
        ON CONFLICT (author_id, status) DO UPDATE SET count = a.count + excluded.count;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER posts_count_after_insert AFTER INSERT ON posts
REFERENCING NEW TABLE AS came FOR EACH STATEMENT EXECUTE FUNCTION posts_count_change();
CREATE TRIGGER posts_count_after_delete AFTER DELETE ON posts
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION posts_count_change();
CREATE TRIGGER posts_count_after_update AFTER UPDATE ON posts
REFERENCING OLD TABLE AS gone NEW TABLE AS came FOR EACH STATEMENT
EXECUTE FUNCTION posts_count_change();

-- Pages: for each ordering, one index walked in that order (with the id as tie-break) for each
-- filter a list can carry — none, status, author — holding the columns the visibility rule and
-- the filters test, so that a page and the rows it skips can be read from the index alone.
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
