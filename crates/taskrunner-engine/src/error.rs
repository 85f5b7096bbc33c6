//! The crate's one error type: refused approval decisions (answered before journaling),
//! journal verification failures, and malformed timestamps.

/// Everything the engine can refuse. Unknown steps or attempts in events are not errors: the
/// state machine ignores them (see [`crate::Run::apply`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 404: the approval id is not used by any gate of this run's plan.
    #[error("approval '{0}' is not used by this run's plan")]
    UnknownApproval(String),
    /// 409 `plan_hash_mismatch`: nothing is recorded.
    #[error("plan hash {given} does not match the run's plan hash {expected}")]
    PlanHashMismatch { expected: String, given: String },
    /// 409 `run_terminal`.
    #[error("the run is already {0}")]
    RunTerminal(String),
    /// 409 `approval_already_decided`.
    #[error("approval '{0}' is already decided")]
    ApprovalAlreadyDecided(String),
    /// A record's hash does not match its content (altered record).
    #[error("journal record {seq} was altered: its hash does not match its content")]
    JournalHashMismatch { seq: u64 },
    /// Sequence numbers are not 1, 2, 3, … (a dropped or reordered record).
    #[error("journal sequence broken: expected record {expected}, found {found}")]
    JournalSequence { expected: u64, found: u64 },
    /// `prev_hash` does not name the previous record (or the plan hash for record 1).
    #[error("journal chain broken at record {seq}: previous hash does not match")]
    JournalBrokenLink { seq: u64 },
    /// The last record's hash is not the known head (a truncated or replaced tail).
    #[error("journal head mismatch: expected {expected}, found {found}")]
    JournalHeadMismatch { expected: String, found: String },
    /// Not an RFC 3339 timestamp.
    #[error("invalid RFC 3339 timestamp '{0}'")]
    InvalidTimestamp(String),
}

impl Error {
    /// The service error code (SPEC §6.3) for decision refusals; `internal_error` otherwise.
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnknownApproval(_) => "not_found",
            Error::PlanHashMismatch { .. } => "plan_hash_mismatch",
            Error::RunTerminal(_) => "run_terminal",
            Error::ApprovalAlreadyDecided(_) => "approval_already_decided",
            Error::InvalidTimestamp(_) => "bad_request",
            _ => "internal_error",
        }
    }
}

/// Why an approval decision is refused (an alias: the crate has one error enum).
pub type DecisionError = Error;
/// Why a journal does not verify (an alias: the crate has one error enum).
pub type JournalError = Error;
