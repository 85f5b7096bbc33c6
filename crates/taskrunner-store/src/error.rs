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
/// - `Full` / `Unavailable` → the store cannot take this write *now* (disk full, database
///   unreachable or restarting); nothing was written, the same write may succeed later
///   (HTTP 503 with `Retry-After`; a run's driver keeps the transition and tries again);
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
    /// The storage is out of space (`SQLITE_FULL`, `ENOSPC`/`EDQUOT` writing a blob, a
    /// database server's `disk_full`): nothing was written; retry once space returns.
    #[error("storage is full: {0}")]
    Full(String),
    /// The storage cannot be reached right now (the database restarts, a connection was lost,
    /// the data directory is read-only): nothing was written; retry later.
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
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

impl StoreError {
    /// Whether the failure is one of the environment that goes away by itself (`Full`,
    /// `Unavailable`): nothing was written and the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Full(_) | StoreError::Unavailable(_))
    }
}

impl From<std::io::Error> for StoreError {
    /// Out of space or quota → `Full`; a read-only file system → `Unavailable`; the rest `Io`.
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match err.kind() {
            K::StorageFull | K::QuotaExceeded => StoreError::Full(err.to_string()),
            K::ReadOnlyFilesystem => StoreError::Unavailable(err.to_string()),
            _ => StoreError::Io(err.to_string()),
        }
    }
}

/// Result alias for storage operations.
pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn io_errors_that_pass_are_transient_the_rest_are_not() {
        let full: StoreError = io::Error::from_raw_os_error(28).into(); // ENOSPC
        assert!(matches!(full, StoreError::Full(_)), "{full:?}");
        assert!(full.is_transient());
        let quota: StoreError = io::Error::from_raw_os_error(122).into(); // EDQUOT
        assert!(matches!(quota, StoreError::Full(_)), "{quota:?}");
        let ro: StoreError = io::Error::from_raw_os_error(30).into(); // EROFS
        assert!(matches!(ro, StoreError::Unavailable(_)), "{ro:?}");
        assert!(ro.is_transient());
        let denied: StoreError = io::Error::from(io::ErrorKind::PermissionDenied).into();
        assert!(matches!(denied, StoreError::Io(_)), "{denied:?}");
        assert!(!denied.is_transient());
        assert!(!StoreError::Backend("x".into()).is_transient());
        assert!(
            !StoreError::Conflict {
                expected: 1,
                actual: 2
            }
            .is_transient()
        );
    }
}
