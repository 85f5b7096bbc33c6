//! `StoreError`: the one error type of the storage ports, shared by every adapter.

/// What a storage operation can fail with.
///
/// Adapters map their backend's errors onto these variants so that callers (the runtime, the
/// HTTP layer) can react without knowing which adapter is in use:
/// - `RunExists` → HTTP 409 `run_exists`; `NotFound` → 404;
/// - `Conflict` → another writer advanced the run's journal: reload and retry;
/// - `StaleFencingToken` → the run was claimed by another replica: stop driving it;
/// - `Invalid` → the caller handed over a record that breaks a store invariant (a bug upstream);
/// - `Corrupt` → a stored record failed validation after reading (never a panic);
/// - `Io` / `Backend` → the environment failed (disk, database engine, writer thread gone).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A run with this id already exists in the tenant.
    #[error("run already exists")]
    RunExists,
    /// The run (or artifact) does not exist in the tenant.
    #[error("not found")]
    NotFound,
    /// Optimistic concurrency check failed: the stored journal length is not the expected one.
    #[error("journal length conflict: expected {expected}, stored {actual}")]
    Conflict {
        /// The `expected_journal_len` of the transition.
        expected: u64,
        /// The journal length actually stored.
        actual: u64,
    },
    /// A fenced write (`LeaseStore`) presented a lease that is no longer the run's current one:
    /// another owner claimed the run (or the lease was released). Nothing was written.
    #[error("stale fencing token {presented}: the run's current lease token is {current}")]
    StaleFencingToken {
        /// The token of the presented lease.
        presented: u64,
        /// The run's current token (the last one handed out; 0 if never claimed).
        current: u64,
    },
    /// A record handed to the store is malformed; nothing was written.
    #[error("invalid record: {0}")]
    Invalid(String),
    /// File-system failure (artifact blobs, data directory).
    #[error("i/o error: {0}")]
    Io(String),
    /// The storage engine failed (or its writer is gone).
    #[error("storage backend error: {0}")]
    Backend(String),
    /// A stored record failed validation after reading.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

impl From<std::io::Error> for StoreError {
    fn from(err: std::io::Error) -> Self {
        StoreError::Io(err.to_string())
    }
}

/// Result alias for storage operations.
pub type StoreResult<T> = Result<T, StoreError>;
