//! The validated manifest model (SPEC §1).
//!
//! Only validation (`crate::validate`) builds these values: `Manifest` has private fields and
//! every other type is `#[non_exhaustive]`, so code outside this crate can read a manifest but
//! never construct an unvalidated one. Expressions and templates are already parsed.

use std::collections::BTreeMap;

use taskrunner_expr::{Expression, Template};

/// Largest accepted manifest, in bytes.
pub const MANIFEST_BYTES_MAX: usize = 1024 * 1024;
/// Deepest YAML nesting accepted.
pub const YAML_DEPTH_MAX: usize = 64;
/// Expanded (alias-resolved) document size may not exceed this multiple of the input size.
pub const ALIAS_EXPANSION_FACTOR_MAX: usize = 10;
/// Upper bound of `loop.maxIterations` and of items a loop may iterate.
pub const LOOP_ITERATIONS_MAX: u64 = 10_000;
/// Default `loop.maxIterations`.
pub const LOOP_ITERATIONS_DEFAULT: u64 = 1_000;
/// A map is capped at this many items.
pub const MAP_ITEMS_MAX: u64 = 10_000;
/// Most steps a plan may hold after plan-time expansion (checked by the planner too).
pub const STEPS_MAX: usize = 50_000;

/// A validated task pack.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub(crate) metadata: Metadata,
    pub(crate) inputs: Vec<InputDef>,
    pub(crate) secrets: Vec<SecretDef>,
    pub(crate) approvals: Vec<ApprovalDef>,
    pub(crate) policies: Vec<PolicyDef>,
    pub(crate) failure: FailurePolicy,
    pub(crate) sandbox: Sandbox,
    pub(crate) slo: Slo,
    pub(crate) outputs: Vec<OutputDef>,
    pub(crate) steps: Vec<Step>,
}

impl Manifest {
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    pub fn inputs(&self) -> &[InputDef] {
        &self.inputs
    }
    pub fn secrets(&self) -> &[SecretDef] {
        &self.secrets
    }
    pub fn approvals(&self) -> &[ApprovalDef] {
        &self.approvals
    }
    pub fn approval(&self, id: &str) -> Option<&ApprovalDef> {
        self.approvals.iter().find(|a| a.id == id)
    }
    pub fn policies(&self) -> &[PolicyDef] {
        &self.policies
    }
    pub fn policy(&self, id: &str) -> Option<&PolicyDef> {
        self.policies.iter().find(|p| p.id == id)
    }
    /// The pack-wide failure policy (defaults filled in).
    pub fn failure(&self) -> &FailurePolicy {
        &self.failure
    }
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }
    pub fn slo(&self) -> &Slo {
        &self.slo
    }
    pub fn outputs(&self) -> &[OutputDef] {
        &self.outputs
    }
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub maintainers: Vec<Maintainer>,
    pub license: Option<String>,
    pub tenant_visibility: Option<TenantVisibility>,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Maintainer {
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantVisibility {
    Private,
    Public,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InputType {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
}

impl InputType {
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Number => "number",
            InputType::Integer => "integer",
            InputType::Boolean => "boolean",
            InputType::Object => "object",
            InputType::Array => "array",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InputDef {
    pub name: String,
    pub ty: InputType,
    pub required: bool,
    pub default: Option<serde_json::Value>,
    pub description: Option<String>,
    /// The inline JSON Schema (draft 2020-12), already checked to compile.
    pub schema: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SecretDef {
    pub name: String,
    pub description: Option<String>,
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ApprovalDef {
    pub id: String,
    pub grants: Vec<String>,
    pub required_approvals: u32,
    /// `expiresAfter` converted to seconds (`30m` → 1800).
    pub expires_after_seconds: Option<u64>,
    /// `expiresAfter` as written.
    pub expires_after: Option<String>,
    pub reason_template: Option<Template>,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PolicyDef {
    pub id: String,
    pub version: String,
    pub rule: Expression,
    pub message: Option<Template>,
}

/// Retry settings; at pack level both fields are filled with defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailurePolicy {
    pub max_attempts: u32,
    pub backoff_seconds: u64,
    pub continue_on_error: bool,
}

/// Step-level overrides: each field falls back to the pack's `FailurePolicy` (SPEC §8 rule 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StepRetries {
    pub max_attempts: Option<u32>,
    pub backoff_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    Sealed,
    Networked,
}

impl SandboxMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Sealed => "sealed",
            SandboxMode::Networked => "networked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sandbox {
    pub mode: SandboxMode,
    pub egress_allowlist: Vec<String>,
    pub cpu_limit_millicores: Option<u64>,
    pub memory_limit_mib: Option<u64>,
    pub quota_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Slo {
    pub run_p95_seconds: Option<u64>,
    pub approval_p95_seconds: Option<u64>,
    pub max_queue_depth: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
// Exhaustive on purpose: a new kind must be handled by every consumer.
pub enum OutputSource {
    /// `type: file` — a workspace-relative path, possibly a template.
    File { path: Template },
    /// `type: object` — evaluated when the run finishes.
    Object { expression: Expression },
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OutputDef {
    pub name: String,
    pub source: OutputSource,
}

/// A value in `with`: JSON whose strings are parsed templates.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateValue {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(Template),
    Array(Vec<TemplateValue>),
    Object(BTreeMap<String, TemplateValue>),
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Step {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub when: Option<Expression>,
    pub continue_on_error: Option<bool>,
    pub retries: StepRetries,
    pub timeout_seconds: Option<u64>,
    pub kind: StepKind,
}

#[derive(Debug, Clone, PartialEq)]
// Exhaustive on purpose: a new kind must be handled by every consumer.
pub enum StepKind {
    Run(RunStep),
    GateApproval(ApprovalGate),
    GatePolicy(PolicyGate),
    Parallel(ParallelStep),
    Map(MapStep),
    Loop(LoopStep),
    Conditional(ConditionalStep),
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunStep {
    pub uses: String,
    /// `with` entries (empty map when absent).
    pub with: BTreeMap<String, TemplateValue>,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ApprovalGate {
    pub approval_id: String,
    pub message: Option<Template>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    Abort,
    Warn,
    RequestOverride,
    Branch,
}

impl FailureAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureAction::Abort => "abort",
            FailureAction::Warn => "warn",
            FailureAction::RequestOverride => "requestOverride",
            FailureAction::Branch => "branch",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PolicyGate {
    pub policy_id: String,
    pub failure_action: FailureAction,
    pub override_approval: Option<String>,
    pub retry_count: u32,
    /// Steps run by `failureAction: branch` (empty otherwise).
    pub on_failure: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ParallelStep {
    pub steps: Vec<Step>,
    /// `None` = unlimited.
    pub max_parallel: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MapStep {
    pub items: Expression,
    pub step: Box<Step>,
    /// Default 1.
    pub max_parallel: u32,
}

#[derive(Debug, Clone, PartialEq)]
// Exhaustive on purpose: a new kind must be handled by every consumer.
pub enum LoopItems {
    Expression(Expression),
    /// `end` exclusive; `step` never 0.
    Range {
        start: i64,
        end: i64,
        step: i64,
    },
    Static(Vec<serde_json::Value>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    Collect,
    Merge,
    Last,
    First,
    None,
}

impl Aggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Collect => "collect",
            Aggregation::Merge => "merge",
            Aggregation::Last => "last",
            Aggregation::First => "first",
            Aggregation::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LoopStep {
    pub items: LoopItems,
    /// Default `item`.
    pub iterator: String,
    /// Default `index`.
    pub index: String,
    /// 1..=LOOP_ITERATIONS_MAX, default LOOP_ITERATIONS_DEFAULT.
    pub max_iterations: u64,
    pub until: Option<Expression>,
    pub aggregation: Aggregation,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Branch {
    pub when: Expression,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConditionalStep {
    pub branches: Vec<Branch>,
    pub else_steps: Vec<Step>,
    pub output_union: bool,
}
