-- Substring search over titles and contents from an index instead of a scan of every post:
-- an FTS5 table of trigrams that reads its text from `posts` (nothing is stored twice) and
-- folds case for all of Unicode, not only ASCII as SQLite's lower() and LIKE do. A phrase
-- query of trigrams is exactly "contains this substring"; terms shorter than three characters
-- have no trigram and are searched by a scan (see PostRepository::list_visible_to).
CREATE VIRTUAL TABLE posts_search USING fts5 (
    title,
    content,
    content = 'posts',
    content_rowid = 'id',
    tokenize = 'trigram case_sensitive 0'
);
INSERT INTO posts_search (posts_search) VALUES ('rebuild');

-- Kept in step with every write, in the writer's transaction (also for the rows a deleted
-- user's posts cascade to: foreign-key actions fire triggers).
CREATE TRIGGER posts_search_after_insert AFTER INSERT ON posts BEGIN
    INSERT INTO posts_search (rowid, title, content) VALUES (new.id, new.title, new.content);
END;
CREATE TRIGGER posts_search_after_delete AFTER DELETE ON posts BEGIN
    INSERT INTO posts_search (posts_search, rowid, title, content)
    VALUES ('delete', old.id, old.title, old.content);
END;
CREATE TRIGGER posts_search_after_update AFTER UPDATE OF title, content ON posts BEGIN
    INSERT INTO posts_search (posts_search, rowid, title, content)
    VALUES ('delete', old.id, old.title, old.content);
    INSERT INTO posts_search (rowid, title, content) VALUES (new.id, new.title, new.content);
END;
