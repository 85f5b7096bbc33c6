-- 0001: runs, their hash-chained journals, logs and artifact records.
-- Applied once, inside a transaction; PRAGMA user_version records the schema version.

CREATE TABLE runs (
    tenant          TEXT    NOT NULL,
    run_id          TEXT    NOT NULL,
    pack_name       TEXT    NOT NULL,
    pack_version    TEXT    NOT NULL,
    plan_hash       TEXT    NOT NULL,
    plan_json       TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    next_wake_at_ms INTEGER,
    journal_len     INTEGER NOT NULL,
    journal_head    TEXT,
    log_len         INTEGER NOT NULL,
    artifact_count  INTEGER NOT NULL,
    host_digest     TEXT,
    snapshot_seq    INTEGER,
    snapshot_json   TEXT,
    PRIMARY KEY (tenant, run_id)
) WITHOUT ROWID;

-- list_runs: newest first within a tenant (keyset paging).
CREATE INDEX runs_by_created ON runs (tenant, created_at_ms DESC, run_id DESC);
-- active_runs / queued_count.
CREATE INDEX runs_by_status ON runs (status, tenant, pack_name);
-- due_runs.
CREATE INDEX runs_by_wake ON runs (next_wake_at_ms) WHERE next_wake_at_ms IS NOT NULL;

CREATE TABLE journal (
    tenant       TEXT    NOT NULL,
    run_id       TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    at_ms        INTEGER NOT NULL,
    payload_json TEXT    NOT NULL,
    prev_hash    TEXT    NOT NULL,
    hash         TEXT    NOT NULL,
    PRIMARY KEY (tenant, run_id, seq),
    FOREIGN KEY (tenant, run_id) REFERENCES runs (tenant, run_id) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE logs (
    tenant        TEXT    NOT NULL,
    run_id        TEXT    NOT NULL,
    sequence      INTEGER NOT NULL,
    timestamp_ms  INTEGER NOT NULL,
    level         TEXT    NOT NULL,
    event_type    TEXT    NOT NULL,
    message       TEXT    NOT NULL,
    step_id       TEXT,
    metadata_json TEXT    NOT NULL,
    PRIMARY KEY (tenant, run_id, sequence),
    FOREIGN KEY (tenant, run_id) REFERENCES runs (tenant, run_id) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE artifacts (
    tenant          TEXT    NOT NULL,
    run_id          TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    position        INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    source_path     TEXT,
    stored_path     TEXT,
    status          TEXT    NOT NULL,
    notes           TEXT,
    captured_at_ms  INTEGER,
    expression_json TEXT,
    sha256          TEXT,
    size_bytes      INTEGER,
    PRIMARY KEY (tenant, run_id, name),
    UNIQUE (tenant, run_id, position),
    FOREIGN KEY (tenant, run_id) REFERENCES runs (tenant, run_id) ON DELETE CASCADE
) WITHOUT ROWID;
