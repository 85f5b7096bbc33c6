//! The planner (SPEC §3–§4): manifest + inputs → deterministic [`Plan`], its RFC 8785
//! canonical JSON and `sha256:` hash, and the simulation of a plan.
//!
//! Owns: plan-time vs run-time evaluation, map/loop expansion and step ids, the
//! `taskrunner.plan/v1` format, canonicalisation and hashing, the simulation statuses, and the
//! semantic plan diff ([`diff`], `taskrunner.plan-diff/v1`).
//! Pure: no I/O, no clock, no environment, no secret values. The engine consumes [`Plan`].

mod codes;
mod decode;
mod diff;
mod encode;
pub mod jcs;
mod model;
mod planner;
mod render;
mod simulate;
mod value;

pub use codes::ALL as ERROR_CODES;
pub use decode::DecodeError;
pub use diff::{Change, DIFF_SCHEMA, DiffSide, Instance, Op, PlanDiff, Section, diff};
pub use model::{
    Aggregation, FailureAction, FailureDefaults, Iterations, LoopSource, PLAN_SCHEMA, PackRef,
    Plan, PlanApproval, PlanBranch, PlanOutput, PlanPolicy, PlanSandbox, PlanSecret, PlanSlo,
    PlanStep, PlanStepKind, Retries, SandboxMode,
};
pub use planner::{PlanError, hash_bytes, plan, plan_yaml};
pub use render::{plan_tree, simulation_table};
pub use simulate::{
    BranchInfo, ConditionalInfo, FailurePolicyDto, LoopInfo, PolicyInfo, SimulationOutput,
    SimulationResponse, SimulationStep, simulate,
};
/// What a [`PlanError`] holds, for callers that report their own problems the same way.
pub use taskrunner_manifest::{Diagnostic, Diagnostics};
pub use value::{PlanValue, TemplatePiece};

impl Plan {
    /// The `taskrunner.plan/v1` document as a JSON value (what [`Plan::canonical_json`] encodes).
    pub fn to_json(&self) -> serde_json::Value {
        encode::plan_to_json(self)
    }

    /// The plan document pretty-printed deterministically (canonical order, 2-space indent).
    pub fn to_pretty_json(&self) -> String {
        jcs::to_pretty(&self.to_json())
    }

    /// Reads a plan back from its canonical JSON (as stored with a run). The document must
    /// re-encode to the same bytes, and hash to `expected_hash` when one is given.
    pub fn from_canonical_json(
        text: &str,
        expected_hash: Option<&str>,
    ) -> Result<Plan, DecodeError> {
        decode::decode(text, expected_hash)
    }
}
