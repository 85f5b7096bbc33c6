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

use rusqlite::{Connection, TransactionBehavior};
use taskrunner_store::{
    ArtifactRecord, Lease, NewLog, NewRun, Release, StoreError, StoreResult, Transition,
};
use tokio::sync::{mpsc, oneshot};

use crate::leases::lease_op;
use crate::rows::db_error;
use crate::writes::{append_logs, commit, create, upsert_artifact};

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
