//! The embedded default storage adapter: SQLite (bundled) in WAL mode with a single writer
//! thread doing group commit, a small read-only connection pool, versioned migrations, and
//! content-addressed artifact files.
//!
//! Layout of a data directory: `taskrunner.db` (+ `-wal`, `-shm`) and
//! `artifacts/sha256/ab/abcdef…`. Every write is acknowledged only after the batch it belongs
//! to is committed; with `synchronous=FULL` (the default) it then survives power loss.
//!
//! Architecture invariant: this crate implements `taskrunner-store`'s ports and passes its
//! conformance suite; it knows nothing of the engine.

pub mod backup;
mod config;
mod leases;
mod read;
mod rows;
mod schema;
mod store;
mod writer;
mod writes;

pub mod bench_support;

pub use config::{MAX_BATCH_MAX, QUEUE_CAPACITY_MAX, READERS_MAX, SqliteConfig, Synchronous};
pub use schema::SCHEMA_VERSION;
pub use store::{DB_FILE_NAME, SqliteStore};
pub use writer::BatchStats;
