//! The positioned YAML tree → the validated [`Manifest`] (SPEC §1, §8.1).
//!
//! Owns every manifest rule. Validation never stops at the first problem: each field, step and
//! cross-reference is checked and every problem becomes a [`Diagnostic`]; a `Manifest` is built
//! only when there are none. Expressions are parsed here and their references recorded; the
//! reference checks run at the end (`crate::refs`) when every id is known.
//!
//! Files: `reader` (typed reads from the positioned tree: mappings with known fields,
//! strings, integers, JSON values, duplicate keys), `expressions` (expressions, conditions and
//! templates, their references recorded), `sections` (the `spec` sections other than steps:
//! inputs, secrets, approvals, policies, failure, sandbox, slo, outputs), `steps` (step lists,
//! a step, its kind, run and gate steps), `containers` (map, loop and conditional steps),
//! `lexical` (identifiers, semver, durations, hosts, `uses`, output paths).

use std::collections::BTreeSet;

use serde_json::Value as Json;

use crate::codes;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::*;
use crate::refs::{Graph, ListKind, Use, UseTarget};
use crate::schema;
use crate::yaml::{Node, Pos};

mod containers;
mod expressions;
mod lexical;
mod reader;
mod sections;
mod steps;
#[cfg(test)]
mod tests;

pub(crate) use expressions::CONTEXT_ROOTS;
use lexical::{is_dns_label, is_semver};

const ROOT_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const METADATA_FIELDS: &[&str] = &[
    "name",
    "version",
    "description",
    "tags",
    "maintainers",
    "license",
    "tenantVisibility",
];
const MAINTAINER_FIELDS: &[&str] = &["name", "email"];
const SPEC_FIELDS: &[&str] = &[
    "inputs",
    "secrets",
    "approvals",
    "policies",
    "failure",
    "sandbox",
    "slo",
    "outputs",
    "steps",
];

/// Validates a YAML tree into a manifest, collecting every problem.
pub(crate) fn validate(root: &Node) -> Result<Manifest, Diagnostics> {
    let mut v = Validator::default();
    v.duplicate_keys(root, "");
    let manifest = v.manifest(root);
    v.check_references();
    let mut diags = v.diags;
    if diags.is_empty() {
        if let Some(m) = manifest {
            return Ok(m);
        }
        // Every `None` above comes with a diagnostic; keep a fallback so a gap in that
        // bookkeeping shows up as a diagnostic rather than an empty error.
        diags.push(Diagnostic {
            code: codes::INVALID_VALUE,
            path: String::new(),
            message: "manifest could not be validated".to_owned(),
            line: None,
            column: None,
        });
    }
    // Document order; diagnostics without a position go last, in the order found.
    diags.sort_by_key(|d| (d.line.is_none(), d.line, d.column));
    Err(Diagnostics(diags))
}

/// A YAML tree → plain JSON, with the manifest's rules for values: duplicate keys, integers
/// outside ±2^53 and non-finite numbers are errors (paths from the document root).
pub(crate) fn to_json(root: &Node) -> Result<Json, Diagnostics> {
    let mut v = Validator::default();
    v.duplicate_keys(root, "");
    let value = v.json(root, "");
    match value {
        Some(value) if v.diags.is_empty() => Ok(value),
        _ => {
            v.diags
                .sort_by_key(|d| (d.line.is_none(), d.line, d.column));
            Err(Diagnostics(v.diags))
        }
    }
}

/// Where an expression is evaluated: the step site (for step-order checks) and the iteration
/// variables in scope.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) target: UseTarget,
    pub(crate) vars: Vec<String>,
}

#[derive(Default)]
struct Validator {
    diags: Vec<Diagnostic>,
    graph: Graph,
    uses: Vec<Use>,
    inputs: BTreeSet<String>,
    secrets: BTreeSet<String>,
    approvals: BTreeSet<String>,
    policies: BTreeSet<String>,
    step_count: usize,
    /// Some step list or step id could not be read: "unknown step" would then be noise.
    steps_incomplete: bool,
}

impl Validator {
    fn error(&mut self, code: &'static str, path: impl Into<String>, pos: Pos, message: String) {
        let known = pos.line > 0;
        self.diags.push(Diagnostic {
            code,
            path: path.into(),
            message,
            line: known.then_some(pos.line),
            column: known.then_some(pos.column),
        });
    }

    fn wrong_type(&mut self, path: &str, node: &Node, expected: &str) {
        self.error(
            codes::WRONG_TYPE,
            path,
            node.pos,
            format!("expected {expected}, found {}", node.value.describe()),
        );
    }

    fn manifest(&mut self, root: &Node) -> Option<Manifest> {
        let obj = self.object(root, "", ROOT_FIELDS)?;
        for (key, expected) in [("apiVersion", "stellaops.io/pack.v1"), ("kind", "TaskPack")] {
            if let Some((value, pos)) = self.req_str(&obj, key)
                && value != expected
            {
                self.error(
                    codes::INVALID_VALUE,
                    key,
                    pos,
                    format!("expected '{expected}', found '{}'", schema::excerpt(&value)),
                );
            }
        }
        let metadata = match obj.get("metadata") {
            Some(node) => self.metadata(node),
            None => {
                self.missing(&obj, "metadata");
                None
            }
        };
        let spec = match obj.get("spec") {
            Some(node) => self.spec(node),
            None => {
                self.missing(&obj, "spec");
                None
            }
        };
        let metadata = metadata?;
        let spec = spec?;
        Some(Manifest {
            metadata,
            inputs: spec.inputs,
            secrets: spec.secrets,
            approvals: spec.approvals,
            policies: spec.policies,
            failure: spec.failure,
            sandbox: spec.sandbox,
            slo: spec.slo,
            outputs: spec.outputs,
            steps: spec.steps,
        })
    }

    fn metadata(&mut self, node: &Node) -> Option<Metadata> {
        let obj = self.object(node, "metadata", METADATA_FIELDS)?;
        let mut ok = true;
        let name = self.req_str(&obj, "name");
        if let Some((n, pos)) = &name
            && !is_dns_label(n)
        {
            self.error(
                codes::INVALID_NAME,
                "metadata.name",
                *pos,
                format!(
                    "'{}' is not a lowercase dns label, expected ^[a-z0-9]([a-z0-9-]{{0,61}}[a-z0-9])?$", schema::excerpt(n)
                ),
            );
            ok = false;
        }
        let version = self.req_str(&obj, "version");
        if let Some((v, pos)) = &version
            && !is_semver(v)
        {
            self.error(
                codes::INVALID_VERSION,
                "metadata.version",
                *pos,
                format!(
                    "'{}' is not a semantic version 2.0, expected for example 1.0.0",
                    schema::excerpt(v)
                ),
            );
            ok = false;
        }
        let description = self.opt_str(&obj, "description").map(|s| s.0);
        let license = self.opt_str(&obj, "license").map(|s| s.0);
        let tags = self.string_list(&obj, "tags");
        let mut maintainers = Vec::new();
        if let Some(items) = self.opt_seq(&obj, "maintainers") {
            for (i, item) in items.iter().enumerate() {
                let path = format!("metadata.maintainers[{i}]");
                if let Some(m) = self.object(item, &path, MAINTAINER_FIELDS) {
                    maintainers.push(Maintainer {
                        name: self.opt_str(&m, "name").map(|s| s.0),
                        email: self.opt_str(&m, "email").map(|s| s.0),
                    });
                }
            }
        }
        let tenant_visibility = match self.opt_str(&obj, "tenantVisibility") {
            None => None,
            Some((s, pos)) => match s.as_str() {
                "private" => Some(TenantVisibility::Private),
                "public" => Some(TenantVisibility::Public),
                _ => {
                    self.invalid_enum("metadata.tenantVisibility", pos, &s, &["private", "public"]);
                    ok = false;
                    None
                }
            },
        };
        let (name, version) = (name?, version?);
        ok.then_some(Metadata {
            name: name.0,
            version: version.0,
            description,
            tags,
            maintainers,
            license,
            tenant_visibility,
        })
    }

    fn spec(&mut self, node: &Node) -> Option<SpecParts> {
        let obj = self.object(node, "spec", SPEC_FIELDS)?;
        let before = self.diags.len();
        // Definitions first: step validation checks references against them.
        let inputs = self.inputs(&obj);
        let secrets = self.secrets(&obj);
        let approvals = self.approvals(&obj);
        let policies = self.policies(&obj);
        let failure = self.failure(&obj);
        let sandbox = self.sandbox(&obj);
        let slo = self.slo(&obj);
        let outputs = self.outputs(&obj);
        let steps = match obj.get("steps") {
            None => {
                self.missing(&obj, "steps");
                self.steps_incomplete = true;
                Vec::new()
            }
            Some(node) => {
                let list = self.graph.add_list(None, ListKind::Sequential);
                let steps = self.step_list(node, "spec.steps", list, &[]);
                if self.step_count > STEPS_MAX {
                    self.error(
                        codes::TOO_MANY_STEPS,
                        "spec.steps",
                        node.pos,
                        format!(
                            "the manifest declares {} steps, expected at most {STEPS_MAX}",
                            self.step_count
                        ),
                    );
                }
                steps.unwrap_or_default()
            }
        };
        if self.diags.len() != before {
            return None;
        }
        Some(SpecParts {
            inputs,
            secrets,
            approvals,
            policies,
            failure,
            sandbox,
            slo,
            outputs,
            steps,
        })
    }

    fn check_references(&mut self) {
        let uses = std::mem::take(&mut self.uses);
        let names = crate::refs::Names {
            inputs: &self.inputs,
            secrets: &self.secrets,
            steps_incomplete: self.steps_incomplete,
        };
        let found = self.graph.check(&uses, &names);
        self.diags.extend(found);
    }
}

struct SpecParts {
    inputs: Vec<InputDef>,
    secrets: Vec<SecretDef>,
    approvals: Vec<ApprovalDef>,
    policies: Vec<PolicyDef>,
    failure: FailurePolicy,
    sandbox: Sandbox,
    slo: Slo,
    outputs: Vec<OutputDef>,
    steps: Vec<Step>,
}
