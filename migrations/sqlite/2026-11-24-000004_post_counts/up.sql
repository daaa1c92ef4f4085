-- How many posts have each status, kept in the same transaction as every post write, so that
-- an unfiltered list's count is a lookup instead of a scan of every post.
CREATE TABLE post_counts (
    status TEXT PRIMARY KEY NOT NULL,
    count BIGINT NOT NULL
);
INSERT INTO post_counts (status, count)
SELECT 'draft', (SELECT count(*) FROM posts WHERE status = 'draft')
UNION ALL
SELECT 'published', (SELECT count(*) FROM posts WHERE status = 'published');
