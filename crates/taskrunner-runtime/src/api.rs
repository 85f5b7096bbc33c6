//! The embedding API's request, answer and settings types (SPEC §5): what a caller hands the
//! [`crate::Runtime`] and what it gets back. No behaviour lives here.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{Map, Value};
use taskrunner_engine::{Decision, RunStatus, RunView, Timestamp};

use crate::error::RuntimeError;
use crate::replica::ReplicaConfig;

/// Codes of run-creation errors (SPEC §5.1), reported like plan errors.
pub mod codes {
    /// A `uses` names an executor this host does not have.
    pub const UNKNOWN_EXECUTOR: &str = "TR-R0001";
    /// A required secret cannot be supplied by the host.
    pub const MISSING_SECRET: &str = "TR-R0002";
    /// A secret value is shorter than 4 bytes (it could not be masked safely).
    pub const SECRET_TOO_SHORT: &str = "TR-R0003";

    /// Every code with a one-line summary; each has a page `docs/errors/<code>.md`.
    pub const ALL: &[(&str, &str)] = &[
        (UNKNOWN_EXECUTOR, "executor not available on this host"),
        (MISSING_SECRET, "required secret not available on this host"),
        (SECRET_TOO_SHORT, "secret value too short to mask"),
    ];
}

/// Shortest secret value accepted (SPEC §8 rule 19).
pub const SECRET_BYTES_MIN: usize = taskrunner_engine::SECRET_BYTES_MIN;

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Each run gets `workspace_root/<tenant>/<run_id>/` as its private workspace.
    pub workspace_root: PathBuf,
    /// Capacity of a run's live log broadcast (a slower follower skips ahead and re-reads the store).
    pub log_broadcast_capacity: usize,
    /// Drive runs under leases, as one of several replicas sharing the store (SPEC rule 29).
    /// `None`: this process owns every run of the store (one replica, today's behaviour).
    /// Needs a store with a lease port ([`taskrunner_store::Store::leases`]).
    pub replica: Option<ReplicaConfig>,
}

impl RuntimeConfig {
    /// Workspaces under `workspace_root`, default capacities.
    pub fn new(workspace_root: impl Into<PathBuf>) -> RuntimeConfig {
        RuntimeConfig {
            workspace_root: workspace_root.into(),
            log_broadcast_capacity: 64,
            replica: None,
        }
    }

    /// The same, as a replica with these lease settings.
    pub fn with_replica(mut self, replica: ReplicaConfig) -> RuntimeConfig {
        self.replica = Some(replica);
        self
    }
}

/// A request to create a run (SPEC §5.1).
#[derive(Debug, Clone, Default)]
pub struct CreateRun {
    /// The tenant the run belongs to (rule 26, see [`check_tenant`]).
    pub tenant: String,
    /// Generated when absent (unique, sortable, `^[a-zA-Z0-9_-]+$`).
    pub run_id: Option<String>,
    /// The manifest text.
    pub manifest: String,
    /// The pack's inputs by name (defaults fill in the rest).
    pub inputs: Map<String, Value>,
}

/// A decision on an approval (SPEC §5.4).
#[derive(Debug, Clone)]
pub struct DecisionRequest {
    /// Approve or reject.
    pub decision: Decision,
    /// The run's plan hash as the caller saw it (a mismatch is refused).
    pub plan_hash: String,
    /// Who decides (journaled with the decision).
    pub actor: String,
    /// Why, in the decider's words (optional).
    pub summary: Option<String>,
    /// The caller's scopes, checked against the approval's `grants` (SPEC §1.3, rule 16: after
    /// 404, before the plan hash). `None` = unrestricted (`none` mode, the CLI).
    pub caller_scopes: Option<BTreeSet<String>>,
}

/// The answer to a decision: `{status, resumed}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionOutcome {
    /// The decision now recorded for the approval.
    pub status: Decision,
    /// The gate opened (every approval it waits for is approved) and the run carries on.
    pub resumed: bool,
}

/// What a run looks like right now, as published by its actor.
#[derive(Debug, Clone)]
pub struct RunSnapshot {
    /// The run's state.
    pub view: RunView,
    /// Attempts currently executing.
    pub running_attempts: usize,
    /// A timer is armed (retry backoff, approval expiry).
    pub next_wake: Option<Timestamp>,
    /// The driver has not yet processed an event since the run was (re)loaded: the state may
    /// be stale (a due expiry not yet applied), so it is never taken as settled.
    pub fresh: bool,
}

impl RunSnapshot {
    /// Nothing can progress without a decision (or a far timer such as an approval expiry):
    /// the run waits at a gate with no attempt running and no retry pending.
    pub fn is_parked(&self) -> bool {
        !self.fresh
            && self.view.status == RunStatus::AwaitingApproval
            && self.running_attempts == 0
            && !self
                .view
                .steps
                .iter()
                .any(|s| s.status_reason.as_deref() == Some("retry-scheduled"))
    }
}

/// A tenant id as SPEC §8 rule 26 defines it (`^[a-z0-9][a-z0-9._-]{0,62}$`); the rule is the
/// store's ([`taskrunner_store::validate::tenant`]), refused here as `BadRequest`.
pub fn check_tenant(tenant: &str) -> Result<(), RuntimeError> {
    taskrunner_store::validate::tenant(tenant).map_err(bad_request)
}

/// A run id as SPEC §8 rule 26 defines it (`^[a-zA-Z0-9_-]{1,128}$`); the rule is the store's
/// ([`taskrunner_store::validate::run_id`]), refused here as `BadRequest`.
pub fn check_run_id(run_id: &str) -> Result<(), RuntimeError> {
    taskrunner_store::validate::run_id(run_id).map_err(bad_request)
}

/// A store validator's refusal as a bad request (its message names the field and the rule).
fn bad_request(e: taskrunner_store::validate::InvalidId) -> RuntimeError {
    RuntimeError::BadRequest(e.to_string())
}
