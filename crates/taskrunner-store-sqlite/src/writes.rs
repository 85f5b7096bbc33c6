//! The SQL of each write the writer thread applies inside its savepoint: creating a run,
//! committing a transition (journal, logs, state, artifacts, run row), appending logs and
//! upserting an artifact. Each checks the lease fence first when it is given one.

use rusqlite::{Connection, OptionalExtension, params};
use taskrunner_store::{
    ArtifactRecord, Lease, NewLog, NewRun, StoreError, StoreResult, Transition, validate,
};

use crate::rows::{db_error, to_i64, to_u64};

use crate::leases::check_fence;

struct Heads {
    journal_len: u64,
    journal_head: Option<String>,
    log_len: u64,
    artifact_count: u64,
}

fn heads(conn: &Connection, tenant: &str, run_id: &str) -> StoreResult<Heads> {
    let row = conn
        .prepare_cached(
            "SELECT journal_len, journal_head, log_len, artifact_count FROM runs \
             WHERE tenant = ?1 AND run_id = ?2",
        )
        .map_err(db_error)?
        .query_row(params![tenant, run_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()
        .map_err(db_error)?
        .ok_or(StoreError::NotFound)?;
    Ok(Heads {
        journal_len: to_u64(row.0, "journal_len")?,
        journal_head: row.1,
        log_len: to_u64(row.2, "log_len")?,
        artifact_count: to_u64(row.3, "artifact_count")?,
    })
}

fn insert_journal(
    conn: &Connection,
    tenant: &str,
    run_id: &str,
    entries: &[taskrunner_store::JournalEntry],
) -> StoreResult<()> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO journal (tenant, run_id, seq, at_ms, payload_json, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(db_error)?;
    for e in entries {
        stmt.execute(params![
            tenant,
            run_id,
            to_i64(e.seq, "journal seq")?,
            e.at_ms,
            e.payload_json,
            e.prev_hash,
            e.hash
        ])
        .map_err(db_error)?;
    }
    Ok(())
}

/// Inserts `logs` after `log_len`; returns their sequences.
fn insert_logs(
    conn: &Connection,
    tenant: &str,
    run_id: &str,
    log_len: u64,
    logs: &[NewLog],
) -> StoreResult<Vec<u64>> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO logs (tenant, run_id, sequence, timestamp_ms, level, event_type, \
             message, step_id, metadata_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(db_error)?;
    let mut seqs = Vec::with_capacity(logs.len());
    for (log, seq) in logs.iter().zip(log_len + 1..) {
        stmt.execute(params![
            tenant,
            run_id,
            to_i64(seq, "log sequence")?,
            log.timestamp_ms,
            log.level,
            log.event_type,
            log.message,
            log.step_id,
            log.metadata_json
        ])
        .map_err(db_error)?;
        seqs.push(seq);
    }
    Ok(seqs)
}

fn insert_artifact(
    conn: &Connection,
    tenant: &str,
    run_id: &str,
    position: u64,
    a: &ArtifactRecord,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO artifacts (tenant, run_id, name, position, kind, source_path, stored_path, \
         status, notes, captured_at_ms, expression_json, sha256, size_bytes) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .map_err(db_error)?
    .execute(params![
        tenant,
        run_id,
        a.name,
        to_i64(position, "artifact position")?,
        a.kind,
        a.source_path,
        a.stored_path,
        a.status,
        a.notes,
        a.captured_at_ms,
        a.expression_json,
        a.sha256,
        a.size_bytes.map(|s| to_i64(s, "size_bytes")).transpose()?
    ])
    .map_err(db_error)?;
    Ok(())
}

pub(crate) fn create(conn: &Connection, run: &NewRun) -> StoreResult<()> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM runs WHERE tenant = ?1 AND run_id = ?2")
        .map_err(db_error)?
        .exists(params![run.tenant, run.run_id])
        .map_err(db_error)?;
    if exists {
        return Err(StoreError::RunExists);
    }
    conn.prepare_cached(
        "INSERT INTO runs (tenant, run_id, pack_name, pack_version, plan_hash, plan_json, \
         created_at_ms, updated_at_ms, status, next_wake_at_ms, journal_len, journal_head, \
         log_len, artifact_count, host_digest, snapshot_seq, snapshot_json) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, NULL, ?9, ?10, ?11, ?12, ?13, NULL, NULL)",
    )
    .map_err(db_error)?
    .execute(params![
        run.tenant,
        run.run_id,
        run.pack_name,
        run.pack_version,
        run.plan_hash,
        run.plan_json,
        run.created_at_ms,
        run.status,
        to_i64(run.journal.len() as u64, "journal_len")?,
        run.journal.last().map(|e| e.hash.as_str()),
        to_i64(run.logs.len() as u64, "log_len")?,
        to_i64(run.artifacts.len() as u64, "artifact_count")?,
        run.host_digest,
    ])
    .map_err(db_error)?;
    insert_journal(conn, &run.tenant, &run.run_id, &run.journal)?;
    insert_logs(conn, &run.tenant, &run.run_id, 0, &run.logs)?;
    for (a, position) in run.artifacts.iter().zip(0u64..) {
        insert_artifact(conn, &run.tenant, &run.run_id, position, a)?;
    }
    Ok(())
}

pub(crate) fn commit(
    conn: &Connection,
    t: &Transition,
    fence: Option<&Lease>,
) -> StoreResult<Vec<u64>> {
    // The stateless checks (`validate::transition`) ran before queueing, off the writer thread;
    // here only the checks that need stored state remain.
    let h = heads(conn, &t.tenant, &t.run_id)?;
    match fence {
        Some(lease) => check_fence(conn, lease)?,
        // A state change by a non-holder (a decision, a cancel): the run needs a look.
        None => {
            conn.prepare_cached(
                "UPDATE runs SET lease_parked = 0 WHERE tenant = ?1 AND run_id = ?2",
            )
            .map_err(db_error)?
            .execute(params![t.tenant, t.run_id])
            .map_err(db_error)?;
        }
    }
    if h.journal_len != t.expected_journal_len {
        return Err(StoreError::Conflict {
            expected: t.expected_journal_len,
            actual: h.journal_len,
        });
    }
    validate::journal_append(&t.journal, h.journal_len, h.journal_head.as_deref())?;
    insert_journal(conn, &t.tenant, &t.run_id, &t.journal)?;
    let seqs = insert_logs(conn, &t.tenant, &t.run_id, h.log_len, &t.logs)?;
    let new_len = validate::journal_len_after(t);
    let new_head = validate::journal_head_after(t, h.journal_head);
    let (wake_set, wake) = match t.next_wake_at_ms {
        None => (false, None),
        Some(w) => (true, w),
    };
    let (snap_set, snap_seq, snap_json) = match &t.snapshot {
        None => (false, None, None),
        Some(s) => (
            true,
            Some(to_i64(s.seq, "snapshot seq")?),
            Some(s.state_json.as_str()),
        ),
    };
    conn.prepare_cached(
        "UPDATE runs SET journal_len = ?3, journal_head = ?4, log_len = ?5, \
         updated_at_ms = ?6, status = COALESCE(?7, status), \
         next_wake_at_ms = CASE WHEN ?8 THEN ?9 ELSE next_wake_at_ms END, \
         snapshot_seq = CASE WHEN ?10 THEN ?11 ELSE snapshot_seq END, \
         snapshot_json = CASE WHEN ?10 THEN ?12 ELSE snapshot_json END \
         WHERE tenant = ?1 AND run_id = ?2",
    )
    .map_err(db_error)?
    .execute(params![
        t.tenant,
        t.run_id,
        to_i64(new_len, "journal_len")?,
        new_head,
        to_i64(h.log_len + t.logs.len() as u64, "log_len")?,
        t.updated_at_ms,
        t.status,
        wake_set,
        wake,
        snap_set,
        snap_seq,
        snap_json
    ])
    .map_err(db_error)?;
    Ok(seqs)
}

pub(crate) fn append_logs(
    conn: &Connection,
    tenant: &str,
    run_id: &str,
    logs: &[NewLog],
    fence: Option<&Lease>,
) -> StoreResult<Vec<u64>> {
    let h = heads(conn, tenant, run_id)?;
    if let Some(lease) = fence {
        check_fence(conn, lease)?;
    }
    let seqs = insert_logs(conn, tenant, run_id, h.log_len, logs)?;
    conn.prepare_cached("UPDATE runs SET log_len = ?3 WHERE tenant = ?1 AND run_id = ?2")
        .map_err(db_error)?
        .execute(params![
            tenant,
            run_id,
            to_i64(h.log_len + logs.len() as u64, "log_len")?
        ])
        .map_err(db_error)?;
    Ok(seqs)
}

pub(crate) fn upsert_artifact(
    conn: &Connection,
    tenant: &str,
    run_id: &str,
    a: &ArtifactRecord,
    fence: Option<&Lease>,
) -> StoreResult<()> {
    let h = heads(conn, tenant, run_id)?;
    if let Some(lease) = fence {
        check_fence(conn, lease)?;
    }
    let updated = conn
        .prepare_cached(
            "UPDATE artifacts SET kind = ?4, source_path = ?5, stored_path = ?6, status = ?7, \
             notes = ?8, captured_at_ms = ?9, expression_json = ?10, sha256 = ?11, \
             size_bytes = ?12 WHERE tenant = ?1 AND run_id = ?2 AND name = ?3",
        )
        .map_err(db_error)?
        .execute(params![
            tenant,
            run_id,
            a.name,
            a.kind,
            a.source_path,
            a.stored_path,
            a.status,
            a.notes,
            a.captured_at_ms,
            a.expression_json,
            a.sha256,
            a.size_bytes.map(|s| to_i64(s, "size_bytes")).transpose()?
        ])
        .map_err(db_error)?;
    if updated > 0 {
        return Ok(());
    }
    if h.artifact_count >= validate::RUN_ARTIFACTS_MAX as u64 {
        return Err(StoreError::Invalid(format!(
            "more than {} artifacts in one run",
            validate::RUN_ARTIFACTS_MAX
        )));
    }
    insert_artifact(conn, tenant, run_id, h.artifact_count, a)?;
    conn.prepare_cached("UPDATE runs SET artifact_count = ?3 WHERE tenant = ?1 AND run_id = ?2")
        .map_err(db_error)?
        .execute(params![
            tenant,
            run_id,
            to_i64(h.artifact_count + 1, "artifact_count")?
        ])
        .map_err(db_error)?;
    Ok(())
}
