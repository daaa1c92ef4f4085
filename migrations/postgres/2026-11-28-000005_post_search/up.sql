-- Substring search over titles and contents from an index instead of a scan of every post:
-- trigram GIN indexes answer `lower(column) LIKE '%term%'` (the heap recheck keeps the result
-- exact). lower() folds all of Unicode under the database's UTF-8 ctype. pg_trgm is a trusted
-- extension: a database owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
-- New rows wait in a GIN index's pending list until it fills or (auto)vacuum merges it, and
-- every search reads the whole list: a smaller list (256 KB, not 4 MB) bounds that cost while
-- still merging writes in batches.
CREATE INDEX posts_title_trgm_idx ON posts USING gin (lower(title) gin_trgm_ops)
    WITH (gin_pending_list_limit = 256);
CREATE INDEX posts_content_trgm_idx ON posts USING gin (lower(content) gin_trgm_ops)
    WITH (gin_pending_list_limit = 256);
