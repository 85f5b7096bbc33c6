//! Storage ports of taskrunner (layer L4): [`RunStore`], [`LogStore`], [`ArtifactStore`] and
//! [`LeaseStore`] (work distribution between replicas),
//! the record types they exchange, the in-memory adapter [`MemoryStore`], and (feature
//! `conformance`) the conformance suite every adapter runs.
//!
//! Architecture invariant: this crate does not know the engine. It stores opaque, already
//! serialised records with primitive fields; the runtime converts. Adapters live in their own
//! crates (`taskrunner-store-sqlite`, …) and prove themselves by passing [`conformance`].

mod blob;
pub mod blob_dir;
mod cursor;
mod error;
mod lease;
mod memory;
mod ports;
mod records;
pub mod validate;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use blob::{
    ARTIFACT_BYTES_MAX, STORED_PATH_PREFIX, digest_of_stored_path, hex, sha256_hex, stored_path_for,
};
pub use cursor::{Cursor, page_limit};
pub use error::{StoreError, StoreResult};
pub use lease::{
    CLAIM_LIMIT_MAX, LEASE_OWNER_BYTES_MAX, LEASE_TTL_MAX, Lease, LeaseState, LeaseStore, Release,
    WAKEUP_CHANNEL, WakeHub, WakeStream, Wakeup, check_claim, check_lease, check_lease_matches,
    check_owner, check_ttl, system_now_ms, to_i64_token,
};
pub use memory::MemoryStore;
pub use ports::{
    ArtifactStore, COMMIT_MANY_MAX, LIST_LIMIT_MAX, LOGS_LIMIT_MAX, LogStore, RunStore, Store,
    StoreFuture,
};
pub use records::{
    ArtifactRecord, BlobSource, JournalEntry, ListQuery, LogRecord, NewLog, NewRun, Page,
    RunRecord, Snapshot, StoredBlob, Transition, artifact, status,
};
