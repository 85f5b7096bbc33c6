//! The storage ports: `RunStore`, `LogStore`, `ArtifactStore`, and the `Store` bundle (which
//! also carries the adapter's `LeaseStore`, see [`crate::lease`]).
//!
//! Architecture invariant: these traits know nothing of the engine's types; records are opaque
//! serialised data (see [`crate::records`]). Every adapter passes [`crate::conformance`].

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::error::StoreError;
use crate::lease::LeaseStore;
use crate::records::{
    ArtifactRecord, BlobSource, JournalEntry, ListQuery, LogRecord, NewLog, NewRun, Page,
    RunRecord, StoredBlob, Transition,
};

/// Largest page of [`RunStore::list_runs`].
pub const LIST_LIMIT_MAX: usize = 1000;
/// Largest page of [`LogStore::logs`].
pub const LOGS_LIMIT_MAX: usize = 10_000;
/// Most transitions in one [`RunStore::commit_many`] call.
pub const COMMIT_MANY_MAX: usize = 4096;

/// Short alias for the futures the ports return.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Runs, their journals and their scheduling state.
///
/// Contract: a write that returned `Ok` is durable (for durable adapters) and visible to every
/// later read; a write that returned `Err` wrote nothing.
pub trait RunStore: Send + Sync {
    /// Stores the run, its first journal records, logs (sequences from 1) and declared artifacts
    /// atomically. `StoreError::RunExists` if the tenant already has this run id.
    fn create_run(&self, run: NewRun) -> StoreFuture<'_, ()>;

    /// The run, or `None` when the tenant has no such run (another tenant's run is invisible).
    fn get_run<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
    ) -> StoreFuture<'a, Option<RunRecord>>;

    /// A page of the tenant's runs, newest first (`created_at_ms`, then `run_id`, descending).
    /// The cursor is opaque and stable under inserts (keyset pagination).
    fn list_runs<'a>(&'a self, tenant: &'a str, query: ListQuery) -> StoreFuture<'a, Page>;

    /// Applies one transition atomically; returns the sequences assigned to its logs.
    /// `Conflict` (nothing written) when `expected_journal_len` is not the stored length;
    /// `NotFound` when the run does not exist.
    fn commit(&self, transition: Transition) -> StoreFuture<'_, Vec<u64>>;

    /// Group commit: applies the transitions in order in one durable write; each one is checked
    /// and applied (or not) on its own, as if committed one after the other.
    fn commit_many(
        &self,
        transitions: Vec<Transition>,
    ) -> StoreFuture<'_, Vec<Result<Vec<u64>, StoreError>>>;

    /// Journal entries with `seq > after_seq`, in order. `NotFound` for an unknown run.
    fn load_journal<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        after_seq: u64,
    ) -> StoreFuture<'a, Vec<JournalEntry>>;

    /// Every run whose status is not terminal (`Pending`, `Running`, `AwaitingApproval`), as
    /// `(tenant, run_id)`, sorted.
    fn active_runs(&self) -> StoreFuture<'_, Vec<(String, String)>>;

    /// Active runs with `next_wake_at_ms <= now_ms`, as `(tenant, run_id, next_wake_at_ms)`,
    /// earliest wake first.
    fn due_runs(&self, now_ms: i64) -> StoreFuture<'_, Vec<(String, String, i64)>>;

    /// Number of the tenant's runs of this pack with status `Pending`.
    fn queued_count<'a>(&'a self, tenant: &'a str, pack_name: &'a str) -> StoreFuture<'a, u64>;
}

/// Run logs (§5.8): per-run, gap-free sequences from 1, shared by commits and appends.
pub trait LogStore: Send + Sync {
    /// Up to `limit` (≤ [`LOGS_LIMIT_MAX`]) entries with `sequence > after_sequence`, in order.
    /// `NotFound` for an unknown run.
    fn logs<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        after_sequence: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<LogRecord>>;

    /// Appends entries that go with no transition (step output lines); returns their sequences.
    fn append_logs<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        logs: Vec<NewLog>,
    ) -> StoreFuture<'a, Vec<u64>>;
}

/// Artifact records and content-addressed blobs (§5.6).
pub trait ArtifactStore: Send + Sync {
    /// Stores the bytes content-addressed by SHA-256 (`artifacts/sha256/ab/abcdef…`), atomically,
    /// deduplicated. The run must exist. Does not touch the artifact record: follow with
    /// [`ArtifactStore::upsert_artifact`].
    fn put_file<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        name: &'a str,
        source: BlobSource,
    ) -> StoreFuture<'a, StoredBlob>;

    /// Inserts or replaces the run's artifact named `record.name`; a new name is appended to the
    /// declared order, an existing one keeps its place.
    fn upsert_artifact<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        record: ArtifactRecord,
    ) -> StoreFuture<'a, ()>;

    /// The run's artifacts in declared order. `NotFound` for an unknown run.
    fn list_artifacts<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
    ) -> StoreFuture<'a, Vec<ArtifactRecord>>;

    /// The bytes of a stored blob, checked against the digest in its path (`Corrupt` if not).
    fn open_blob<'a>(&'a self, stored_path: &'a str) -> StoreFuture<'a, Vec<u8>>;
}

/// One adapter's three ports, bundled for wiring.
#[derive(Clone)]
pub struct Store {
    /// Runs and journals.
    pub runs: Arc<dyn RunStore>,
    /// Logs.
    pub logs: Arc<dyn LogStore>,
    /// Artifacts.
    pub artifacts: Arc<dyn ArtifactStore>,
    /// Leases and fenced writes for several replicas; `None` when built with
    /// [`Store::from_parts`] without [`Store::with_leases`] (one process owns every run).
    pub leases: Option<Arc<dyn LeaseStore>>,
    /// Anything that must live as long as the store (a temporary directory in tests, …).
    guard: Option<Arc<dyn Any + Send + Sync>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("leases", &self.leases.is_some())
            .field("guard", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Bundles one adapter that implements all four ports.
    pub fn new<A>(adapter: A) -> Self
    where
        A: RunStore + LogStore + ArtifactStore + LeaseStore + 'static,
    {
        let shared = Arc::new(adapter);
        Store {
            runs: shared.clone(),
            logs: shared.clone(),
            artifacts: shared.clone(),
            leases: Some(shared),
            guard: None,
        }
    }

    /// Bundles three separate port implementations.
    pub fn from_parts(
        runs: Arc<dyn RunStore>,
        logs: Arc<dyn LogStore>,
        artifacts: Arc<dyn ArtifactStore>,
    ) -> Self {
        Store {
            runs,
            logs,
            artifacts,
            leases: None,
            guard: None,
        }
    }

    /// Adds (or replaces) the lease port.
    pub fn with_leases(mut self, leases: Arc<dyn LeaseStore>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// Keeps `guard` alive as long as any clone of this store (e.g. a `tempfile::TempDir`).
    pub fn with_guard<G: Any + Send + Sync>(mut self, guard: G) -> Self {
        self.guard = Some(Arc::new(guard));
        self
    }
}
