//! The runtime's one error type. Variants map one-to-one onto the contract's error codes so
//! a server can translate them without guessing.

use taskrunner_plan::PlanError;

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The pack, its inputs, its executors or its secrets are not acceptable (HTTP 400 with a
    /// `PlanErrorResponse`, CLI exit 2).
    #[error("invalid pack or inputs:\n{0}")]
    Plan(PlanError),
    /// A request field is malformed (HTTP 400 `bad_request`).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No such run in this tenant, or no such approval in its plan (HTTP 404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The run id is taken in this tenant (HTTP 409 `run_exists`).
    #[error("run {0} already exists")]
    RunExists(String),
    /// The caller lacks a scope the operation needs, e.g. an approval's `grants` (HTTP 403
    /// `forbidden`).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The decision's plan hash is not the run's (HTTP 409 `plan_hash_mismatch`).
    #[error("plan hash mismatch: the run's plan is {expected}")]
    PlanHashMismatch {
        /// The run's plan hash.
        expected: String,
    },
    /// The run already finished (HTTP 409 `run_terminal`).
    #[error("run is already {0}")]
    RunTerminal(String),
    /// The run is still active: it has no evidence yet (HTTP 409 `run_not_finished`).
    #[error("run is still {0}: evidence exists only for finished runs")]
    RunNotFinished(String),
    /// The approval was already decided (HTTP 409 `approval_already_decided`).
    #[error("approval {0} was already decided")]
    AlreadyDecided(String),
    /// The pack's `maxQueueDepth` is reached (HTTP 429 `queue_full`).
    #[error("queue full: {0} runs of this pack are waiting to start")]
    QueueFull(u64),
    /// Storage failed or returned corrupt data (HTTP 500), or cannot take writes now
    /// (`StoreError::Full` / `Unavailable`: HTTP 503 `storage_full` / `storage_unavailable`).
    #[error("storage: {0}")]
    Store(#[from] taskrunner_store::StoreError),
    /// A stored run could not be read back (plan or journal did not verify).
    #[error("stored run {run_id} is corrupt: {message}")]
    Corrupt {
        /// The run.
        run_id: String,
        /// What did not verify.
        message: String,
    },
    /// Anything else that is our fault (HTTP 500).
    #[error("internal: {0}")]
    Internal(String),
}
