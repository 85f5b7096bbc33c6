-- 0002: which taskrunner versions created the store and last opened it for writing, so an older
-- binary can say which version it would have to be to open it (upgrades, issue 16).
CREATE TABLE taskrunner_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
