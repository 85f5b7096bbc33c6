//! `PostgresConfig`: where the database and the shared artifact directory are, and the sizing
//! knobs of the adapter, each with a limit.

use std::path::PathBuf;

/// Most write requests (transitions count one each) in one group-commit transaction.
pub const MAX_BATCH_MAX: usize = 4096;
/// Most queued write requests.
pub const QUEUE_CAPACITY_MAX: usize = 65_536;
/// Most pooled connections.
pub const POOL_SIZE_MAX: usize = 256;

/// How the PostgreSQL adapter is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// libpq-style URL or key/value string (`postgres://user@host:5432/db`). TLS as in libpq:
    /// `sslmode=disable|prefer|require|verify-ca|verify-full` and `sslrootcert=<PEM file>`
    /// (default `prefer`; see `docs/DEPLOYMENT.md`).
    pub url: String,
    /// Directory holding `artifacts/sha256/…` blobs; every replica must see the same one.
    pub artifact_dir: PathBuf,
    /// Pooled connections for reads and lease operations (the writer uses one of them),
    /// 2..=[`POOL_SIZE_MAX`].
    pub pool_size: usize,
    /// Most write requests folded into one transaction, 1..=[`MAX_BATCH_MAX`].
    pub max_batch: usize,
    /// Capacity of the bounded write queue, 1..=[`QUEUE_CAPACITY_MAX`].
    pub queue_capacity: usize,
    /// Listen for wake-ups (`LISTEN taskrunner_runs`) on a dedicated connection.
    pub listen: bool,
}

impl PostgresConfig {
    /// Defaults for a database URL and an artifact directory.
    pub fn new(url: impl Into<String>, artifact_dir: impl Into<PathBuf>) -> Self {
        PostgresConfig {
            url: url.into(),
            artifact_dir: artifact_dir.into(),
            pool_size: 8,
            max_batch: 256,
            queue_capacity: 4096,
            listen: true,
        }
    }

    /// The configuration with every size clamped into its allowed range.
    pub(crate) fn clamped(&self) -> PostgresConfig {
        PostgresConfig {
            pool_size: self.pool_size.clamp(2, POOL_SIZE_MAX),
            max_batch: self.max_batch.clamp(1, MAX_BATCH_MAX),
            queue_capacity: self.queue_capacity.clamp(1, QUEUE_CAPACITY_MAX),
            ..self.clone()
        }
    }
}
