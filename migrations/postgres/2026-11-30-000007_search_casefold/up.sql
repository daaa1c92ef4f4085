-- Search folds case rather than lower-casing: lower() leaves a final sigma as it is, so
-- "σοφός" would not find "ΣΟΦΌΣ", whose lower-case is "σοφόσ". ς is mapped to σ, as Unicode's
-- case folding (and SQLite's FTS5) maps it. (The Greek symbol variants it also folds, such as
-- ϑ, are left: each further replace() costs as much again on every row a search rechecks, and
-- translate() four times lower() itself.) An inlined SQL function: the trigram indexes hold
-- this expression, and a query must write the same to be answered by them.
-- (A quoted body rather than RETURN, which PostgreSQL 13 lacks.)
CREATE FUNCTION newspaper_casefold(text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT replace(lower($1), 'ς', 'σ') $$;
DROP INDEX posts_title_trgm_idx;
DROP INDEX posts_content_trgm_idx;
CREATE INDEX posts_title_trgm_idx ON posts USING gin (newspaper_casefold(title) gin_trgm_ops)
    WITH (gin_pending_list_limit = 256);
CREATE INDEX posts_content_trgm_idx ON posts USING gin (newspaper_casefold(content) gin_trgm_ops)
    WITH (gin_pending_list_limit = 256);
