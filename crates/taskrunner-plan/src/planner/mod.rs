//! The planner (SPEC §3): validated manifest + resolved inputs → [`Plan`].
//!
//! Plan time vs run time: an expression whose references stay within `inputs` and the
//! iteration variables bound while planning is evaluated here and its value goes into the plan;
//! anything that reads `steps`, `secrets`, `run`, the whole context, or an iteration variable of
//! a run-time map/loop stays symbolic. Map/loop items known now are expanded into iterations
//! with ids `<id>[<i>]::<templateId>`; otherwise one `<id>[*]::…` template child is kept.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use taskrunner_manifest::{Diagnostics, Manifest};

use crate::encode::plan_to_json;
use crate::jcs;
use crate::model::*;

mod context;
mod steps;

use context::{Planner, Scope};

/// Why planning failed: every problem found, with paths into the manifest or inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub Diagnostics);

impl PlanError {
    pub fn diagnostics(&self) -> &Diagnostics {
        &self.0
    }

    /// The contract's `PlanErrorResponse`: `{"errors": [{"path", "message"}]}`.
    pub fn to_response(&self) -> Value {
        let errors = self
            .0
            .iter()
            .map(|d| {
                let mut message = d.message.clone();
                if let (Some(line), Some(column)) = (d.line, d.column) {
                    message = format!("{message} (line {line}, column {column})");
                }
                serde_json::json!({"path": d.path, "message": message})
            })
            .collect();
        serde_json::json!({ "errors": Value::Array(errors) })
    }
}

impl From<Diagnostics> for PlanError {
    fn from(d: Diagnostics) -> Self {
        PlanError(d)
    }
}

/// Parses, validates and plans a manifest text with the given inputs.
pub fn plan_yaml(yaml: &str, inputs: &Map<String, Value>) -> Result<Plan, PlanError> {
    let manifest = taskrunner_manifest::parse(yaml)?;
    plan(&manifest, inputs)
}

/// Plans a validated manifest with the given (unresolved) inputs.
pub fn plan(manifest: &Manifest, inputs: &Map<String, Value>) -> Result<Plan, PlanError> {
    let inputs = taskrunner_manifest::resolve_inputs(manifest, inputs)?;
    let mut planner = Planner {
        manifest,
        inputs_value: Value::Object(inputs.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        diagnostics: Diagnostics::default(),
        step_count: 0,
    };
    for (name, value) in &inputs {
        planner.check_exact(value, &format!("inputs.{name}"));
    }
    let scope = Scope::default();
    let steps = planner.plan_steps(manifest.steps(), "spec.steps", &scope, None);
    let outputs = planner.plan_outputs();
    if !planner.diagnostics.is_empty() {
        return Err(PlanError(planner.diagnostics));
    }

    let f = manifest.failure();
    let sb = manifest.sandbox();
    let slo = manifest.slo();
    let mut plan = Plan {
        pack: PackRef {
            name: manifest.metadata().name.clone(),
            version: manifest.metadata().version.clone(),
        },
        inputs,
        secrets: manifest
            .secrets()
            .iter()
            .map(|s| PlanSecret {
                name: s.name.clone(),
                required: s.required,
            })
            .collect(),
        failure: FailureDefaults {
            max_attempts: f.max_attempts,
            backoff_seconds: f.backoff_seconds,
            continue_on_error: f.continue_on_error,
        },
        sandbox: PlanSandbox {
            mode: sb.mode,
            egress_allowlist: sb.egress_allowlist.clone(),
            cpu_limit_millicores: sb.cpu_limit_millicores,
            memory_limit_mib: sb.memory_limit_mib,
            quota_seconds: sb.quota_seconds,
        },
        slo: PlanSlo {
            run_p95_seconds: slo.run_p95_seconds,
            approval_p95_seconds: slo.approval_p95_seconds,
            max_queue_depth: slo.max_queue_depth,
        },
        approvals: manifest
            .approvals()
            .iter()
            .map(|a| PlanApproval {
                id: a.id.clone(),
                grants: a.grants.clone(),
                required_approvals: a.required_approvals,
                expires_after_seconds: a.expires_after_seconds,
                reason_template: a.reason_template.as_ref().map(|t| t.source().to_owned()),
            })
            .collect(),
        policies: manifest
            .policies()
            .iter()
            .map(|p| PlanPolicy {
                id: p.id.clone(),
                version: p.version.clone(),
                rule: p.rule.clone(),
                message: p.message.as_ref().map(|t| t.source().to_owned()),
            })
            .collect(),
        steps,
        outputs,
        canonical: String::new(),
        hash: String::new(),
    };
    seal(&mut plan);
    Ok(plan)
}

/// Computes the canonical bytes and hash of a plan.
fn seal(plan: &mut Plan) {
    let canonical = jcs::to_canonical(&plan_to_json(plan));
    plan.hash = hash_bytes(canonical.as_bytes());
    plan.canonical = canonical;
}

/// `sha256:` + lowercase hex of SHA-256(bytes).
pub fn hash_bytes(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::context::{field_path, range_items};
    use super::*;

    #[test]
    fn ranges() {
        let r = |s, e, st| {
            range_items(s, e, st, 100)
                .map(|v| v.iter().map(|x| x.as_i64().unwrap()).collect::<Vec<_>>())
        };
        assert_eq!(r(0, 3, 1), Some(vec![0, 1, 2]));
        assert_eq!(r(0, 7, 3), Some(vec![0, 3, 6]));
        assert_eq!(r(5, 0, -2), Some(vec![5, 3, 1]));
        assert_eq!(r(3, 3, 1), Some(vec![]));
        assert_eq!(r(3, 0, 1), Some(vec![]));
        assert_eq!(range_items(i64::MIN, i64::MAX, 1, 10_000), None);
    }

    #[test]
    fn hash_format() {
        let h = hash_bytes(b"abc");
        assert_eq!(
            h,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn field_paths_quote_odd_keys() {
        assert_eq!(field_path("a", "b_c"), "a.b_c");
        assert_eq!(field_path("a", "x.y"), "a[\"x.y\"]");
    }
}
