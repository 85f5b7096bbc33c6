//! The group-commit writer task.
//!
//! One task per process owns the write path. It waits for the first request, takes whatever
//! else is queued (up to `max_batch` transitions), locks every existing run the batch touches
//! in key order (`FOR UPDATE`, so two replicas' batches cannot deadlock), applies each request
//! inside its own SAVEPOINT of ONE transaction (a failing request rolls back only its
//! savepoint), commits once, and only then answers. If the commit fails every request gets the
//! error and none is applied; a deadlock or serialization failure retries the whole batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::Pool;
use taskrunner_store::{
    ArtifactRecord, JournalEntry, Lease, LeaseState, NewLog, NewRun, StoreError, StoreResult,
    Transition, WAKEUP_CHANNEL, Wakeup, validate,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// The writer's transaction: statements are prepared once per connection and cached.
type Transaction<'a> = deadpool_postgres::Transaction<'a>;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

async fn exec(
    tx: &Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.execute(&statement, params).await
}

async fn query(
    tx: &Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.query(&statement, params).await
}

async fn query_opt(
    tx: &Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.query_opt(&statement, params).await
}

use crate::rows::{db_error, get, is_retryable, is_unique_violation, to_i64, to_u64};

/// A write.
#[derive(Debug)]
pub(crate) enum Op {
    Create(NewRun),
    /// Transitions, each with the lease of a fenced commit (`None`: unfenced).
    Commit(Vec<(Transition, Option<Lease>)>),
    AppendLogs {
        tenant: String,
        run_id: String,
        logs: Vec<NewLog>,
        fence: Option<Lease>,
    },
    Upsert {
        tenant: String,
        run_id: String,
        record: ArtifactRecord,
        fence: Option<Lease>,
    },
}

/// What a write produced.
#[derive(Debug)]
pub(crate) enum Outcome {
    Unit(StoreResult<()>),
    Seqs(StoreResult<Vec<u64>>),
    Many(Vec<StoreResult<Vec<u64>>>),
}

/// A write and the channel its answer goes back on (after the batch commit).
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) op: Op,
    pub(crate) reply: oneshot::Sender<StoreResult<Outcome>>,
}

impl Op {
    fn weight(&self) -> usize {
        match self {
            Op::Commit(ts) => ts.len().max(1),
            _ => 1,
        }
    }

    /// Runs this op writes to that must already exist (locked first, in key order).
    fn keys(&self, out: &mut Vec<(String, String)>) {
        match self {
            Op::Create(_) => {}
            Op::Commit(ts) => {
                out.extend(ts.iter().map(|(t, _)| (t.tenant.clone(), t.run_id.clone())))
            }
            Op::AppendLogs { tenant, run_id, .. } | Op::Upsert { tenant, run_id, .. } => {
                out.push((tenant.clone(), run_id.clone()));
            }
        }
    }
}

/// Group-commit counters (for benchmarks and metrics).
#[derive(Debug, Default)]
pub(crate) struct StatsCells {
    batches: AtomicU64,
    failed_batches: AtomicU64,
    retried_batches: AtomicU64,
    requests: AtomicU64,
    max_batch: AtomicU64,
}

/// A snapshot of the group-commit counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchStats {
    /// Transactions committed.
    pub batches: u64,
    /// Batches whose commit failed (every request in them got the error).
    pub failed_batches: u64,
    /// Batch attempts rolled back by a deadlock or serialization failure and retried.
    pub retried_batches: u64,
    /// Write requests processed.
    pub requests: u64,
    /// Largest batch seen, in requests (transitions weigh one each).
    pub max_batch: u64,
}

impl StatsCells {
    pub(crate) fn snapshot(&self) -> BatchStats {
        BatchStats {
            batches: self.batches.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            retried_batches: self.retried_batches.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            max_batch: self.max_batch.load(Ordering::Relaxed),
        }
    }
}

/// How often a batch hit by a deadlock or serialization failure is tried.
const BATCH_ATTEMPTS: usize = 4;

/// The writer loop; returns when every sender is gone and the queue is drained.
pub(crate) async fn run(
    pool: Pool,
    mut rx: mpsc::Receiver<Request>,
    max_batch: usize,
    stats: Arc<StatsCells>,
) {
    while let Some(first) = rx.recv().await {
        let mut weight = first.op.weight();
        let mut batch = vec![first];
        while weight < max_batch {
            match rx.try_recv() {
                Ok(req) => {
                    weight += req.op.weight();
                    batch.push(req);
                }
                Err(_) => break,
            }
        }
        stats
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.max_batch.fetch_max(weight as u64, Ordering::Relaxed);
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|r| (r.op, r.reply)).unzip();
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match apply_batch(&pool, &ops).await {
                Err(BatchError::Retry(e)) if attempt < BATCH_ATTEMPTS => {
                    stats.retried_batches.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, attempt, "store: batch retried");
                }
                Err(BatchError::Retry(e) | BatchError::Fatal(e)) => break Err(e),
                Ok(outcomes) => break Ok(outcomes),
            }
        };
        match result {
            Ok(outcomes) => {
                stats.batches.fetch_add(1, Ordering::Relaxed);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A caller that went away does not want the answer; that is fine.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(err) => {
                stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                if err.is_transient() {
                    // Database away: the callers wait or refuse; no alarm per batch.
                    tracing::debug!(error = %err, "store: batch failed");
                } else {
                    tracing::error!(error = %err, "store: batch failed");
                }
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

enum BatchError {
    Retry(StoreError),
    Fatal(StoreError),
}

fn batch_error(err: tokio_postgres::Error) -> BatchError {
    if is_retryable(&err) {
        BatchError::Retry(db_error(err))
    } else {
        BatchError::Fatal(db_error(err))
    }
}

/// A request's own failure: a database error that aborted it (rolled back to its savepoint), or
/// a store error it returned.
enum OpError {
    Store(StoreError),
    Db(tokio_postgres::Error),
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Store(e)
    }
}

impl From<tokio_postgres::Error> for OpError {
    fn from(e: tokio_postgres::Error) -> Self {
        OpError::Db(e)
    }
}

type OpResult<T> = Result<T, OpError>;

async fn apply_batch(pool: &Pool, ops: &[Op]) -> Result<Vec<Outcome>, BatchError> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| BatchError::Fatal(crate::rows::pool_error(e)))?;
    let tx = client.transaction().await.map_err(batch_error)?;
    let mut keys = Vec::new();
    ops.iter().for_each(|op| op.keys(&mut keys));
    keys.sort();
    keys.dedup();
    if !keys.is_empty() {
        let (tenants, run_ids): (Vec<String>, Vec<String>) = keys.into_iter().unzip();
        query(
            &tx,
            "SELECT 1 FROM runs WHERE (tenant, run_id) IN \
             (SELECT * FROM unnest($1::text[], $2::text[])) \
             ORDER BY tenant, run_id FOR UPDATE",
            &[&tenants, &run_ids],
        )
        .await
        .map_err(batch_error)?;
    }
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        outcomes.push(match op {
            Op::Create(run) => Outcome::Unit(in_savepoint(&tx, create(&tx, run)).await?),
            Op::Commit(ts) => {
                let mut results = Vec::with_capacity(ts.len());
                for (t, fence) in ts {
                    results.push(in_savepoint(&tx, commit(&tx, t, fence.as_ref())).await?);
                }
                Outcome::Many(results)
            }
            Op::AppendLogs {
                tenant,
                run_id,
                logs,
                fence,
            } => Outcome::Seqs(
                in_savepoint(&tx, append_logs(&tx, tenant, run_id, logs, fence.as_ref())).await?,
            ),
            Op::Upsert {
                tenant,
                run_id,
                record,
                fence,
            } => Outcome::Unit(
                in_savepoint(
                    &tx,
                    upsert_artifact(&tx, tenant, run_id, record, fence.as_ref()),
                )
                .await?,
            ),
        });
    }
    tx.commit().await.map_err(batch_error)?;
    Ok(outcomes)
}

/// Runs `f` after a SAVEPOINT: released on success, rolled back to on error. A deadlock or
/// serialization failure inside fails the whole batch (to be retried).
async fn in_savepoint<T>(
    tx: &Transaction<'_>,
    f: impl std::future::Future<Output = OpResult<T>>,
) -> Result<StoreResult<T>, BatchError> {
    tx.batch_execute("SAVEPOINT request")
        .await
        .map_err(batch_error)?;
    let result = f.await;
    let outcome = match result {
        Ok(v) => {
            tx.batch_execute("RELEASE SAVEPOINT request")
                .await
                .map_err(batch_error)?;
            return Ok(Ok(v));
        }
        Err(OpError::Db(e)) if is_retryable(&e) => return Err(BatchError::Retry(db_error(e))),
        Err(OpError::Db(e)) if is_unique_violation(&e) => Err(StoreError::RunExists),
        Err(OpError::Db(e)) => Err(db_error(e)),
        Err(OpError::Store(e)) => Err(e),
    };
    tx.batch_execute("ROLLBACK TO SAVEPOINT request; RELEASE SAVEPOINT request")
        .await
        .map_err(batch_error)?;
    Ok(outcome)
}

struct Heads {
    journal_len: u64,
    journal_head: Option<String>,
    log_len: u64,
    artifact_count: u64,
    lease: LeaseState,
}

async fn heads(tx: &Transaction<'_>, tenant: &str, run_id: &str) -> OpResult<Heads> {
    let row = query_opt(
        tx,
        "SELECT journal_len, journal_head, log_len, artifact_count, lease_owner, \
             lease_token, lease_expires_at_ms, lease_parked FROM runs \
             WHERE tenant = $1 AND run_id = $2 FOR UPDATE",
        &[&tenant, &run_id],
    )
    .await?
    .ok_or(StoreError::NotFound)?;
    Ok(Heads {
        journal_len: to_u64(get(&row, 0)?, "journal_len")?,
        journal_head: get(&row, 1)?,
        log_len: to_u64(get(&row, 2)?, "log_len")?,
        artifact_count: to_u64(get(&row, 3)?, "artifact_count")?,
        lease: LeaseState {
            owner: get(&row, 4)?,
            token: to_u64(get(&row, 5)?, "lease_token")?,
            expires_at_ms: get(&row, 6)?,
            parked: get(&row, 7)?,
        },
    })
}

async fn insert_journal(
    tx: &Transaction<'_>,
    tenant: &str,
    run_id: &str,
    entries: &[JournalEntry],
) -> OpResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut seqs = Vec::with_capacity(entries.len());
    for e in entries {
        seqs.push(to_i64(e.seq, "journal seq")?);
    }
    let at: Vec<i64> = entries.iter().map(|e| e.at_ms).collect();
    let payload: Vec<&str> = entries.iter().map(|e| e.payload_json.as_str()).collect();
    let prev: Vec<&str> = entries.iter().map(|e| e.prev_hash.as_str()).collect();
    let hash: Vec<&str> = entries.iter().map(|e| e.hash.as_str()).collect();
    exec(
        tx,
        "INSERT INTO journal (tenant, run_id, seq, at_ms, payload_json, prev_hash, hash) \
         SELECT $1, $2, * FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::text[], \
         $7::text[])",
        &[&tenant, &run_id, &seqs, &at, &payload, &prev, &hash],
    )
    .await?;
    Ok(())
}

/// Inserts `logs` after `log_len`; returns their sequences.
async fn insert_logs(
    tx: &Transaction<'_>,
    tenant: &str,
    run_id: &str,
    log_len: u64,
    logs: &[NewLog],
) -> OpResult<Vec<u64>> {
    let seqs: Vec<u64> = (log_len + 1..=log_len + logs.len() as u64).collect();
    if logs.is_empty() {
        return Ok(seqs);
    }
    let mut seq_col = Vec::with_capacity(logs.len());
    for s in &seqs {
        seq_col.push(to_i64(*s, "log sequence")?);
    }
    let ts: Vec<i64> = logs.iter().map(|l| l.timestamp_ms).collect();
    let level: Vec<&str> = logs.iter().map(|l| l.level.as_str()).collect();
    let event: Vec<&str> = logs.iter().map(|l| l.event_type.as_str()).collect();
    let message: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
    let step: Vec<Option<&str>> = logs.iter().map(|l| l.step_id.as_deref()).collect();
    let meta: Vec<&str> = logs.iter().map(|l| l.metadata_json.as_str()).collect();
    exec(
        tx,
        "INSERT INTO logs (tenant, run_id, sequence, timestamp_ms, level, event_type, message, \
         step_id, metadata_json) SELECT $1, $2, * FROM unnest($3::bigint[], $4::bigint[], \
         $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])",
        &[
            &tenant, &run_id, &seq_col, &ts, &level, &event, &message, &step, &meta,
        ],
    )
    .await?;
    Ok(seqs)
}

async fn insert_artifact(
    tx: &Transaction<'_>,
    tenant: &str,
    run_id: &str,
    position: u64,
    a: &ArtifactRecord,
) -> OpResult<()> {
    let size = a.size_bytes.map(|s| to_i64(s, "size_bytes")).transpose()?;
    exec(
        tx,
        "INSERT INTO artifacts (tenant, run_id, name, position, kind, source_path, stored_path, \
         status, notes, captured_at_ms, expression_json, sha256, size_bytes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        &[
            &tenant,
            &run_id,
            &a.name,
            &to_i64(position, "artifact position")?,
            &a.kind,
            &a.source_path,
            &a.stored_path,
            &a.status,
            &a.notes,
            &a.captured_at_ms,
            &a.expression_json,
            &a.sha256,
            &size,
        ],
    )
    .await?;
    Ok(())
}

async fn notify(tx: &Transaction<'_>, tenant: &str, run_id: &str) -> OpResult<()> {
    let payload = Wakeup {
        tenant: tenant.to_owned(),
        run_id: run_id.to_owned(),
    }
    .payload();
    exec(tx, "SELECT pg_notify($1, $2)", &[&WAKEUP_CHANNEL, &payload]).await?;
    Ok(())
}

async fn create(tx: &Transaction<'_>, run: &NewRun) -> OpResult<()> {
    // A concurrent create of the same id by another replica waits on the primary key and then
    // fails with a unique violation, mapped to `RunExists` too.
    let inserted = exec(
        tx,
        "INSERT INTO runs (tenant, run_id, pack_name, pack_version, plan_hash, plan_json, \
             created_at_ms, updated_at_ms, status, next_wake_at_ms, journal_len, journal_head, \
             log_len, artifact_count, host_digest, snapshot_seq, snapshot_json) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, NULL, $9, $10, $11, $12, $13, NULL, NULL) \
             ON CONFLICT (tenant, run_id) DO NOTHING",
        &[
            &run.tenant,
            &run.run_id,
            &run.pack_name,
            &run.pack_version,
            &run.plan_hash,
            &run.plan_json,
            &run.created_at_ms,
            &run.status,
            &to_i64(run.journal.len() as u64, "journal_len")?,
            &run.journal.last().map(|e| e.hash.as_str()),
            &to_i64(run.logs.len() as u64, "log_len")?,
            &to_i64(run.artifacts.len() as u64, "artifact_count")?,
            &run.host_digest,
        ],
    )
    .await?;
    if inserted == 0 {
        return Err(StoreError::RunExists.into());
    }
    insert_journal(tx, &run.tenant, &run.run_id, &run.journal).await?;
    insert_logs(tx, &run.tenant, &run.run_id, 0, &run.logs).await?;
    for (a, position) in run.artifacts.iter().zip(0u64..) {
        insert_artifact(tx, &run.tenant, &run.run_id, position, a).await?;
    }
    notify(tx, &run.tenant, &run.run_id).await
}

async fn commit(tx: &Transaction<'_>, t: &Transition, fence: Option<&Lease>) -> OpResult<Vec<u64>> {
    // The stateless checks (`validate::transition`) ran before queueing; here only the checks
    // that need stored state remain.
    let h = heads(tx, &t.tenant, &t.run_id).await?;
    if let Some(lease) = fence {
        h.lease.fence(lease)?;
    }
    if h.journal_len != t.expected_journal_len {
        return Err(StoreError::Conflict {
            expected: t.expected_journal_len,
            actual: h.journal_len,
        }
        .into());
    }
    validate::journal_append(&t.journal, h.journal_len, h.journal_head.as_deref())?;
    insert_journal(tx, &t.tenant, &t.run_id, &t.journal).await?;
    let seqs = insert_logs(tx, &t.tenant, &t.run_id, h.log_len, &t.logs).await?;
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
    // An unfenced commit is a state change by a non-holder (a decision, a cancel): it unparks
    // the run and wakes the replicas.
    let unpark = fence.is_none();
    exec(
        tx,
        "UPDATE runs SET journal_len = $3, journal_head = $4, log_len = $5, \
         updated_at_ms = $6, status = COALESCE($7, status), \
         next_wake_at_ms = CASE WHEN $8 THEN $9 ELSE next_wake_at_ms END, \
         snapshot_seq = CASE WHEN $10 THEN $11 ELSE snapshot_seq END, \
         snapshot_json = CASE WHEN $10 THEN $12 ELSE snapshot_json END, \
         lease_parked = lease_parked AND NOT $13 \
         WHERE tenant = $1 AND run_id = $2",
        &[
            &t.tenant,
            &t.run_id,
            &to_i64(new_len, "journal_len")?,
            &new_head,
            &to_i64(h.log_len + t.logs.len() as u64, "log_len")?,
            &t.updated_at_ms,
            &t.status,
            &wake_set,
            &wake,
            &snap_set,
            &snap_seq,
            &snap_json,
            &unpark,
        ],
    )
    .await?;
    if unpark {
        notify(tx, &t.tenant, &t.run_id).await?;
    }
    Ok(seqs)
}

async fn append_logs(
    tx: &Transaction<'_>,
    tenant: &str,
    run_id: &str,
    logs: &[NewLog],
    fence: Option<&Lease>,
) -> OpResult<Vec<u64>> {
    let h = heads(tx, tenant, run_id).await?;
    if let Some(lease) = fence {
        h.lease.fence(lease)?;
    }
    let seqs = insert_logs(tx, tenant, run_id, h.log_len, logs).await?;
    exec(
        tx,
        "UPDATE runs SET log_len = $3 WHERE tenant = $1 AND run_id = $2",
        &[
            &tenant,
            &run_id,
            &to_i64(h.log_len + logs.len() as u64, "log_len")?,
        ],
    )
    .await?;
    Ok(seqs)
}

async fn upsert_artifact(
    tx: &Transaction<'_>,
    tenant: &str,
    run_id: &str,
    a: &ArtifactRecord,
    fence: Option<&Lease>,
) -> OpResult<()> {
    let h = heads(tx, tenant, run_id).await?;
    if let Some(lease) = fence {
        h.lease.fence(lease)?;
    }
    let size = a.size_bytes.map(|s| to_i64(s, "size_bytes")).transpose()?;
    let updated = exec(
        tx,
        "UPDATE artifacts SET kind = $4, source_path = $5, stored_path = $6, status = $7, \
             notes = $8, captured_at_ms = $9, expression_json = $10, sha256 = $11, \
             size_bytes = $12 WHERE tenant = $1 AND run_id = $2 AND name = $3",
        &[
            &tenant,
            &run_id,
            &a.name,
            &a.kind,
            &a.source_path,
            &a.stored_path,
            &a.status,
            &a.notes,
            &a.captured_at_ms,
            &a.expression_json,
            &a.sha256,
            &size,
        ],
    )
    .await?;
    if updated > 0 {
        return Ok(());
    }
    if h.artifact_count >= validate::RUN_ARTIFACTS_MAX as u64 {
        return Err(StoreError::Invalid(format!(
            "more than {} artifacts in one run",
            validate::RUN_ARTIFACTS_MAX
        ))
        .into());
    }
    insert_artifact(tx, tenant, run_id, h.artifact_count, a).await?;
    exec(
        tx,
        "UPDATE runs SET artifact_count = $3 WHERE tenant = $1 AND run_id = $2",
        &[
            &tenant,
            &run_id,
            &to_i64(h.artifact_count + 1, "artifact_count")?,
        ],
    )
    .await?;
    Ok(())
}
