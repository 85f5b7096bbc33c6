//! The PostgreSQL storage adapter, for several replicas sharing one database: the same ports
//! and conformance suite as SQLite, plus real work distribution ([`taskrunner_store::LeaseStore`]:
//! `FOR UPDATE SKIP LOCKED` claims, fencing tokens checked inside every holder's write, wake-ups
//! over `LISTEN/NOTIFY`).
//!
//! Writes go through one group-commit task per process (a SAVEPOINT per request in one
//! transaction, the touched runs locked in key order first so replicas never deadlock); an `Ok`
//! means committed. Reads use the pool directly. Artifact blobs are files in a directory all
//! replicas share, content-addressed exactly as in SQLite; their records are rows here.
//!
//! Architecture invariant: this crate implements `taskrunner-store`'s ports and passes its
//! conformance suite; it knows nothing of the engine.

mod config;
mod leases;
mod notify;
mod read;
mod rows;
mod schema;
mod store;
mod tls;
mod writer;

pub use config::{MAX_BATCH_MAX, POOL_SIZE_MAX, PostgresConfig, QUEUE_CAPACITY_MAX};
pub use schema::{MIGRATION_LOCK_KEY, SCHEMA_VERSION};
pub use store::PostgresStore;
pub use writer::BatchStats;
