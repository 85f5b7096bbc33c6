//! Stored record types: opaque, already-serialised run data with primitive fields.
//!
//! The store never interprets `plan_json`, `payload_json` or `state_json`; the runtime converts
//! between these records and its domain types. Times are `i64` milliseconds since the Unix epoch.

use serde::{Deserialize, Serialize};

/// Run statuses as stored (`RunStateResponse.status`).
pub mod status {
    /// Created, not started yet (counts as queued).
    pub const PENDING: &str = "Pending";
    /// At least one step started.
    pub const RUNNING: &str = "Running";
    /// Waiting for an approval decision.
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    /// Finished successfully (terminal).
    pub const SUCCEEDED: &str = "Succeeded";
    /// Finished with a failure (terminal).
    pub const FAILED: &str = "Failed";
    /// Cancelled (terminal).
    pub const CANCELLED: &str = "Cancelled";

    /// Every status the store accepts.
    pub const ALL: [&str; 6] = [
        PENDING,
        RUNNING,
        AWAITING_APPROVAL,
        SUCCEEDED,
        FAILED,
        CANCELLED,
    ];

    /// Whether `status` is one of the non-terminal statuses.
    pub fn is_active(status: &str) -> bool {
        matches!(status, PENDING | RUNNING | AWAITING_APPROVAL)
    }

    /// Whether `status` is one of the terminal statuses.
    pub fn is_terminal(status: &str) -> bool {
        matches!(status, SUCCEEDED | FAILED | CANCELLED)
    }
}

/// Artifact kinds and statuses as stored.
pub mod artifact {
    /// A file copied from the run workspace into the blob store.
    pub const KIND_FILE: &str = "file";
    /// A JSON value stored in `expression_json`.
    pub const KIND_OBJECT: &str = "object";
    /// Declared, not captured yet.
    pub const STATUS_PENDING: &str = "pending";
    /// Captured.
    pub const STATUS_CAPTURED: &str = "captured";
    /// Capture failed (`notes` says why).
    pub const STATUS_FAILED: &str = "failed";
}

/// One record of a run's hash-chained journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Position in the journal: from 1, gap-free.
    pub seq: u64,
    /// When the event happened.
    pub at_ms: i64,
    /// The serialised event (JSON).
    pub payload_json: String,
    /// `hash` of the previous entry (for seq 1: the chain root chosen by the runtime).
    pub prev_hash: String,
    /// Hash of this entry.
    pub hash: String,
}

/// A log entry to append; the store assigns its sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewLog {
    /// When the entry was produced.
    pub timestamp_ms: i64,
    /// `info`, `warn`, …
    pub level: String,
    /// `run.created`, `step.output`, …
    pub event_type: String,
    /// Human-readable message.
    pub message: String,
    /// The step this entry belongs to, if any.
    pub step_id: Option<String>,
    /// A JSON object (values are strings by convention, §5.8).
    pub metadata_json: String,
}

/// A stored log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Per run, gap-free, from 1, assigned in commit order.
    pub sequence: u64,
    /// When the entry was produced.
    pub timestamp_ms: i64,
    /// `info`, `warn`, …
    pub level: String,
    /// `run.created`, `step.output`, …
    pub event_type: String,
    /// Human-readable message.
    pub message: String,
    /// The step this entry belongs to, if any.
    pub step_id: Option<String>,
    /// A JSON object.
    pub metadata_json: String,
}

impl LogRecord {
    /// The stored form of `log` at `sequence`.
    pub fn from_new(sequence: u64, log: NewLog) -> Self {
        LogRecord {
            sequence,
            timestamp_ms: log.timestamp_ms,
            level: log.level,
            event_type: log.event_type,
            message: log.message,
            step_id: log.step_id,
            metadata_json: log.metadata_json,
        }
    }
}

/// A run artifact (a declared pack output), §5.6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// Output name; unique within the run.
    pub name: String,
    /// `file` or `object`.
    pub kind: String,
    /// Path in the run workspace (file outputs).
    pub source_path: Option<String>,
    /// Path relative to the data directory (`artifacts/sha256/ab/abcdef…`), once captured.
    pub stored_path: Option<String>,
    /// `pending`, `captured` or `failed`.
    pub status: String,
    /// Why a capture failed, or other remarks.
    pub notes: Option<String>,
    /// When the artifact was captured.
    pub captured_at_ms: Option<i64>,
    /// RFC 8785 JSON of an object output.
    pub expression_json: Option<String>,
    /// Bare lowercase hex SHA-256 of the stored file.
    pub sha256: Option<String>,
    /// Size of the stored file.
    pub size_bytes: Option<u64>,
}

/// A cached fold of the journal up to `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The journal length the snapshot reflects (≤ the run's `journal_len`).
    pub seq: u64,
    /// Serialised run state.
    pub state_json: String,
}

/// Everything stored atomically when a run is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRun {
    /// Tenant (`^[a-z0-9][a-z0-9._-]{0,62}$`).
    pub tenant: String,
    /// Run id (`^[a-zA-Z0-9_-]{1,128}$`), unique in the tenant.
    pub run_id: String,
    /// Pack name.
    pub pack_name: String,
    /// Pack version.
    pub pack_version: String,
    /// Plan hash (`sha256:…`).
    pub plan_hash: String,
    /// Canonical plan JSON, frozen for the run's life.
    pub plan_json: String,
    /// Creation time.
    pub created_at_ms: i64,
    /// Initial status (normally `Pending`).
    pub status: String,
    /// Digest of the host executor definitions (rule 21).
    pub host_digest: Option<String>,
    /// The first journal record(s), seq from 1.
    pub journal: Vec<JournalEntry>,
    /// First log entries (`run.created`); they get sequences from 1.
    pub logs: Vec<NewLog>,
    /// Declared outputs, normally `pending`, in declaration order.
    pub artifacts: Vec<ArtifactRecord>,
}

/// A stored run (without its journal, logs and artifacts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Tenant.
    pub tenant: String,
    /// Run id.
    pub run_id: String,
    /// Pack name.
    pub pack_name: String,
    /// Pack version.
    pub pack_version: String,
    /// Plan hash.
    pub plan_hash: String,
    /// Canonical plan JSON.
    pub plan_json: String,
    /// Creation time.
    pub created_at_ms: i64,
    /// Time of the last committed transition (creation time at first).
    pub updated_at_ms: i64,
    /// Run status.
    pub status: String,
    /// When the runtime wants to be woken for this run (retry backoff, approval expiry).
    pub next_wake_at_ms: Option<i64>,
    /// Number of journal entries.
    pub journal_len: u64,
    /// `hash` of the last journal entry (`None` iff the journal is empty).
    pub journal_head: Option<String>,
    /// Digest of the host executor definitions at creation.
    pub host_digest: Option<String>,
    /// Latest state snapshot, if any.
    pub snapshot: Option<Snapshot>,
}

/// One atomic state change of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Tenant.
    pub tenant: String,
    /// Run id.
    pub run_id: String,
    /// Optimistic concurrency: must equal the stored `journal_len`.
    pub expected_journal_len: u64,
    /// Entries to append, seq from `expected_journal_len + 1`, chained to the stored head.
    pub journal: Vec<JournalEntry>,
    /// Log entries to append; the store assigns their sequences.
    pub logs: Vec<NewLog>,
    /// New status, or `None` to keep it.
    pub status: Option<String>,
    /// New `updated_at_ms`.
    pub updated_at_ms: i64,
    /// `None` keeps the wake time, `Some(None)` clears it, `Some(Some(t))` sets it.
    pub next_wake_at_ms: Option<Option<i64>>,
    /// New snapshot, or `None` to keep it.
    pub snapshot: Option<Snapshot>,
}

impl Transition {
    /// A transition that changes nothing but `updated_at_ms`; fill in the fields you need.
    pub fn new(tenant: &str, run_id: &str, expected_journal_len: u64, updated_at_ms: i64) -> Self {
        Transition {
            tenant: tenant.to_owned(),
            run_id: run_id.to_owned(),
            expected_journal_len,
            journal: Vec::new(),
            logs: Vec::new(),
            status: None,
            updated_at_ms,
            next_wake_at_ms: None,
            snapshot: None,
        }
    }
}

/// A page request for [`crate::RunStore::list_runs`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListQuery {
    /// `next_cursor` of the previous page; `None` for the first page.
    pub cursor: Option<String>,
    /// Page size, 1..=[`crate::LIST_LIMIT_MAX`].
    pub limit: usize,
}

/// A page of runs, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Runs, newest first (by `created_at_ms`, then `run_id`, both descending).
    pub runs: Vec<RunRecord>,
    /// Cursor of the next page; `None` when this is the last page.
    pub next_cursor: Option<String>,
}

/// Where the bytes of a file artifact come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobSource {
    /// Bytes already in memory.
    Bytes(Vec<u8>),
    /// A file to copy; it must be a regular file (symlinks are followed: confining paths to
    /// the run workspace is the caller's job, §5.6).
    File(std::path::PathBuf),
}

/// Where a blob was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBlob {
    /// `artifacts/sha256/ab/abcdef…`, relative to the data directory.
    pub stored_path: String,
    /// Bare lowercase hex SHA-256.
    pub sha256: String,
    /// Size in bytes.
    pub size_bytes: u64,
}
