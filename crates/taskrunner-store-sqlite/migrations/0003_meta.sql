-- 0003: which taskrunner versions created the store and last opened it for writing, so an older
-- binary can say which version it would have to be to open it (upgrades, issue 16).
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
