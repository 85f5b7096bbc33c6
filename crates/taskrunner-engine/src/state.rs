//! The serialisable run state: a pure fold of the journal's events.
//!
//! Steps live in an arena (`nodes`) in creation order; the tree is `roots` + `children`.
//! Run-time map/loop expansion appends the iteration nodes and detaches the `[*]` template
//! nodes, so the arena only grows. Each node points at the [`taskrunner_plan::PlanStep`] that
//! defines it by its index path in the plan tree (`def`), so nothing of the plan is copied and
//! the state can be compared byte-for-byte after a replay.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{Decision, OutputResult, RunStatus, StepStatus};
use crate::time::Timestamp;

/// The state of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    pub run_id: String,
    pub tenant: String,
    pub plan_hash: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub status: RunStatus,
    /// `Started` was applied.
    pub started: bool,
    /// Top-level nodes in plan order.
    pub roots: Vec<usize>,
    pub nodes: Vec<Node>,
    /// Step id → node (attached nodes only).
    pub index: BTreeMap<String, usize>,
    /// Decisions received for approvals no reached gate was waiting for (rule 15), per id.
    pub held: BTreeMap<String, Vec<HeldDecision>>,
    /// Every decision applied or held, for idempotent repeats.
    pub decisions: Vec<DecisionRecord>,
    /// The last `WakeAt` emitted.
    pub last_wake: Option<Timestamp>,
    /// The step and reason that failed the run.
    pub failure: Option<(String, String)>,
    /// Set once terminal.
    pub outputs: Option<Vec<OutputResult>>,
}

/// A decision waiting for its gate to be reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldDecision {
    pub decision: Decision,
    pub actor: String,
    pub at: Timestamp,
}

/// One decision as recorded; `gate` is the step it applied to (None while held).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRecord {
    pub approval_id: String,
    pub decision: Decision,
    pub actor: String,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub gate: Option<String>,
    /// The answer given: this decision completed the gate.
    pub resumed: bool,
}

/// One step of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub id: String,
    pub template_id: String,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    /// Index path of the defining plan step (through `[*]` templates).
    pub def: Vec<usize>,
    /// Replaced by its run-time expansion; not part of the tree any more.
    pub detached: bool,
    pub status: StepStatus,
    pub status_reason: Option<String>,
    pub attempts: u32,
    pub last_transition_at: Option<Timestamp>,
    pub next_attempt_at: Option<Timestamp>,
    /// Its parent activated it.
    pub reached: bool,
    /// When it was first reached (for `metadata.duration`).
    pub started_at: Option<Timestamp>,
    /// The attempt in flight (Run steps).
    pub running_attempt: Option<u32>,
    /// A `CancelAttempt` was sent for the attempt in flight: it ends `cancelled`, no retry.
    pub cancel_sent: bool,
    /// The step is being stopped because a sibling failed or the run was cancelled.
    pub aborting: bool,
    /// Outputs (masked): a Run step's executor object, a parent's aggregate.
    pub outputs: Option<Value>,
    /// Items of a run-time expanded map/loop (masked).
    pub items: Option<Vec<Value>>,
    /// Next loop iteration to run.
    pub cursor: usize,
    /// Conditional: the branch taken (`branches.len()` = else).
    pub branch: Option<usize>,
    /// Policy gate phase.
    pub policy: Option<PolicyPhase>,
    /// Approval wait (approval gates, policy overrides).
    pub gate: Option<GateWait>,
    /// The leaf step and reason behind this step's failure.
    pub cause: Option<(String, String)>,
    /// The approval id this step may wait for (approval gate, `requestOverride` policy gate).
    pub def_approval: Option<String>,
}

/// Where a policy gate is after its evaluations failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PolicyPhase {
    /// Waiting for the override approval.
    Override,
    /// Running its `onFailure` steps.
    Branch,
}

/// A gate waiting for approvals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateWait {
    pub approval_id: String,
    pub required: u32,
    pub approvers: BTreeSet<String>,
    pub deadline: Option<Timestamp>,
    pub message: Option<String>,
}

impl Node {
    pub(crate) fn finished(&self) -> bool {
        self.status.is_finished()
    }

    /// Waiting at its gate for approvals now.
    pub fn awaiting(&self) -> bool {
        self.gate.is_some() && !self.finished()
    }
}
