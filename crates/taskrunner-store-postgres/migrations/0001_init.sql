-- 0001: runs, their hash-chained journals, logs, artifact records and run leases.
-- Applied once, in a transaction, under the migration advisory lock; the version is recorded in
-- taskrunner_schema_migrations.

CREATE TABLE runs (
    tenant              TEXT    NOT NULL,
    run_id              TEXT    NOT NULL,
    pack_name           TEXT    NOT NULL,
    pack_version        TEXT    NOT NULL,
    plan_hash           TEXT    NOT NULL,
    plan_json           TEXT    NOT NULL,
    created_at_ms       BIGINT  NOT NULL,
    updated_at_ms       BIGINT  NOT NULL,
    status              TEXT    NOT NULL,
    next_wake_at_ms     BIGINT,
    journal_len         BIGINT  NOT NULL,
    journal_head        TEXT,
    log_len             BIGINT  NOT NULL,
    artifact_count      BIGINT  NOT NULL,
    host_digest         TEXT,
    snapshot_seq        BIGINT,
    snapshot_json       TEXT,
    -- Work distribution (SPEC rule 29): holder, fencing token, expiry (server clock, ms).
    lease_owner         TEXT,
    lease_token         BIGINT  NOT NULL DEFAULT 0,
    lease_expires_at_ms BIGINT,
    lease_parked        BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (tenant, run_id)
);

-- list_runs: newest first within a tenant (keyset paging).
CREATE INDEX runs_by_created ON runs (tenant, created_at_ms DESC, run_id DESC);
-- active_runs / queued_count.
CREATE INDEX runs_by_status ON runs (status, tenant, pack_name);
-- due_runs and claims: only active runs are ever due or claimable.
CREATE INDEX runs_active_by_wake ON runs (next_wake_at_ms, tenant, run_id)
    WHERE status IN ('Pending', 'Running', 'AwaitingApproval');
-- renew: the leases of one owner.
CREATE INDEX runs_by_lease_owner ON runs (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE journal (
    tenant       TEXT   NOT NULL,
    run_id       TEXT   NOT NULL,
    seq          BIGINT NOT NULL,
    at_ms        BIGINT NOT NULL,
    payload_json TEXT   NOT NULL,
    prev_hash    TEXT   NOT NULL,
    hash         TEXT   NOT NULL,
    PRIMARY KEY (tenant, run_id, seq),
    FOREIGN KEY (tenant, run_id) REFERENCES runs (tenant, run_id) ON DELETE CASCADE
);

CREATE TABLE logs (
    tenant        TEXT   NOT NULL,
    run_id        TEXT   NOT NULL,
    sequence      BIGINT NOT NULL,
    timestamp_ms  BIGINT NOT NULL,
    level         TEXT   NOT NULL,
    event_type    TEXT   NOT NULL,
    message       TEXT   NOT NULL,
    step_id       TEXT,
    metadata_json TEXT   NOT NULL,
    PRIMARY KEY (tenant, run_id, sequence),
    FOREIGN KEY (tenant, run_id) REFERENCES runs (tenant, run_id) ON DELETE CASCADE
);

CREATE TABLE artifacts (
    tenant          TEXT   NOT NULL,
    run_id          TEXT   NOT NULL,
    name            TEXT   NOT NULL,
    position        BIGINT NOT NULL,
    kind            TEXT   NOT NULL,
    source_path     TEXT,
    stored_path     TEXT,
    status          TEXT   NOT NULL,
    notes           TEXT,
    captured_at_ms  BIGINT,
    expression_json TEXT,
    sha256          TEXT,
    size_bytes      BIGINT,
    PRIMARY KEY (tenant, run_id, name),
    UNIQUE (tenant, run_id, position),
    FOREIGN KEY (tenant, run_id) REFERENCES runs (tenant, run_id) ON DELETE CASCADE
);
