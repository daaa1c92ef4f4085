DROP INDEX posts_content_trgm_idx;
DROP INDEX posts_title_trgm_idx;
DROP FUNCTION newspaper_casefold(text);
CREATE INDEX posts_title_trgm_idx ON posts USING gin (lower(title) gin_trgm_ops)
    WITH (gin_pending_list_limit = 256);
CREATE INDEX posts_content_trgm_idx ON posts USING gin (lower(content) gin_trgm_ops)
    WITH (gin_pending_list_limit = 256);
