DROP INDEX posts_content_trgm_idx;
DROP INDEX posts_title_trgm_idx;
-- The extension stays: other objects of the database may use it.
