//! `SqliteConfig`: durability and sizing knobs of the SQLite adapter, each with a limit.

use std::time::Duration;

/// `PRAGMA synchronous` for the write connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// The WAL is fsynced at every commit: an acknowledged commit survives power loss.
    #[default]
    Full,
    /// The WAL is fsynced only at checkpoints: an acknowledged commit survives a process crash
    /// but the last commits can be lost on power loss or an OS crash.
    Normal,
}

impl Synchronous {
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Most write requests (transitions count one each) in one group-commit transaction.
pub const MAX_BATCH_MAX: usize = 4096;
/// Most queued write requests.
pub const QUEUE_CAPACITY_MAX: usize = 65_536;
/// Most concurrent read connections.
pub const READERS_MAX: usize = 64;

/// How the SQLite adapter is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// Durability of acknowledged commits (default: `Full`).
    pub synchronous: Synchronous,
    /// How long a connection waits for a lock held by another connection or process.
    pub busy_timeout: Duration,
    /// Most write requests folded into one transaction (one fsync), 1..=[`MAX_BATCH_MAX`].
    pub max_batch: usize,
    /// Capacity of the bounded write queue, 1..=[`QUEUE_CAPACITY_MAX`].
    pub queue_capacity: usize,
    /// Read connections kept open and used at once, 1..=[`READERS_MAX`].
    pub readers: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_batch: 256,
            queue_capacity: 4096,
            readers: 4,
        }
    }
}

impl SqliteConfig {
    /// The configuration with every size clamped into its allowed range.
    pub(crate) fn clamped(&self) -> SqliteConfig {
        SqliteConfig {
            synchronous: self.synchronous,
            busy_timeout: self.busy_timeout,
            max_batch: self.max_batch.clamp(1, MAX_BATCH_MAX),
            queue_capacity: self.queue_capacity.clamp(1, QUEUE_CAPACITY_MAX),
            readers: self.readers.clamp(1, READERS_MAX),
        }
    }
}
