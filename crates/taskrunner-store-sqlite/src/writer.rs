//! The single writer thread and group commit.
//!
//! One thread owns the write connection. It blocks for the first request, then takes whatever
//! else is queued (up to `max_batch` transitions), applies each request inside its own SAVEPOINT
//! of ONE `BEGIN IMMEDIATE` transaction (a failing request rolls back only its savepoint),
//! commits once (one WAL fsync with `synchronous=FULL`), and only then answers every request.
//! So an `Ok` answer always means "durable"; if the commit itself fails, every request of the
//! batch gets the error and none of them is applied.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use taskrunner_store::{
    ArtifactRecord, Lease, LeaseState, NewLog, NewRun, Release, StoreError, StoreResult,
    Transition, status, validate,
};
use tokio::sync::{mpsc, oneshot};

use crate::rows::{db_error, to_i64, to_u64};

/// A write request and the channel its answer goes back on.
#[derive(Debug)]
pub(crate) enum Request {
    Create(NewRun, oneshot::Sender<StoreResult<()>>),
    /// Transitions, each with the lease of a fenced commit (`None`: unfenced).
    Commit(
        Vec<(Transition, Option<Lease>)>,
        oneshot::Sender<StoreResult<Vec<StoreResult<Vec<u64>>>>>,
    ),
    AppendLogs {
        tenant: String,
        run_id: String,
        logs: Vec<NewLog>,
        fence: Option<Lease>,
        reply: oneshot::Sender<StoreResult<Vec<u64>>>,
    },
    Upsert {
        tenant: String,
        run_id: String,
        record: ArtifactRecord,
        fence: Option<Lease>,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    Lease(LeaseOp, oneshot::Sender<StoreResult<Vec<Lease>>>),
}

/// A lease operation (`now_ms` is the store clock, read by the caller).
#[derive(Debug)]
pub(crate) enum LeaseOp {
    Claim {
        owner: String,
        limit: usize,
        ttl_ms: i64,
        now_ms: i64,
    },
    ClaimRun {
        owner: String,
        tenant: String,
        run_id: String,
        ttl_ms: i64,
        now_ms: i64,
    },
    Renew {
        owner: String,
        ttl_ms: i64,
        now_ms: i64,
    },
    Release(Lease, Release),
}

impl Request {
    /// How much of a batch this request uses.
    fn weight(&self) -> usize {
        match self {
            Request::Commit(ts, _) => ts.len().max(1),
            _ => 1,
        }
    }
}

/// An applied request whose answer waits for the batch commit.
enum Done {
    Create(oneshot::Sender<StoreResult<()>>, StoreResult<()>),
    Commit(
        oneshot::Sender<StoreResult<Vec<StoreResult<Vec<u64>>>>>,
        Vec<StoreResult<Vec<u64>>>,
    ),
    Seqs(
        oneshot::Sender<StoreResult<Vec<u64>>>,
        StoreResult<Vec<u64>>,
    ),
    Unit(oneshot::Sender<StoreResult<()>>, StoreResult<()>),
    Leases(
        oneshot::Sender<StoreResult<Vec<Lease>>>,
        StoreResult<Vec<Lease>>,
    ),
}

impl Done {
    fn answer(self) {
        // A caller that went away (dropped future) does not want the answer; that is fine.
        let _ = match self {
            Done::Create(tx, r) | Done::Unit(tx, r) => tx.send(r).map_err(drop),
            Done::Commit(tx, r) => tx.send(Ok(r)).map_err(drop),
            Done::Seqs(tx, r) => tx.send(r).map_err(drop),
            Done::Leases(tx, r) => tx.send(r).map_err(drop),
        };
    }

    /// The first `Full`/`Unavailable` error among this request's results.
    fn transient_error(&self) -> Option<StoreError> {
        match self {
            Done::Create(_, r) | Done::Unit(_, r) => transient(r),
            Done::Commit(_, rs) => rs.iter().find_map(transient),
            Done::Seqs(_, r) => transient(r),
            Done::Leases(_, r) => transient(r),
        }
    }

    fn fail(self, err: &StoreError) {
        let _ = match self {
            Done::Create(tx, _) | Done::Unit(tx, _) => tx.send(Err(err.clone())).map_err(drop),
            Done::Commit(tx, _) => tx.send(Err(err.clone())).map_err(drop),
            Done::Seqs(tx, _) => tx.send(Err(err.clone())).map_err(drop),
            Done::Leases(tx, _) => tx.send(Err(err.clone())).map_err(drop),
        };
    }
}

fn transient<T>(result: &StoreResult<T>) -> Option<StoreError> {
    match result {
        Err(e) if e.is_transient() => Some(e.clone()),
        _ => None,
    }
}

/// Group-commit counters (for benchmarks and metrics).
#[derive(Debug, Default)]
pub(crate) struct StatsCells {
    batches: AtomicU64,
    failed_batches: AtomicU64,
    requests: AtomicU64,
    transitions: AtomicU64,
    max_batch: AtomicU64,
}

/// A snapshot of the group-commit counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchStats {
    /// Transactions committed (= durable syncs of the WAL).
    pub batches: u64,
    /// Batches whose commit failed (every request in them got the error).
    pub failed_batches: u64,
    /// Write requests processed.
    pub requests: u64,
    /// Transitions processed (each transition of a `commit_many` counts).
    pub transitions: u64,
    /// Largest batch seen, in requests (transitions weigh one each).
    pub max_batch: u64,
}

impl StatsCells {
    pub(crate) fn snapshot(&self) -> BatchStats {
        BatchStats {
            batches: self.batches.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            transitions: self.transitions.load(Ordering::Relaxed),
            max_batch: self.max_batch.load(Ordering::Relaxed),
        }
    }
}

/// The writer loop; returns when every sender is gone and the queue is drained.
pub(crate) fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Request>,
    max_batch: usize,
    stats: Arc<StatsCells>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut weight = first.weight();
        let mut batch = vec![first];
        while weight < max_batch {
            match rx.try_recv() {
                Ok(req) => {
                    weight += req.weight();
                    batch.push(req);
                }
                Err(_) => break,
            }
        }
        let transitions: usize = batch
            .iter()
            .map(|r| match r {
                Request::Commit(ts, _) => ts.len(),
                _ => 0,
            })
            .sum();
        stats
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats
            .transitions
            .fetch_add(transitions as u64, Ordering::Relaxed);
        stats.max_batch.fetch_max(weight as u64, Ordering::Relaxed);
        // Metrics (recorded into whatever recorder the binary installed; no-ops otherwise).
        metrics::histogram!("taskrunner_journal_commit_batch_size").record(weight as f64);
        let started = std::time::Instant::now();
        let outcome = apply_batch(&mut conn, batch);
        metrics::histogram!(
            "taskrunner_journal_commit_seconds",
            "outcome" => if outcome.is_ok() { "ok" } else { "error" }
        )
        .record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(()) => stats.batches.fetch_add(1, Ordering::Relaxed),
            Err(()) => stats.failed_batches.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn apply_batch(conn: &mut Connection, batch: Vec<Request>) -> Result<(), ()> {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let err = db_error(e);
            tracing::error!(error = %err, "store: cannot begin the batch transaction");
            for req in batch {
                fail_request(req, &err);
            }
            return Err(());
        }
    };
    let mut done = Vec::with_capacity(batch.len());
    for req in batch {
        done.push(match req {
            Request::Create(run, reply) => {
                Done::Create(reply, in_savepoint(&mut tx, |c| create(c, &run)))
            }
            Request::Commit(ts, reply) => {
                let results = ts
                    .into_iter()
                    .map(|(t, fence)| in_savepoint(&mut tx, |c| commit(c, &t, fence.as_ref())))
                    .collect();
                Done::Commit(reply, results)
            }
            Request::AppendLogs {
                tenant,
                run_id,
                logs,
                fence,
                reply,
            } => Done::Seqs(
                reply,
                in_savepoint(&mut tx, |c| {
                    append_logs(c, &tenant, &run_id, &logs, fence.as_ref())
                }),
            ),
            Request::Upsert {
                tenant,
                run_id,
                record,
                fence,
                reply,
            } => Done::Unit(
                reply,
                in_savepoint(&mut tx, |c| {
                    upsert_artifact(c, &tenant, &run_id, &record, fence.as_ref())
                }),
            ),
            Request::Lease(op, reply) => {
                Done::Leases(reply, in_savepoint(&mut tx, |c| lease_op(c, op)))
            }
        });
    }
    match tx.commit() {
        Ok(()) => {
            done.into_iter().for_each(Done::answer);
            Ok(())
        }
        Err(e) => {
            let mut err = db_error(e);
            // The commit of a transaction that a full disk rolled back fails with "no
            // transaction is active": report the cause a request saw instead.
            if !err.is_transient()
                && let Some(cause) = done.iter().find_map(Done::transient_error)
            {
                err = cause;
            }
            if err.is_transient() {
                // Disk full: the callers wait or refuse; one line each, not an alarm per batch.
                tracing::debug!(error = %err, "store: batch commit failed");
            } else {
                tracing::error!(error = %err, "store: batch commit failed");
            }
            for d in done {
                d.fail(&err);
            }
            Err(())
        }
    }
}

fn fail_request(req: Request, err: &StoreError) {
    let _ = match req {
        Request::Create(_, tx) => tx.send(Err(err.clone())).map_err(drop),
        Request::Commit(_, tx) => tx.send(Err(err.clone())).map_err(drop),
        Request::AppendLogs { reply, .. } => reply.send(Err(err.clone())).map_err(drop),
        Request::Upsert { reply, .. } => reply.send(Err(err.clone())).map_err(drop),
        Request::Lease(_, reply) => reply.send(Err(err.clone())).map_err(drop),
    };
}

/// Runs `f` inside a savepoint: released on success, rolled back on error.
fn in_savepoint<T>(
    tx: &mut rusqlite::Transaction<'_>,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    let mut sp = tx.savepoint().map_err(db_error)?;
    match f(&sp) {
        Ok(v) => {
            sp.commit().map_err(db_error)?;
            Ok(v)
        }
        Err(e) => {
            // A full disk may have made SQLite roll the whole transaction back, savepoint
            // included: the request's own error says more than the failed rollback.
            if let Err(rollback) = sp.rollback() {
                tracing::debug!(error = %rollback, "store: savepoint rollback failed");
                if !e.is_transient() {
                    return Err(db_error(rollback));
                }
            }
            Err(e)
        }
    }
}

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

fn create(conn: &Connection, run: &NewRun) -> StoreResult<()> {
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

fn commit(conn: &Connection, t: &Transition, fence: Option<&Lease>) -> StoreResult<Vec<u64>> {
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

fn append_logs(
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

fn upsert_artifact(
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

fn lease_state(conn: &Connection, tenant: &str, run_id: &str) -> StoreResult<LeaseState> {
    let row = conn
        .prepare_cached(
            "SELECT lease_owner, lease_token, lease_expires_at_ms, lease_parked FROM runs \
             WHERE tenant = ?1 AND run_id = ?2",
        )
        .map_err(db_error)?
        .query_row(params![tenant, run_id], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })
        .optional()
        .map_err(db_error)?
        .ok_or(StoreError::NotFound)?;
    Ok(LeaseState {
        owner: row.0,
        token: to_u64(row.1, "lease_token")?,
        expires_at_ms: row.2,
        parked: row.3,
    })
}

/// `StaleFencingToken` unless `lease` is the run's current lease.
fn check_fence(conn: &Connection, lease: &Lease) -> StoreResult<()> {
    lease_state(conn, &lease.tenant, &lease.run_id)?.fence(lease)
}

/// Takes the run for `owner` with the next token.
fn take(
    conn: &Connection,
    tenant: &str,
    run_id: &str,
    owner: &str,
    expires_at_ms: i64,
) -> StoreResult<Lease> {
    let token: i64 = conn
        .prepare_cached(
            "UPDATE runs SET lease_owner = ?3, lease_token = lease_token + 1, \
             lease_expires_at_ms = ?4, lease_parked = 0 WHERE tenant = ?1 AND run_id = ?2 \
             RETURNING lease_token",
        )
        .map_err(db_error)?
        .query_row(params![tenant, run_id, owner, expires_at_ms], |r| r.get(0))
        .map_err(db_error)?;
    Ok(Lease {
        tenant: tenant.to_owned(),
        run_id: run_id.to_owned(),
        owner: owner.to_owned(),
        fencing_token: to_u64(token, "lease_token")?,
        expires_at_ms,
    })
}

fn lease_op(conn: &Connection, op: LeaseOp) -> StoreResult<Vec<Lease>> {
    match op {
        LeaseOp::Claim {
            owner,
            limit,
            ttl_ms,
            now_ms,
        } => {
            let candidates: Vec<(String, String)> = {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT tenant, run_id FROM runs WHERE status IN (?1, ?2, ?3) AND ( \
                         (lease_owner IS NULL AND (lease_parked = 0 OR next_wake_at_ms <= ?4)) \
                         OR (lease_owner IS NOT NULL \
                             AND (lease_expires_at_ms IS NULL OR lease_expires_at_ms <= ?4))) \
                         ORDER BY COALESCE(next_wake_at_ms, -9223372036854775808), tenant, run_id \
                         LIMIT ?5",
                    )
                    .map_err(db_error)?;
                let rows = stmt
                    .query_map(
                        params![
                            status::PENDING,
                            status::RUNNING,
                            status::AWAITING_APPROVAL,
                            now_ms,
                            i64::try_from(limit).unwrap_or(i64::MAX)
                        ],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(db_error)?;
                rows.collect::<Result<_, _>>().map_err(db_error)?
            };
            let expires = now_ms.saturating_add(ttl_ms);
            candidates
                .iter()
                .map(|(t, r)| take(conn, t, r, &owner, expires))
                .collect()
        }
        LeaseOp::ClaimRun {
            owner,
            tenant,
            run_id,
            ttl_ms,
            now_ms,
        } => {
            let state = lease_state(conn, &tenant, &run_id)?;
            let run_status: String = conn
                .prepare_cached("SELECT status FROM runs WHERE tenant = ?1 AND run_id = ?2")
                .map_err(db_error)?
                .query_row(params![tenant, run_id], |r| r.get(0))
                .map_err(db_error)?;
            if !status::is_active(&run_status) || state.held_by_other(&owner, now_ms) {
                return Ok(Vec::new());
            }
            let expires = now_ms.saturating_add(ttl_ms);
            if state.held_by(&owner, now_ms) {
                conn.prepare_cached(
                    "UPDATE runs SET lease_expires_at_ms = ?3 WHERE tenant = ?1 AND run_id = ?2",
                )
                .map_err(db_error)?
                .execute(params![tenant, run_id, expires])
                .map_err(db_error)?;
                return Ok(vec![Lease {
                    tenant,
                    run_id,
                    owner,
                    fencing_token: state.token,
                    expires_at_ms: expires,
                }]);
            }
            Ok(vec![take(conn, &tenant, &run_id, &owner, expires)?])
        }
        LeaseOp::Renew {
            owner,
            ttl_ms,
            now_ms,
        } => {
            let expires = now_ms.saturating_add(ttl_ms);
            let mut stmt = conn
                .prepare_cached(
                    "UPDATE runs SET lease_expires_at_ms = ?2 WHERE lease_owner = ?1 \
                     AND lease_expires_at_ms > ?3 RETURNING tenant, run_id, lease_token",
                )
                .map_err(db_error)?;
            // An expired lease is not renewed (see `LeaseStore::renew`).
            let rows = stmt
                .query_map(params![owner, expires, now_ms], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(db_error)?;
            let mut out = Vec::new();
            for row in rows {
                let (tenant, run_id, token) = row.map_err(db_error)?;
                out.push(Lease {
                    tenant,
                    run_id,
                    owner: owner.clone(),
                    fencing_token: to_u64(token, "lease_token")?,
                    expires_at_ms: expires,
                });
            }
            out.sort_by(|a, b| (&a.tenant, &a.run_id).cmp(&(&b.tenant, &b.run_id)));
            Ok(out)
        }
        LeaseOp::Release(lease, mode) => {
            check_fence(conn, &lease)?;
            conn.prepare_cached(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at_ms = NULL, \
                 lease_parked = ?3 WHERE tenant = ?1 AND run_id = ?2",
            )
            .map_err(db_error)?
            .execute(params![lease.tenant, lease.run_id, mode == Release::Park])
            .map_err(db_error)?;
            Ok(Vec::new())
        }
    }
}
