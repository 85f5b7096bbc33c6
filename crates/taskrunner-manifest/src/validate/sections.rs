//! The `spec` sections other than steps: inputs, secrets, approvals, policies, failure,
//! sandbox, slo and outputs.

use std::collections::BTreeMap;

use super::lexical::{
    check_host_port, check_output_path, is_identifier, is_lower_id, parse_duration,
};
use super::reader::Obj;
use super::{Ctx, Validator};
use crate::codes;
use crate::model::*;
use crate::refs::UseTarget;
use crate::schema;
use crate::yaml::{Node, Value};

const INPUT_FIELDS: &[&str] = &[
    "name",
    "type",
    "required",
    "default",
    "description",
    "schema",
];
const SECRET_FIELDS: &[&str] = &["name", "description", "required"];
const APPROVAL_FIELDS: &[&str] = &[
    "id",
    "grants",
    "requiredApprovals",
    "expiresAfter",
    "reasonTemplate",
];
const POLICY_FIELDS: &[&str] = &["id", "version", "rule", "message"];
const FAILURE_FIELDS: &[&str] = &["retries", "continueOnError"];
const RETRIES_FIELDS: &[&str] = &["maxAttempts", "backoffSeconds"];
const SANDBOX_FIELDS: &[&str] = &[
    "mode",
    "egressAllowlist",
    "cpuLimitMillicores",
    "memoryLimitMiB",
    "quotaSeconds",
];
const SLO_FIELDS: &[&str] = &["runP95Seconds", "approvalP95Seconds", "maxQueueDepth"];
const OUTPUT_FIELDS: &[&str] = &["name", "type", "path", "expression"];

impl Validator {
    pub(super) fn inputs(&mut self, spec: &Obj<'_>) -> Vec<InputDef> {
        let mut out = Vec::new();
        let mut seen = BTreeMap::new();
        for (path, node) in self.list_of(spec, "inputs") {
            let Some(obj) = self.object(node, &path, INPUT_FIELDS) else {
                continue;
            };
            let before = self.diags.len();
            let name = self.req_str(&obj, "name");
            if let Some((n, pos)) = &name {
                if is_identifier(n) {
                    self.unique(&mut seen, n, obj.field_path("name"), *pos, "input");
                    self.inputs.insert(n.clone());
                } else {
                    self.error(
                        codes::INVALID_NAME,
                        obj.field_path("name"),
                        *pos,
                        format!(
                            "'{}' is not a valid input name, expected ^[A-Za-z_][A-Za-z0-9_]*$",
                            schema::excerpt(n)
                        ),
                    );
                }
            }
            let ty = match self.req_str(&obj, "type") {
                None => None,
                Some((t, pos)) => {
                    let ty = match t.as_str() {
                        "string" => Some(InputType::String),
                        "number" => Some(InputType::Number),
                        "integer" => Some(InputType::Integer),
                        "boolean" => Some(InputType::Boolean),
                        "object" => Some(InputType::Object),
                        "array" => Some(InputType::Array),
                        _ => None,
                    };
                    if ty.is_none() {
                        self.invalid_enum(
                            &obj.field_path("type"),
                            pos,
                            &t,
                            &["string", "number", "integer", "boolean", "object", "array"],
                        );
                    }
                    ty
                }
            };
            let required = self.opt_bool(&obj, "required").unwrap_or(false);
            let description = self.opt_str(&obj, "description").map(|s| s.0);
            // The default is checked against the type and schema whenever those are usable,
            // whatever else is wrong with this input (a duplicate name, say).
            let mut schema_ok = true;
            let schema_value = match obj.get("schema") {
                None => None,
                Some(node) => {
                    let path = obj.field_path("schema");
                    let value = self.json(node, &path);
                    match &value {
                        None => schema_ok = false,
                        Some(v) => {
                            if let Err(message) = schema::check_schema(v) {
                                self.error(codes::INPUT_SCHEMA_INVALID, path, node.pos, message);
                                schema_ok = false;
                            }
                        }
                    }
                    value
                }
            };
            let default = match obj.get("default") {
                None => None,
                Some(node) => {
                    let path = obj.field_path("default");
                    let value = self.json(node, &path);
                    if let (Some(v), Some(ty), true) = (&value, ty, schema_ok)
                        && let Err(problem) = schema::check_value(ty, schema_value.as_ref(), v)
                    {
                        let (schema::ValueProblem::Type(m) | schema::ValueProblem::Schema(m)) =
                            problem;
                        self.error(
                            codes::INPUT_DEFAULT_MISMATCH,
                            path,
                            node.pos,
                            format!("default {m}"),
                        );
                    }
                    value.map(|v| ty.map_or(v.clone(), |t| schema::normalize(t, v)))
                }
            };
            if let (Some(name), Some(ty), true) = (name, ty, self.diags.len() == before) {
                out.push(InputDef {
                    name: name.0,
                    ty,
                    required,
                    default,
                    description,
                    schema: schema_value,
                });
            }
        }
        out
    }

    pub(super) fn secrets(&mut self, spec: &Obj<'_>) -> Vec<SecretDef> {
        let mut out = Vec::new();
        let mut seen = BTreeMap::new();
        for (path, node) in self.list_of(spec, "secrets") {
            let Some(obj) = self.object(node, &path, SECRET_FIELDS) else {
                continue;
            };
            let name = self.req_str(&obj, "name");
            let description = self.opt_str(&obj, "description").map(|s| s.0);
            let required = self.opt_bool(&obj, "required").unwrap_or(true);
            let Some((name, pos)) = name else { continue };
            if !is_identifier(&name) {
                self.error(
                    codes::INVALID_NAME,
                    obj.field_path("name"),
                    pos,
                    format!(
                        "'{}' is not a valid secret name, expected ^[A-Za-z_][A-Za-z0-9_]*$",
                        schema::excerpt(&name)
                    ),
                );
                continue;
            }
            self.secrets.insert(name.clone());
            if self.unique(&mut seen, &name, obj.field_path("name"), pos, "secret") {
                out.push(SecretDef {
                    name,
                    description,
                    required,
                });
            }
        }
        out
    }

    pub(super) fn approvals(&mut self, spec: &Obj<'_>) -> Vec<ApprovalDef> {
        let mut out = Vec::new();
        let mut seen = BTreeMap::new();
        for (path, node) in self.list_of(spec, "approvals") {
            let Some(obj) = self.object(node, &path, APPROVAL_FIELDS) else {
                continue;
            };
            let before = self.diags.len();
            let id = self.req_str(&obj, "id");
            if let Some((id, pos)) = &id {
                if is_lower_id(id) {
                    self.unique(&mut seen, id, obj.field_path("id"), *pos, "approval id");
                } else {
                    self.error(
                        codes::INVALID_NAME,
                        obj.field_path("id"),
                        *pos,
                        format!(
                            "'{}' is not a valid approval id, expected ^[a-z0-9][a-z0-9._-]*$",
                            schema::excerpt(id)
                        ),
                    );
                }
                self.approvals.insert(id.clone());
            }
            let grants = self.string_list(&obj, "grants");
            let required_approvals = self.opt_u32(&obj, "requiredApprovals", 1).ok().flatten();
            let expires_after = self.opt_str(&obj, "expiresAfter");
            let expires_after_seconds = match &expires_after {
                None => None,
                Some((text, pos)) => {
                    let seconds = parse_duration(text);
                    if seconds.is_none() {
                        self.error(
                            codes::INVALID_DURATION,
                            obj.field_path("expiresAfter"),
                            *pos,
                            format!(
                                "'{}' is not a duration, expected a positive integer followed by s, m, h or d (e.g. 30m, 24h, 7d)",
                                schema::excerpt(text)
                            ),
                        );
                    }
                    seconds
                }
            };
            let target = UseTarget::Approval(id.as_ref().map(|i| i.0.clone()).unwrap_or_default());
            let ctx = Ctx {
                target,
                vars: Vec::new(),
            };
            let reason_template = self
                .opt_template(&obj, "reasonTemplate", &ctx)
                .ok()
                .flatten();
            if let (Some((id, _)), true) = (id, self.diags.len() == before) {
                out.push(ApprovalDef {
                    id,
                    grants,
                    required_approvals: required_approvals.unwrap_or(1),
                    expires_after_seconds,
                    expires_after: expires_after.map(|e| e.0),
                    reason_template,
                });
            }
        }
        out
    }

    pub(super) fn policies(&mut self, spec: &Obj<'_>) -> Vec<PolicyDef> {
        let mut out = Vec::new();
        let mut seen = BTreeMap::new();
        for (path, node) in self.list_of(spec, "policies") {
            let Some(obj) = self.object(node, &path, POLICY_FIELDS) else {
                continue;
            };
            let before = self.diags.len();
            let id = self.req_str(&obj, "id");
            if let Some((id, pos)) = &id {
                if id.is_empty() {
                    self.error(
                        codes::INVALID_NAME,
                        obj.field_path("id"),
                        *pos,
                        "expected a non-empty policy id".to_owned(),
                    );
                } else {
                    self.unique(&mut seen, id, obj.field_path("id"), *pos, "policy id");
                }
                self.policies.insert(id.clone());
            }
            // Lenient: `version: 2` means "2" (documented in TR-M0011).
            let version = match obj.get("version") {
                None => Some("1".to_owned()),
                Some(node) => match &node.value {
                    Value::Str(s) => Some(s.clone()),
                    Value::Int(i) => Some(i.to_string()),
                    _ => {
                        self.wrong_type(&obj.field_path("version"), node, "a string");
                        None
                    }
                },
            };
            let target = UseTarget::Policy(id.as_ref().map(|i| i.0.clone()).unwrap_or_default());
            let ctx = Ctx {
                target,
                vars: Vec::new(),
            };
            let rule = match obj.get("rule") {
                None => {
                    self.missing(&obj, "rule");
                    None
                }
                Some(node) => self.condition(node, &obj.field_path("rule"), &ctx),
            };
            let message = self.opt_template(&obj, "message", &ctx).ok().flatten();
            if let (Some((id, _)), Some(version), Some(rule), true) =
                (id, version, rule, self.diags.len() == before)
            {
                out.push(PolicyDef {
                    id,
                    version,
                    rule,
                    message,
                });
            }
        }
        out
    }

    pub(super) fn retries(&mut self, node: &Node, path: &str) -> StepRetries {
        let Some(obj) = self.object(node, path, RETRIES_FIELDS) else {
            return StepRetries::default();
        };
        StepRetries {
            max_attempts: self.opt_u32(&obj, "maxAttempts", 1).ok().flatten(),
            backoff_seconds: self.opt_u64(&obj, "backoffSeconds", 0).ok().flatten(),
        }
    }

    pub(super) fn failure(&mut self, spec: &Obj<'_>) -> FailurePolicy {
        let mut failure = FailurePolicy {
            max_attempts: 1,
            backoff_seconds: 0,
            continue_on_error: false,
        };
        let Some(node) = spec.get("failure") else {
            return failure;
        };
        let Some(obj) = self.object(node, "spec.failure", FAILURE_FIELDS) else {
            return failure;
        };
        if let Some(r) = obj.get("retries") {
            let retries = self.retries(r, "spec.failure.retries");
            failure.max_attempts = retries.max_attempts.unwrap_or(1);
            failure.backoff_seconds = retries.backoff_seconds.unwrap_or(0);
        }
        failure.continue_on_error = self.opt_bool(&obj, "continueOnError").unwrap_or(false);
        failure
    }

    pub(super) fn sandbox(&mut self, spec: &Obj<'_>) -> Sandbox {
        let mut sandbox = Sandbox {
            mode: SandboxMode::Sealed,
            egress_allowlist: Vec::new(),
            cpu_limit_millicores: None,
            memory_limit_mib: None,
            quota_seconds: None,
        };
        let Some(node) = spec.get("sandbox") else {
            return sandbox;
        };
        let Some(obj) = self.object(node, "spec.sandbox", SANDBOX_FIELDS) else {
            return sandbox;
        };
        if let Some((mode, pos)) = self.opt_str(&obj, "mode") {
            match mode.as_str() {
                "sealed" => sandbox.mode = SandboxMode::Sealed,
                "networked" => sandbox.mode = SandboxMode::Networked,
                _ => self.invalid_enum("spec.sandbox.mode", pos, &mode, &["sealed", "networked"]),
            }
        }
        if let Some(items) = self.opt_seq(&obj, "egressAllowlist") {
            for (i, item) in items.iter().enumerate() {
                let path = format!("spec.sandbox.egressAllowlist[{i}]");
                match &item.value {
                    Value::Str(s) => match check_host_port(s) {
                        Ok(()) => sandbox.egress_allowlist.push(s.clone()),
                        Err(why) => self.error(
                            codes::INVALID_HOST,
                            path,
                            item.pos,
                            format!("'{}' is not host or host:port: {why}", schema::excerpt(s)),
                        ),
                    },
                    _ => self.wrong_type(&path, item, "a string (host or host:port)"),
                }
            }
        }
        sandbox.cpu_limit_millicores = self.opt_u64(&obj, "cpuLimitMillicores", 1).ok().flatten();
        sandbox.memory_limit_mib = self.opt_u64(&obj, "memoryLimitMiB", 1).ok().flatten();
        sandbox.quota_seconds = self.opt_u64(&obj, "quotaSeconds", 1).ok().flatten();
        sandbox
    }

    pub(super) fn slo(&mut self, spec: &Obj<'_>) -> Slo {
        let Some(node) = spec.get("slo") else {
            return Slo::default();
        };
        let Some(obj) = self.object(node, "spec.slo", SLO_FIELDS) else {
            return Slo::default();
        };
        Slo {
            run_p95_seconds: self.opt_u64(&obj, "runP95Seconds", 1).ok().flatten(),
            approval_p95_seconds: self.opt_u64(&obj, "approvalP95Seconds", 1).ok().flatten(),
            max_queue_depth: self.opt_u64(&obj, "maxQueueDepth", 1).ok().flatten(),
        }
    }

    pub(super) fn outputs(&mut self, spec: &Obj<'_>) -> Vec<OutputDef> {
        let mut out = Vec::new();
        let mut seen = BTreeMap::new();
        let ctx = Ctx {
            target: UseTarget::Anywhere,
            vars: Vec::new(),
        };
        for (path, node) in self.list_of(spec, "outputs") {
            let Some(obj) = self.object(node, &path, OUTPUT_FIELDS) else {
                continue;
            };
            let before = self.diags.len();
            let name = self.req_str(&obj, "name");
            if let Some((n, pos)) = &name {
                if n.is_empty() {
                    self.error(
                        codes::INVALID_NAME,
                        obj.field_path("name"),
                        *pos,
                        "expected a non-empty output name".to_owned(),
                    );
                } else {
                    self.unique(&mut seen, n, obj.field_path("name"), *pos, "output");
                }
            }
            let source = match self.req_str(&obj, "type") {
                None => None,
                Some((t, pos)) => match t.as_str() {
                    "file" => {
                        self.not_allowed(&obj, "expression", "type is file");
                        match obj.get("path") {
                            None => {
                                self.missing(&obj, "path");
                                None
                            }
                            Some(node) => {
                                let path = obj.field_path("path");
                                let t = self.template(node, &path, &ctx);
                                if let Some(t) = &t
                                    && let Err(why) = check_output_path(t)
                                {
                                    self.error(codes::INVALID_OUTPUT_PATH, path, node.pos, why);
                                }
                                t.map(|path| OutputSource::File { path })
                            }
                        }
                    }
                    "object" => {
                        self.not_allowed(&obj, "path", "type is object");
                        match obj.get("expression") {
                            None => {
                                self.missing(&obj, "expression");
                                None
                            }
                            Some(node) => self
                                .expression(node, &obj.field_path("expression"), &ctx)
                                .map(|expression| OutputSource::Object { expression }),
                        }
                    }
                    _ => {
                        self.invalid_enum(&obj.field_path("type"), pos, &t, &["file", "object"]);
                        None
                    }
                },
            };
            if let (Some((name, _)), Some(source), true) =
                (name, source, self.diags.len() == before)
            {
                out.push(OutputDef { name, source });
            }
        }
        out
    }
}
