//! The plan: the validated, resolved, canonical form of a pack plus inputs (SPEC §3).
//!
//! Only the planner builds a [`Plan`]; the engine reads it through accessors. Every field of
//! these types is hashed (see `docs/PLAN_FORMAT.md` and `encode.rs`).

use std::collections::BTreeMap;

use serde_json::Value;
use taskrunner_expr::Expression;

pub use taskrunner_manifest::{Aggregation, FailureAction, SandboxMode};

use crate::value::PlanValue;

/// The `schema` member of every plan document.
pub const PLAN_SCHEMA: &str = "taskrunner.plan/v1";

/// A plan plus its canonical bytes and hash.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) pack: PackRef,
    pub(crate) inputs: BTreeMap<String, Value>,
    pub(crate) secrets: Vec<PlanSecret>,
    pub(crate) failure: FailureDefaults,
    pub(crate) sandbox: PlanSandbox,
    pub(crate) slo: PlanSlo,
    pub(crate) approvals: Vec<PlanApproval>,
    pub(crate) policies: Vec<PlanPolicy>,
    pub(crate) steps: Vec<PlanStep>,
    pub(crate) outputs: Vec<PlanOutput>,
    pub(crate) canonical: String,
    pub(crate) hash: String,
}

impl Plan {
    pub fn pack(&self) -> &PackRef {
        &self.pack
    }
    pub fn inputs(&self) -> &BTreeMap<String, Value> {
        &self.inputs
    }
    pub fn secrets(&self) -> &[PlanSecret] {
        &self.secrets
    }
    /// The pack's `failure` section (reported as `failurePolicy`).
    pub fn failure(&self) -> &FailureDefaults {
        &self.failure
    }
    pub fn sandbox(&self) -> &PlanSandbox {
        &self.sandbox
    }
    pub fn slo(&self) -> &PlanSlo {
        &self.slo
    }
    pub fn approvals(&self) -> &[PlanApproval] {
        &self.approvals
    }
    pub fn approval(&self, id: &str) -> Option<&PlanApproval> {
        self.approvals.iter().find(|a| a.id == id)
    }
    pub fn policies(&self) -> &[PlanPolicy] {
        &self.policies
    }
    pub fn policy(&self, id: &str) -> Option<&PlanPolicy> {
        self.policies.iter().find(|p| p.id == id)
    }
    /// Top-level steps; each carries its subtree.
    pub fn steps(&self) -> &[PlanStep] {
        &self.steps
    }
    pub fn outputs(&self) -> &[PlanOutput] {
        &self.outputs
    }
    /// RFC 8785 canonical JSON of the plan (the bytes that are hashed).
    pub fn canonical_json(&self) -> &str {
        &self.canonical
    }
    /// `sha256:` + lowercase hex of the canonical bytes.
    pub fn hash(&self) -> &str {
        &self.hash
    }
    /// Every step, depth-first, parent before children (plan order).
    pub fn walk(&self) -> impl Iterator<Item = &PlanStep> {
        let mut stack: Vec<&PlanStep> = self.steps.iter().rev().collect();
        std::iter::from_fn(move || {
            let step = stack.pop()?;
            stack.extend(step.children.iter().rev());
            Some(step)
        })
    }
    /// Number of steps in the tree.
    pub fn step_count(&self) -> usize {
        self.walk().count()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PackRef {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlanSecret {
    pub name: String,
    pub required: bool,
}

/// The pack-wide failure policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailureDefaults {
    pub max_attempts: u32,
    pub backoff_seconds: u64,
    pub continue_on_error: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlanSandbox {
    pub mode: SandboxMode,
    pub egress_allowlist: Vec<String>,
    pub cpu_limit_millicores: Option<u64>,
    pub memory_limit_mib: Option<u64>,
    pub quota_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PlanSlo {
    pub run_p95_seconds: Option<u64>,
    pub approval_p95_seconds: Option<u64>,
    pub max_queue_depth: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PlanApproval {
    pub id: String,
    pub grants: Vec<String>,
    pub required_approvals: u32,
    pub expires_after_seconds: Option<u64>,
    /// The `reasonTemplate` text as written (rendered per gate into its `message`).
    pub reason_template: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PlanPolicy {
    pub id: String,
    pub version: String,
    pub rule: Expression,
    /// The `message` template text as written.
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PlanOutput {
    File {
        name: String,
        /// The path template as written (`pathExpression`).
        source: String,
        path: PlanValue,
    },
    Object {
        name: String,
        expression: Expression,
        /// The value when the expression is plan-time.
        value: Option<Value>,
    },
}

impl PlanOutput {
    pub fn name(&self) -> &str {
        match self {
            PlanOutput::File { name, .. } | PlanOutput::Object { name, .. } => name,
        }
    }
}

/// Effective retry settings of a step (step field, else pack field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retries {
    pub max_attempts: u32,
    pub backoff_seconds: u64,
}

/// One node of the plan tree.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PlanStep {
    /// Unique in the plan; `<parent>[<i>]::<templateId>` inside iterations, `[*]` in run-time templates.
    pub id: String,
    /// The manifest step id this node came from.
    pub template_id: String,
    pub name: Option<String>,
    pub enabled: bool,
    /// Why the step is disabled (`when-false`, `branch-not-taken`).
    pub status_reason: Option<String>,
    /// A `when` left for run time.
    pub when: Option<Expression>,
    /// Effective `continueOnError`.
    pub continue_on_error: bool,
    /// Effective retries (Run and GatePolicy steps).
    pub retries: Retries,
    /// Effective `timeoutSeconds`.
    pub timeout_seconds: Option<u64>,
    pub kind: PlanStepKind,
    pub children: Vec<PlanStep>,
}

/// How a map/loop gets its iterations.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Iterations {
    /// Known while planning: the items, and `children` holds `items.len() × body` steps.
    Expanded { items: Vec<Value> },
    /// Known only at run time: `children` holds one `[*]` template of the body.
    Runtime,
}

/// Where a loop's items come from, as written.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LoopSource {
    Expression(Expression),
    Range { start: i64, end: i64, step: i64 },
    Static(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PlanBranch {
    pub when: Expression,
    pub step_count: usize,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PlanStepKind {
    Run {
        uses: String,
        /// Always an object (literal or symbolic).
        with: PlanValue,
    },
    GateApproval {
        approval_id: String,
        /// The step's `message`, else the approval's `reasonTemplate`.
        message: Option<PlanValue>,
    },
    GatePolicy {
        policy_id: String,
        failure_action: FailureAction,
        override_approval: Option<String>,
        retry_count: u32,
        // `children` are the `onFailure` steps (for `branch`).
    },
    Parallel {
        max_parallel: Option<u32>,
    },
    Map {
        items: Expression,
        max_parallel: u32,
        iterations: Iterations,
        /// Steps per iteration in `children` (always 1 for a map).
        body_len: usize,
    },
    Loop {
        source: LoopSource,
        iterator: String,
        index: String,
        max_iterations: u64,
        until: Option<Expression>,
        aggregation: Aggregation,
        iterations: Iterations,
        body_len: usize,
    },
    Conditional {
        branches: Vec<PlanBranch>,
        else_step_count: usize,
        output_union: bool,
        /// Decided at plan time: index of the branch taken (`branches.len()` = `else`).
        taken: Option<usize>,
    },
}

impl PlanStepKind {
    /// The API spelling (`Run`, `GateApproval`, …).
    pub fn name(&self) -> &'static str {
        match self {
            PlanStepKind::Run { .. } => "Run",
            PlanStepKind::GateApproval { .. } => "GateApproval",
            PlanStepKind::GatePolicy { .. } => "GatePolicy",
            PlanStepKind::Parallel { .. } => "Parallel",
            PlanStepKind::Map { .. } => "Map",
            PlanStepKind::Loop { .. } => "Loop",
            PlanStepKind::Conditional { .. } => "Conditional",
        }
    }
}

impl LoopSource {
    /// `LoopInfo.itemsExpression`: expression text, `range(start,end,step)`, or compact JSON.
    pub fn display(&self) -> String {
        match self {
            LoopSource::Expression(e) => e.source().to_owned(),
            LoopSource::Range { start, end, step } => format!("range({start},{end},{step})"),
            LoopSource::Static(items) => crate::jcs::to_canonical(&Value::Array(items.clone())),
        }
    }
}
