//! The semantic plan diff: what an approver needs to know about the difference between two
//! plans, by step id, with run-time templates shown as templates and secrets by name (a plan
//! never holds a secret value, so neither does its diff).
//!
//! [`diff`] compares the `taskrunner.plan/v1` documents of two plans. Every member of the
//! document is compared, so the diff is empty exactly when the canonical bytes — and hence the
//! plan hashes — are equal. The output is a [`PlanDiff`]: JSON in the versioned
//! `taskrunner.plan-diff/v1` schema (`docs/plan-diff.schema.json`, documented in
//! `docs/PLAN_DIFF.md`) and a short text, one line per change, where iterations of a map or loop
//! with the same change are grouped into one line.

mod sections;
mod show;
mod steps;

use serde_json::{Map, Value, json};

use crate::model::Plan;

/// The `schema` member of every diff document.
pub const DIFF_SCHEMA: &str = "taskrunner.plan-diff/v1";

/// Which part of the plan a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Section {
    /// `pack` (name, version).
    Pack,
    /// Resolved `inputs`, by name.
    Inputs,
    /// Declared `secrets` (names and `required`, never values).
    Secrets,
    /// The pack-wide `failure` policy.
    Failure,
    /// The `sandbox`: network mode, egress allowlist entries, CPU/memory/quota. Always
    /// security-relevant.
    Sandbox,
    /// `slo` targets.
    Slo,
    /// `approvals`: grants, required count, expiry, reason template.
    Approvals,
    /// `policies` gates: version, rule, message.
    Policies,
    /// The step tree, by step id.
    Steps,
    /// Pack `outputs`, by name.
    Outputs,
    /// Any other member of the plan document (`schema`, or a member this diff does not know).
    Document,
}

impl Section {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Pack => "pack",
            Section::Inputs => "inputs",
            Section::Secrets => "secrets",
            Section::Failure => "failure",
            Section::Sandbox => "sandbox",
            Section::Slo => "slo",
            Section::Approvals => "approvals",
            Section::Policies => "policies",
            Section::Steps => "steps",
            Section::Outputs => "outputs",
            Section::Document => "document",
        }
    }
}

/// What happened to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Only in the new plan.
    Added,
    /// Only in the old plan.
    Removed,
    /// In both, with a different value of `field`.
    Changed,
    /// A step in both, under another parent or in another order among its siblings.
    Moved,
}

impl Op {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Added => "added",
            Op::Removed => "removed",
            Op::Changed => "changed",
            Op::Moved => "moved",
        }
    }
}

/// One change. Values are in the plan document's encoding (`{"$expr": …}`,
/// `{"$template": […]}` for run-time parts); `old`/`new` are absent for added/removed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Change {
    pub section: Section,
    pub op: Op,
    /// What changed: an input, secret, approval, policy or output name, a step id (or, for a
    /// group of iterations, the id with each index written `[*]`), an egress allowlist entry;
    /// `None` for the one-object sections (pack, failure, sandbox, slo).
    pub target: Option<String>,
    /// The member that changed (`uses`, `with.image`, `retries.maxAttempts`, `grants`, …);
    /// `None` when the whole target was added, removed or moved.
    pub field: Option<String>,
    pub old: Option<Value>,
    pub new: Option<Value>,
    /// Sandbox changes, secrets, approvals, policies and approval/policy gate steps.
    pub security_relevant: bool,
    /// Step changes: the ids of the steps with this change (more than one for a group of
    /// iterations); empty for other sections.
    pub steps: Vec<String>,
    /// A group whose members do not all have the same `old`/`new`: each member's values
    /// (`old`/`new` above are the first member's).
    pub instances: Vec<Instance>,
    /// An added or removed step: how many steps below it were added or removed with it.
    pub descendants: usize,
}

/// One member of a group of changed iterations whose values differ.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Instance {
    pub step: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// One side of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiffSide {
    pub hash: String,
    pub pack_name: String,
    pub pack_version: String,
    pub step_count: usize,
}

/// The semantic difference between two plans.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PlanDiff {
    pub old: DiffSide,
    pub new: DiffSide,
    /// Empty exactly when the two plan hashes are equal.
    pub changes: Vec<Change>,
}

impl Change {
    pub(crate) fn new(section: Section, op: Op) -> Change {
        Change {
            section,
            op,
            target: None,
            field: None,
            old: None,
            new: None,
            security_relevant: matches!(
                section,
                Section::Sandbox | Section::Secrets | Section::Approvals | Section::Policies
            ),
            steps: Vec::new(),
            instances: Vec::new(),
            descendants: 0,
        }
    }

    pub(crate) fn target(mut self, target: impl Into<String>) -> Change {
        self.target = Some(target.into());
        self
    }

    pub(crate) fn field(mut self, field: impl Into<String>) -> Change {
        self.field = Some(field.into());
        self
    }

    pub(crate) fn values(mut self, old: Option<&Value>, new: Option<&Value>) -> Change {
        self.old = old.cloned();
        self.new = new.cloned();
        self
    }
}

/// The semantic diff of two plans (`old` → `new`). Pure and total: any two plans have a diff.
pub fn diff(old: &Plan, new: &Plan) -> PlanDiff {
    let changes = if old.hash() == new.hash() {
        Vec::new()
    } else {
        let (a, b) = (old.to_json(), new.to_json());
        let mut changes = sections::diff_documents(&a, &b);
        if changes.is_empty() {
            // Unreachable when every member is compared; kept so that a diff of two different
            // plans is never reported as "no change".
            changes.push(
                Change::new(Section::Document, Op::Changed)
                    .field("plan")
                    .values(Some(&json!(old.hash())), Some(&json!(new.hash()))),
            );
        }
        changes
    };
    PlanDiff {
        old: side(old),
        new: side(new),
        changes,
    }
}

fn side(plan: &Plan) -> DiffSide {
    DiffSide {
        hash: plan.hash().to_owned(),
        pack_name: plan.pack().name.clone(),
        pack_version: plan.pack().version.clone(),
        step_count: plan.step_count(),
    }
}

impl PlanDiff {
    /// True when the plans are the same (equal hashes).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// True when a change is security-relevant.
    pub fn security_relevant(&self) -> bool {
        self.changes.iter().any(|c| c.security_relevant)
    }

    /// The `taskrunner.plan-diff/v1` document (`docs/plan-diff.schema.json`).
    pub fn to_json(&self) -> Value {
        json!({
            "schema": DIFF_SCHEMA,
            "old": side_json(&self.old),
            "new": side_json(&self.new),
            "identical": self.is_empty(),
            "securityRelevant": self.security_relevant(),
            "summary": self.summary_json(),
            "changes": self.changes.iter().map(change_json).collect::<Vec<_>>(),
        })
    }

    /// The human text: `no change`, or one line per change (a group of iterations with the
    /// same change is one line).
    pub fn to_text(&self) -> String {
        show::text(self)
    }

    fn summary_json(&self) -> Value {
        let count = |op: Op| self.changes.iter().filter(|c| c.op == op).count();
        json!({
            "changes": self.changes.len(),
            "added": count(Op::Added),
            "removed": count(Op::Removed),
            "changed": count(Op::Changed),
            "moved": count(Op::Moved),
            "securityRelevant": self.changes.iter().filter(|c| c.security_relevant).count(),
        })
    }
}

fn side_json(side: &DiffSide) -> Value {
    json!({
        "planHash": side.hash,
        "pack": {"name": side.pack_name, "version": side.pack_version},
        "stepCount": side.step_count,
    })
}

fn change_json(c: &Change) -> Value {
    let mut m = Map::new();
    m.insert("section".into(), json!(c.section.as_str()));
    m.insert("op".into(), json!(c.op.as_str()));
    if let Some(t) = &c.target {
        m.insert("target".into(), json!(t));
    }
    if let Some(f) = &c.field {
        m.insert("field".into(), json!(f));
    }
    if let Some(v) = &c.old {
        m.insert("old".into(), v.clone());
        m.insert("oldText".into(), json!(show::value(v)));
    }
    if let Some(v) = &c.new {
        m.insert("new".into(), v.clone());
        m.insert("newText".into(), json!(show::value(v)));
    }
    m.insert("securityRelevant".into(), json!(c.security_relevant));
    if !c.steps.is_empty() {
        m.insert("steps".into(), json!(c.steps));
    }
    if !c.instances.is_empty() {
        m.insert(
            "instances".into(),
            Value::Array(
                c.instances
                    .iter()
                    .map(|i| {
                        let mut m = Map::new();
                        m.insert("step".into(), json!(i.step));
                        if let Some(v) = &i.old {
                            m.insert("old".into(), v.clone());
                        }
                        if let Some(v) = &i.new {
                            m.insert("new".into(), v.clone());
                        }
                        Value::Object(m)
                    })
                    .collect(),
            ),
        );
    }
    if c.descendants > 0 {
        m.insert("descendants".into(), json!(c.descendants));
    }
    Value::Object(m)
}
