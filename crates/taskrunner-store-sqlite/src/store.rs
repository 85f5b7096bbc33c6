//! `SqliteStore`: opening (pragmas, migrations, writer thread) and the three port impls.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use futures::FutureExt;
use rusqlite::{Connection, OpenFlags};
use taskrunner_store::{
    ArtifactRecord, ArtifactStore, BlobSource, COMMIT_MANY_MAX, JournalEntry, LOGS_LIMIT_MAX,
    Lease, LeaseStore, ListQuery, LogRecord, LogStore, NewLog, NewRun, Page, Release, RunRecord,
    RunStore, StoreError, StoreFuture, StoreResult, StoredBlob, Transition, WakeHub, WakeStream,
    page_limit, validate,
};
use tokio::sync::{mpsc, oneshot};

use crate::config::SqliteConfig;
use crate::read::{self, ReadPool};
use crate::rows::db_error;
use crate::schema;
use crate::writer::{self, BatchStats, LeaseOp, Request, StatsCells};
use taskrunner_store::blob_dir as blobs;

/// File name of the database inside the data directory.
pub const DB_FILE_NAME: &str = "taskrunner.db";

#[derive(Debug)]
struct Inner {
    data_dir: PathBuf,
    /// `None` only while dropping (closing the queue stops the writer).
    queue: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    reads: ReadPool,
    stats: Arc<StatsCells>,
    wake: WakeHub,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Close the queue, then wait for the writer to drain it and close its connection, so a
        // store reopened right after sees a closed database.
        self.queue = None;
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!("store writer thread panicked");
        }
    }
}

/// The embedded SQLite adapter of [`RunStore`], [`LogStore`] and [`ArtifactStore`].
///
/// Durability: with [`crate::Synchronous::Full`] (the default) an acknowledged write survives
/// power loss — the WAL is fsynced by the group commit before any answer is sent. Cloning is
/// cheap and shares the writer; the writer stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

fn writer_gone() -> StoreError {
    StoreError::Backend("store writer is not running".to_owned())
}

fn open_write_connection(db_path: &Path, config: &SqliteConfig) -> StoreResult<Connection> {
    let mut conn = Connection::open_with_flags(
        db_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_error)?;
    conn.busy_timeout(config.busy_timeout).map_err(db_error)?;
    // Before anything writes (switching to WAL rewrites the header): a newer store is refused
    // untouched.
    schema::refuse_newer(&conn)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(db_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "cannot switch the database to WAL mode (got {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", config.synchronous.pragma_value())
        .map_err(db_error)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(db_error)?;
    conn.set_prepared_statement_cache_capacity(64);
    schema::migrate(&mut conn)?;
    schema::record_writer(&conn)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/taskrunner.db` and `data_dir/artifacts/`, applies
    /// pending migrations and starts the writer thread. Blocks; call it at startup.
    ///
    /// Fails on a database whose schema is newer than this build.
    pub fn open(data_dir: impl AsRef<Path>, config: SqliteConfig) -> StoreResult<Self> {
        let config = config.clamped();
        let data_dir = data_dir.as_ref().to_path_buf();
        std::fs::create_dir_all(data_dir.join("artifacts"))?;
        let db_path = data_dir.join(DB_FILE_NAME);
        let conn = open_write_connection(&db_path, &config)?;
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let stats = Arc::new(StatsCells::default());
        let writer_stats = stats.clone();
        let max_batch = config.max_batch;
        let handle = std::thread::Builder::new()
            .name("taskrunner-store-writer".to_owned())
            .spawn(move || writer::run(conn, rx, max_batch, writer_stats))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                reads: ReadPool::new(db_path, config.busy_timeout, config.readers),
                data_dir,
                queue: Some(tx),
                writer: Some(handle),
                stats,
                wake: WakeHub::default(),
            }),
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Group-commit counters so far.
    pub fn stats(&self) -> BatchStats {
        self.inner.stats.snapshot()
    }

    /// Commits one (stateless-checked) transition, fenced or not.
    async fn commit_one(
        &self,
        transition: Transition,
        fence: Option<Lease>,
    ) -> StoreResult<Vec<u64>> {
        let mut results = self
            .write(|reply| Request::Commit(vec![(transition, fence)], reply))
            .await?;
        results
            .pop()
            .unwrap_or_else(|| Err(StoreError::Backend("writer returned no result".to_owned())))
    }

    /// Queues a write and waits for its answer (sent after the batch commit).
    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Request,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let queue = self.inner.queue.as_ref().ok_or_else(writer_gone)?;
        queue.send(make(reply)).await.map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

impl RunStore for SqliteStore {
    fn create_run(&self, run: NewRun) -> StoreFuture<'_, ()> {
        async move {
            validate::new_run(&run)?;
            let (tenant, run_id) = (run.tenant.clone(), run.run_id.clone());
            self.write(|reply| Request::Create(run, reply)).await?;
            self.inner.wake.send(&tenant, &run_id);
            Ok(())
        }
        .boxed()
    }

    fn get_run<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
    ) -> StoreFuture<'a, Option<RunRecord>> {
        async move {
            validate::run_key(tenant, run_id)?;
            let (t, r) = (tenant.to_owned(), run_id.to_owned());
            self.inner
                .reads
                .read(move |c| read::get_run(c, &t, &r))
                .await
        }
        .boxed()
    }

    fn list_runs<'a>(&'a self, tenant: &'a str, query: ListQuery) -> StoreFuture<'a, Page> {
        async move {
            validate::tenant(tenant)?;
            let limit = page_limit(query.limit)?;
            let cursor = query
                .cursor
                .as_deref()
                .map(taskrunner_store::Cursor::decode)
                .transpose()?;
            let t = tenant.to_owned();
            self.inner
                .reads
                .read(move |c| read::list_runs(c, &t, cursor, limit))
                .await
        }
        .boxed()
    }

    fn commit(&self, transition: Transition) -> StoreFuture<'_, Vec<u64>> {
        async move {
            validate::transition(&transition)?;
            let (tenant, run_id) = (transition.tenant.clone(), transition.run_id.clone());
            let result = self.commit_one(transition, None).await;
            if result.is_ok() {
                self.inner.wake.send(&tenant, &run_id);
            }
            result
        }
        .boxed()
    }

    fn commit_many(
        &self,
        transitions: Vec<Transition>,
    ) -> StoreFuture<'_, Vec<Result<Vec<u64>, StoreError>>> {
        async move {
            if transitions.len() > COMMIT_MANY_MAX {
                return Err(StoreError::Invalid(format!(
                    "more than {COMMIT_MANY_MAX} transitions in one commit_many"
                )));
            }
            if transitions.is_empty() {
                return Ok(Vec::new());
            }
            // Invalid transitions are answered here; the others go to the writer together.
            let mut results: Vec<Option<StoreResult<Vec<u64>>>> = Vec::new();
            let mut valid = Vec::new();
            for t in transitions {
                match validate::transition(&t) {
                    Ok(()) => {
                        results.push(None);
                        valid.push(t);
                    }
                    Err(e) => results.push(Some(Err(e))),
                }
            }
            let keys: Vec<(String, String)> = valid
                .iter()
                .map(|t: &Transition| (t.tenant.clone(), t.run_id.clone()))
                .collect();
            let valid = valid.into_iter().map(|t| (t, None)).collect();
            let written = if keys.is_empty() {
                Vec::new()
            } else {
                self.write(|reply| Request::Commit(valid, reply)).await?
            };
            for ((tenant, run_id), r) in keys.iter().zip(&written) {
                if r.is_ok() {
                    self.inner.wake.send(tenant, run_id);
                }
            }
            let mut written = written.into_iter();
            results
                .into_iter()
                .map(|r| match r {
                    Some(done) => Ok(done),
                    None => written.next().ok_or_else(|| {
                        StoreError::Backend("writer returned too few results".to_owned())
                    }),
                })
                .collect()
        }
        .boxed()
    }

    fn load_journal<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        after_seq: u64,
    ) -> StoreFuture<'a, Vec<JournalEntry>> {
        async move {
            validate::run_key(tenant, run_id)?;
            let (t, r) = (tenant.to_owned(), run_id.to_owned());
            self.inner
                .reads
                .read(move |c| read::load_journal(c, &t, &r, after_seq))
                .await
        }
        .boxed()
    }

    fn active_runs(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        async move { self.inner.reads.read(|c| read::active_runs(c)).await }.boxed()
    }

    fn due_runs(&self, now_ms: i64) -> StoreFuture<'_, Vec<(String, String, i64)>> {
        async move {
            self.inner
                .reads
                .read(move |c| read::due_runs(c, now_ms))
                .await
        }
        .boxed()
    }

    fn queued_count<'a>(&'a self, tenant: &'a str, pack_name: &'a str) -> StoreFuture<'a, u64> {
        async move {
            validate::tenant(tenant)?;
            let (t, p) = (tenant.to_owned(), pack_name.to_owned());
            self.inner
                .reads
                .read(move |c| read::queued_count(c, &t, &p))
                .await
        }
        .boxed()
    }
}

impl LogStore for SqliteStore {
    fn logs<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        after_sequence: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<LogRecord>> {
        async move {
            validate::run_key(tenant, run_id)?;
            let (t, r) = (tenant.to_owned(), run_id.to_owned());
            let limit = limit.min(LOGS_LIMIT_MAX);
            self.inner
                .reads
                .read(move |c| read::logs(c, &t, &r, after_sequence, limit))
                .await
        }
        .boxed()
    }

    fn append_logs<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        logs: Vec<NewLog>,
    ) -> StoreFuture<'a, Vec<u64>> {
        async move {
            validate::run_key(tenant, run_id)?;
            validate::new_logs(&logs)?;
            let (tenant, run_id) = (tenant.to_owned(), run_id.to_owned());
            self.write(|reply| Request::AppendLogs {
                tenant,
                run_id,
                logs,
                fence: None,
                reply,
            })
            .await
        }
        .boxed()
    }
}

impl ArtifactStore for SqliteStore {
    fn put_file<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        name: &'a str,
        source: BlobSource,
    ) -> StoreFuture<'a, StoredBlob> {
        async move {
            validate::run_key(tenant, run_id)?;
            if name.is_empty() {
                return Err(StoreError::Invalid("artifact name is empty".to_owned()));
            }
            let (t, r) = (tenant.to_owned(), run_id.to_owned());
            self.inner
                .reads
                .read(move |c| read::check_run(c, &t, &r))
                .await?;
            let dir = self.inner.data_dir.clone();
            tokio::task::spawn_blocking(move || blobs::put(&dir, source))
                .await
                .map_err(|e| StoreError::Backend(format!("artifact task failed: {e}")))?
        }
        .boxed()
    }

    fn upsert_artifact<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        record: ArtifactRecord,
    ) -> StoreFuture<'a, ()> {
        async move {
            validate::run_key(tenant, run_id)?;
            validate::artifact_to_write(&record)?;
            let (tenant, run_id) = (tenant.to_owned(), run_id.to_owned());
            self.write(|reply| Request::Upsert {
                tenant,
                run_id,
                record,
                fence: None,
                reply,
            })
            .await
        }
        .boxed()
    }

    fn list_artifacts<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
    ) -> StoreFuture<'a, Vec<ArtifactRecord>> {
        async move {
            validate::run_key(tenant, run_id)?;
            let (t, r) = (tenant.to_owned(), run_id.to_owned());
            self.inner
                .reads
                .read(move |c| read::list_artifacts(c, &t, &r))
                .await
        }
        .boxed()
    }

    fn open_blob<'a>(&'a self, stored_path: &'a str) -> StoreFuture<'a, Vec<u8>> {
        async move {
            let dir = self.inner.data_dir.clone();
            let path = stored_path.to_owned();
            tokio::task::spawn_blocking(move || blobs::open(&dir, &path))
                .await
                .map_err(|e| StoreError::Backend(format!("artifact task failed: {e}")))?
        }
        .boxed()
    }
}

impl LeaseStore for SqliteStore {
    fn claim<'a>(
        &'a self,
        owner: &'a str,
        limit: usize,
        ttl: std::time::Duration,
    ) -> StoreFuture<'a, Vec<Lease>> {
        async move {
            let ttl_ms = taskrunner_store::check_claim(owner, limit, ttl)?;
            if limit == 0 {
                return Ok(Vec::new());
            }
            let op = LeaseOp::Claim {
                owner: owner.to_owned(),
                limit,
                ttl_ms,
                now_ms: taskrunner_store::system_now_ms(),
            };
            self.write(|reply| Request::Lease(op, reply)).await
        }
        .boxed()
    }

    fn claim_run<'a>(
        &'a self,
        owner: &'a str,
        tenant: &'a str,
        run_id: &'a str,
        ttl: std::time::Duration,
    ) -> StoreFuture<'a, Option<Lease>> {
        async move {
            let ttl_ms = taskrunner_store::check_claim(owner, 1, ttl)?;
            validate::run_key(tenant, run_id)?;
            let op = LeaseOp::ClaimRun {
                owner: owner.to_owned(),
                tenant: tenant.to_owned(),
                run_id: run_id.to_owned(),
                ttl_ms,
                now_ms: taskrunner_store::system_now_ms(),
            };
            Ok(self.write(|reply| Request::Lease(op, reply)).await?.pop())
        }
        .boxed()
    }

    fn renew<'a>(
        &'a self,
        owner: &'a str,
        ttl: std::time::Duration,
    ) -> StoreFuture<'a, Vec<Lease>> {
        async move {
            let ttl_ms = taskrunner_store::check_claim(owner, 0, ttl)?;
            let op = LeaseOp::Renew {
                owner: owner.to_owned(),
                ttl_ms,
                now_ms: taskrunner_store::system_now_ms(),
            };
            self.write(|reply| Request::Lease(op, reply)).await
        }
        .boxed()
    }

    fn release<'a>(&'a self, lease: &'a Lease, mode: Release) -> StoreFuture<'a, ()> {
        async move {
            taskrunner_store::check_lease(lease)?;
            let op = LeaseOp::Release(lease.clone(), mode);
            self.write(|reply| Request::Lease(op, reply)).await?;
            if mode == Release::Handoff {
                self.inner.wake.send(&lease.tenant, &lease.run_id);
            }
            Ok(())
        }
        .boxed()
    }

    fn commit_fenced<'a>(
        &'a self,
        lease: &'a Lease,
        transition: Transition,
    ) -> StoreFuture<'a, Vec<u64>> {
        async move {
            taskrunner_store::check_lease(lease)?;
            taskrunner_store::check_lease_matches(lease, &transition)?;
            validate::transition(&transition)?;
            self.commit_one(transition, Some(lease.clone())).await
        }
        .boxed()
    }

    fn append_logs_fenced<'a>(
        &'a self,
        lease: &'a Lease,
        logs: Vec<NewLog>,
    ) -> StoreFuture<'a, Vec<u64>> {
        async move {
            taskrunner_store::check_lease(lease)?;
            validate::new_logs(&logs)?;
            self.write(|reply| Request::AppendLogs {
                tenant: lease.tenant.clone(),
                run_id: lease.run_id.clone(),
                logs,
                fence: Some(lease.clone()),
                reply,
            })
            .await
        }
        .boxed()
    }

    fn upsert_artifact_fenced<'a>(
        &'a self,
        lease: &'a Lease,
        record: ArtifactRecord,
    ) -> StoreFuture<'a, ()> {
        async move {
            taskrunner_store::check_lease(lease)?;
            validate::artifact_to_write(&record)?;
            self.write(|reply| Request::Upsert {
                tenant: lease.tenant.clone(),
                run_id: lease.run_id.clone(),
                record,
                fence: Some(lease.clone()),
                reply,
            })
            .await
        }
        .boxed()
    }

    fn wakeups(&self) -> WakeStream {
        self.inner.wake.subscribe()
    }
}
