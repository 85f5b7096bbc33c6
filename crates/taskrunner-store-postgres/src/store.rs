//! `PostgresStore`: connecting (pool, migrations, writer task, listener) and the port impls.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::FutureExt;
use taskrunner_store::{
    ArtifactRecord, ArtifactStore, BlobSource, COMMIT_MANY_MAX, JournalEntry, LOGS_LIMIT_MAX,
    Lease, LeaseStore, ListQuery, LogRecord, LogStore, NewLog, NewRun, Page, Release, RunRecord,
    RunStore, StoreError, StoreFuture, StoreResult, StoredBlob, Transition, WakeHub, WakeStream,
    blob_dir, check_claim, check_lease, check_lease_matches, page_limit, validate,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::PostgresConfig;
use crate::writer::{self, BatchStats, Op, Outcome, Request, StatsCells};
use crate::{leases, notify, read, schema, tls};

#[derive(Debug)]
struct Inner {
    pool: Pool,
    artifact_dir: PathBuf,
    /// To the writer task, which ends by itself once this sender is dropped.
    queue: mpsc::Sender<Request>,
    listener: Option<JoinHandle<()>>,
    stats: Arc<StatsCells>,
    wake: WakeHub,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Requests already queued are answered: the writer task drains the queue and ends once
        // every sender (this `queue`) is gone. The listener has nothing to finish.
        if let Some(listener) = self.listener.take() {
            listener.abort();
        }
    }
}

/// The PostgreSQL adapter of [`RunStore`], [`LogStore`], [`ArtifactStore`] and [`LeaseStore`].
///
/// An acknowledged write is committed (durable per the server's `synchronous_commit`). Cloning
/// is cheap and shares the pool, the writer and the listener.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

fn writer_gone() -> StoreError {
    StoreError::Backend("store writer is not running".to_owned())
}

/// Server-side end of a session left idle inside a transaction for 5 s (a stalled replica),
/// unless the URL's `options` set `idle_in_transaction_session_timeout` itself.
const IDLE_IN_TRANSACTION_OPTION: &str = "-c idle_in_transaction_session_timeout=5000";

fn wrong_outcome() -> StoreError {
    StoreError::Backend("store writer answered with the wrong kind of result".to_owned())
}

impl PostgresStore {
    /// Connects, applies pending migrations (serialised between replicas by an advisory lock),
    /// creates the artifact directory and starts the writer (and the wake-up listener). Call it
    /// inside a tokio runtime.
    ///
    /// Fails on an unreachable database, a bad URL, or a schema newer than this build.
    pub async fn connect(config: PostgresConfig) -> StoreResult<Self> {
        let config = config.clamped();
        let (mut pg, tls, _) = tls::configure(&config.url)?;
        // A replica that stalls (SIGSTOP, a partition) in the middle of a write transaction
        // would keep its run rows locked, and `SKIP LOCKED` claims would pass them over for as
        // long as it stalls: the server ends such sessions, so their leases can be taken over.
        let options = match pg.get_options() {
            Some(given) if given.contains("idle_in_transaction_session_timeout") => {
                given.to_owned()
            }
            Some(given) => format!("{given} {IDLE_IN_TRANSACTION_OPTION}"),
            None => IDLE_IN_TRANSACTION_OPTION.to_owned(),
        };
        pg.options(options);
        tokio::fs::create_dir_all(config.artifact_dir.join("artifacts")).await?;
        {
            let (mut client, connection) = pg.connect(tls.clone()).await.map_err(|e| {
                StoreError::Backend(format!(
                    "cannot connect to PostgreSQL: {}",
                    crate::rows::describe(&e)
                ))
            })?;
            let driver = tokio::spawn(connection);
            let migrated = schema::migrate(&mut client).await;
            drop(client);
            let _ = driver.await;
            migrated?;
        }
        let manager = Manager::from_config(
            pg.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(Duration::from_secs(30)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))?;
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let stats = Arc::new(StatsCells::default());
        tokio::spawn(writer::run(
            pool.clone(),
            rx,
            config.max_batch,
            stats.clone(),
        ));
        let wake = WakeHub::default();
        let listener = config
            .listen
            .then(|| notify::spawn_listener(pg, tls, wake.clone()));
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                artifact_dir: config.artifact_dir,
                queue: tx,
                listener,
                stats,
                wake,
            }),
        })
    }

    /// The shared artifact directory.
    pub fn artifact_dir(&self) -> &Path {
        &self.inner.artifact_dir
    }

    /// Group-commit counters so far.
    pub fn stats(&self) -> BatchStats {
        self.inner.stats.snapshot()
    }

    /// The schema version recorded in the database.
    pub async fn schema_version(&self) -> StoreResult<u32> {
        let client = self.client().await?;
        schema::schema_version(&client).await
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.inner.pool.get().await.map_err(crate::rows::pool_error)
    }

    /// Queues a write and waits for its answer (sent after the batch commit).
    async fn write(&self, op: Op) -> StoreResult<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .queue
            .send(Request { op, reply })
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    async fn write_unit(&self, op: Op) -> StoreResult<()> {
        match self.write(op).await? {
            Outcome::Unit(r) => r,
            _ => Err(wrong_outcome()),
        }
    }

    async fn write_seqs(&self, op: Op) -> StoreResult<Vec<u64>> {
        match self.write(op).await? {
            Outcome::Seqs(r) => r,
            _ => Err(wrong_outcome()),
        }
    }

    async fn write_many(
        &self,
        ts: Vec<(Transition, Option<Lease>)>,
    ) -> StoreResult<Vec<StoreResult<Vec<u64>>>> {
        let n = ts.len();
        match self.write(Op::Commit(ts)).await? {
            Outcome::Many(r) if r.len() == n => Ok(r),
            _ => Err(wrong_outcome()),
        }
    }

    async fn commit_one(
        &self,
        transition: Transition,
        fence: Option<Lease>,
    ) -> StoreResult<Vec<u64>> {
        self.write_many(vec![(transition, fence)])
            .await?
            .pop()
            .unwrap_or_else(|| Err(wrong_outcome()))
    }
}

impl RunStore for PostgresStore {
    fn create_run(&self, run: NewRun) -> StoreFuture<'_, ()> {
        async move {
            validate::new_run(&run)?;
            self.write_unit(Op::Create(run)).await
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
            let client = self.client().await?;
            read::get_run(&**client, tenant, run_id).await
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
            let client = self.client().await?;
            read::list_runs(&**client, tenant, cursor, limit).await
        }
        .boxed()
    }

    fn commit(&self, transition: Transition) -> StoreFuture<'_, Vec<u64>> {
        async move {
            validate::transition(&transition)?;
            self.commit_one(transition, None).await
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
            // Invalid transitions are answered here; the others go to the writer together.
            let mut results: Vec<Option<StoreResult<Vec<u64>>>> = Vec::new();
            let mut valid = Vec::new();
            for t in transitions {
                match validate::transition(&t) {
                    Ok(()) => {
                        results.push(None);
                        valid.push((t, None));
                    }
                    Err(e) => results.push(Some(Err(e))),
                }
            }
            let mut written = if valid.is_empty() {
                Vec::new()
            } else {
                self.write_many(valid).await?
            }
            .into_iter();
            results
                .into_iter()
                .map(|r| match r {
                    Some(done) => Ok(done),
                    None => written.next().ok_or_else(wrong_outcome),
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
            let mut client = self.client().await?;
            let tx = snapshot(&mut client).await?;
            let entries = read::load_journal(&*tx, tenant, run_id, after_seq).await?;
            tx.commit().await.map_err(crate::rows::db_error)?;
            Ok(entries)
        }
        .boxed()
    }

    fn active_runs(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        async move {
            let client = self.client().await?;
            read::active_runs(&**client).await
        }
        .boxed()
    }

    fn due_runs(&self, now_ms: i64) -> StoreFuture<'_, Vec<(String, String, i64)>> {
        async move {
            let client = self.client().await?;
            read::due_runs(&**client, now_ms).await
        }
        .boxed()
    }

    fn queued_count<'a>(&'a self, tenant: &'a str, pack_name: &'a str) -> StoreFuture<'a, u64> {
        async move {
            validate::tenant(tenant)?;
            let client = self.client().await?;
            read::queued_count(&**client, tenant, pack_name).await
        }
        .boxed()
    }
}

/// A read-only REPEATABLE READ transaction: one consistent view for a multi-query read.
async fn snapshot(
    client: &mut deadpool_postgres::Object,
) -> StoreResult<deadpool_postgres::Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(crate::rows::db_error)
}

impl LogStore for PostgresStore {
    fn logs<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        after_sequence: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<LogRecord>> {
        async move {
            validate::run_key(tenant, run_id)?;
            let limit = limit.min(LOGS_LIMIT_MAX);
            let mut client = self.client().await?;
            let tx = snapshot(&mut client).await?;
            let records = read::logs(&*tx, tenant, run_id, after_sequence, limit).await?;
            tx.commit().await.map_err(crate::rows::db_error)?;
            Ok(records)
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
            self.write_seqs(Op::AppendLogs {
                tenant: tenant.to_owned(),
                run_id: run_id.to_owned(),
                logs,
                fence: None,
            })
            .await
        }
        .boxed()
    }
}

impl ArtifactStore for PostgresStore {
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
            {
                let client = self.client().await?;
                read::run_exists(&**client, tenant, run_id).await?;
            }
            let dir = self.inner.artifact_dir.clone();
            tokio::task::spawn_blocking(move || blob_dir::put(&dir, source))
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
            self.write_unit(Op::Upsert {
                tenant: tenant.to_owned(),
                run_id: run_id.to_owned(),
                record,
                fence: None,
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
            let mut client = self.client().await?;
            let tx = snapshot(&mut client).await?;
            let records = read::list_artifacts(&*tx, tenant, run_id).await?;
            tx.commit().await.map_err(crate::rows::db_error)?;
            Ok(records)
        }
        .boxed()
    }

    fn open_blob<'a>(&'a self, stored_path: &'a str) -> StoreFuture<'a, Vec<u8>> {
        async move {
            let dir = self.inner.artifact_dir.clone();
            let path = stored_path.to_owned();
            tokio::task::spawn_blocking(move || blob_dir::open(&dir, &path))
                .await
                .map_err(|e| StoreError::Backend(format!("artifact task failed: {e}")))?
        }
        .boxed()
    }
}

impl LeaseStore for PostgresStore {
    fn claim<'a>(
        &'a self,
        owner: &'a str,
        limit: usize,
        ttl: Duration,
    ) -> StoreFuture<'a, Vec<Lease>> {
        async move {
            let ttl_ms = check_claim(owner, limit, ttl)?;
            if limit == 0 {
                return Ok(Vec::new());
            }
            let client = self.client().await?;
            leases::claim(&**client, owner, limit, ttl_ms).await
        }
        .boxed()
    }

    fn claim_run<'a>(
        &'a self,
        owner: &'a str,
        tenant: &'a str,
        run_id: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, Option<Lease>> {
        async move {
            let ttl_ms = check_claim(owner, 1, ttl)?;
            validate::run_key(tenant, run_id)?;
            let client = self.client().await?;
            leases::claim_run(&**client, owner, tenant, run_id, ttl_ms).await
        }
        .boxed()
    }

    fn renew<'a>(&'a self, owner: &'a str, ttl: Duration) -> StoreFuture<'a, Vec<Lease>> {
        async move {
            let ttl_ms = check_claim(owner, 0, ttl)?;
            let client = self.client().await?;
            leases::renew(&**client, owner, ttl_ms).await
        }
        .boxed()
    }

    fn release<'a>(&'a self, lease: &'a Lease, mode: Release) -> StoreFuture<'a, ()> {
        async move {
            check_lease(lease)?;
            let client = self.client().await?;
            leases::release(&**client, lease, mode).await
        }
        .boxed()
    }

    fn commit_fenced<'a>(
        &'a self,
        lease: &'a Lease,
        transition: Transition,
    ) -> StoreFuture<'a, Vec<u64>> {
        async move {
            check_lease(lease)?;
            check_lease_matches(lease, &transition)?;
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
            check_lease(lease)?;
            validate::new_logs(&logs)?;
            self.write_seqs(Op::AppendLogs {
                tenant: lease.tenant.clone(),
                run_id: lease.run_id.clone(),
                logs,
                fence: Some(lease.clone()),
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
            check_lease(lease)?;
            validate::artifact_to_write(&record)?;
            self.write_unit(Op::Upsert {
                tenant: lease.tenant.clone(),
                run_id: lease.run_id.clone(),
                record,
                fence: Some(lease.clone()),
            })
            .await
        }
        .boxed()
    }

    fn wakeups(&self) -> WakeStream {
        self.inner.wake.subscribe()
    }
}
