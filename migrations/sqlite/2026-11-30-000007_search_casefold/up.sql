-- Nothing to change on SQLite: FTS5 folds case itself (a final sigma to σ too), and a term too
-- short for a trigram is matched through newspaper_casefold, a function of the server's
-- (search::casefold). The migration exists so both backends have the same versions.
SELECT 1;
