//! The positioned YAML tree → the validated [`Manifest`] (SPEC §1, §8.1).
//!
//! Owns every manifest rule. Validation never stops at the first problem: each field, step and
//! cross-reference is checked and every problem becomes a [`Diagnostic`]; a `Manifest` is built
//! only when there are none. Expressions are parsed here and their references recorded; the
//! reference checks run at the end (`crate::refs`) when every id is known.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;
use taskrunner_expr::{Expression, ParseError, References, Template, TemplatePart};

use crate::codes;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::*;
use crate::refs::{Graph, ListKind, Site, Use, UseTarget};
use crate::schema;
use crate::suggest;
use crate::yaml::{Entry, Node, Pos, Value};

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
const KIND_KEYS: &[&str] = &["run", "gate", "parallel", "map", "loop", "conditional"];
const STEP_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "when",
    "continueOnError",
    "retries",
    "timeoutSeconds",
    "run",
    "gate",
    "parallel",
    "map",
    "loop",
    "conditional",
];
const RUN_FIELDS: &[&str] = &["uses", "with"];
const GATE_FIELDS: &[&str] = &["approval", "policy"];
const GATE_APPROVAL_FIELDS: &[&str] = &["id", "message"];
const GATE_POLICY_FIELDS: &[&str] = &[
    "policy",
    "failureAction",
    "overrideApproval",
    "retryCount",
    "onFailure",
];
const PARALLEL_FIELDS: &[&str] = &["steps", "maxParallel", "continueOnError"];
const MAP_FIELDS: &[&str] = &["items", "step", "maxParallel"];
const LOOP_FIELDS: &[&str] = &[
    "items",
    "iterator",
    "index",
    "maxIterations",
    "until",
    "aggregation",
    "steps",
];
const LOOP_ITEMS_FIELDS: &[&str] = &["expression", "range", "static"];
const RANGE_FIELDS: &[&str] = &["start", "end", "step"];
const CONDITIONAL_FIELDS: &[&str] = &["branches", "else", "outputUnion"];
const BRANCH_FIELDS: &[&str] = &["when", "steps"];

/// The context roots every expression may read (SPEC §2).
pub(crate) const CONTEXT_ROOTS: &[&str] = &["inputs", "secrets", "steps", "run"];

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

/// A mapping node with its known fields checked.
struct Obj<'a> {
    path: String,
    pos: Pos,
    entries: BTreeMap<&'a str, &'a Entry>,
}

impl<'a> Obj<'a> {
    fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .get(key)
            .map(|e| &e.value)
            .filter(|n| n.value != Value::Null)
    }
    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
    fn field_path(&self, key: &str) -> String {
        join(&self.path, key)
    }
    fn key_pos(&self, key: &str) -> Pos {
        self.entries.get(key).map_or(self.pos, |e| e.key_pos)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
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

    /// Reports every repeated mapping key (the tree keeps the first occurrence) at its path.
    fn duplicate_keys(&mut self, root: &Node, path: &str) {
        let mut reported = BTreeSet::new();
        self.duplicate_keys_in(root, path, &mut reported);
    }

    fn duplicate_keys_in(&mut self, node: &Node, path: &str, reported: &mut BTreeSet<(u32, u32)>) {
        if let Value::Map(entries) = &node.value {
            for dup in &node.duplicates {
                // An anchored mapping replayed by aliases is reported once, at its first path.
                if dup.key_pos.line > 0 && !reported.insert((dup.key_pos.line, dup.key_pos.column))
                {
                    continue;
                }
                let first = entries
                    .iter()
                    .find(|e| e.key == dup.key)
                    .map(|e| e.key_pos)
                    .filter(|p| p.line > 0)
                    .map_or_else(String::new, |p| {
                        format!(" (first at line {}, column {})", p.line, p.column)
                    });
                self.error(
                    codes::DUPLICATE_KEY,
                    join(path, &dup.key),
                    dup.key_pos,
                    format!(
                        "duplicate mapping key '{}'{first}",
                        schema::excerpt(&dup.key)
                    ),
                );
            }
            for entry in entries {
                self.duplicate_keys_in(&entry.value, &join(path, &entry.key), reported);
            }
        } else if let Value::Seq(items) = &node.value {
            for (i, item) in items.iter().enumerate() {
                self.duplicate_keys_in(item, &format!("{path}[{i}]"), reported);
            }
        }
    }

    // ---- generic readers -------------------------------------------------------------------

    fn object<'a>(&mut self, node: &'a Node, path: &str, known: &[&str]) -> Option<Obj<'a>> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(path, node, "a mapping");
            return None;
        };
        let mut map = BTreeMap::new();
        for entry in entries {
            if known.contains(&entry.key.as_str()) {
                map.insert(entry.key.as_str(), entry);
            } else {
                let hint = if entry.key == "<<" {
                    " (YAML merge keys are not supported; use anchors and aliases)".to_owned()
                } else {
                    suggest::hint(&entry.key, known.iter().copied())
                };
                self.error(
                    codes::UNKNOWN_FIELD,
                    join(path, &entry.key),
                    entry.key_pos,
                    format!("unknown field '{}'{hint}", schema::excerpt(&entry.key)),
                );
            }
        }
        Some(Obj {
            path: path.to_owned(),
            pos: node.pos,
            entries: map,
        })
    }

    fn missing(&mut self, obj: &Obj<'_>, key: &str) {
        self.error(
            codes::MISSING_FIELD,
            obj.field_path(key),
            obj.pos,
            format!("missing required field '{key}'"),
        );
    }

    fn opt_str(&mut self, obj: &Obj<'_>, key: &str) -> Option<(String, Pos)> {
        let node = obj.get(key)?;
        match &node.value {
            Value::Str(s) => Some((s.clone(), node.pos)),
            _ => {
                self.wrong_type(&obj.field_path(key), node, "a string");
                None
            }
        }
    }

    fn req_str(&mut self, obj: &Obj<'_>, key: &str) -> Option<(String, Pos)> {
        if !obj.has(key) {
            self.missing(obj, key);
            return None;
        }
        self.opt_str(obj, key)
    }

    fn opt_bool(&mut self, obj: &Obj<'_>, key: &str) -> Option<bool> {
        let node = obj.get(key)?;
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong_type(&obj.field_path(key), node, "a boolean (true or false)");
                None
            }
        }
    }

    /// An integer in `min..=max`. `Err(())` = present but invalid (already reported).
    fn opt_int(&mut self, obj: &Obj<'_>, key: &str, min: i64, max: i64) -> Result<Option<i64>, ()> {
        let Some(node) = obj.get(key) else {
            return Ok(None);
        };
        let path = obj.field_path(key);
        let i = match &node.value {
            Value::Int(i) => *i,
            Value::BigInt(text) => {
                self.big_int(text, &path, node.pos);
                return Err(());
            }
            _ => {
                self.wrong_type(&path, node, "an integer");
                return Err(());
            }
        };
        if i < i128::from(min) || i > i128::from(max) {
            let expected = if max == i64::MAX || i128::from(max) >= schema::INTEGER_ABS_MAX {
                format!("an integer ≥ {min}")
            } else {
                format!("an integer between {min} and {max}")
            };
            self.error(
                codes::OUT_OF_RANGE,
                path,
                node.pos,
                format!("expected {expected}, found {i}"),
            );
            return Err(());
        }
        // In range of an i64 by the check above.
        Ok(i64::try_from(i).ok())
    }

    fn opt_u32(&mut self, obj: &Obj<'_>, key: &str, min: u32) -> Result<Option<u32>, ()> {
        Ok(self
            .opt_int(obj, key, i64::from(min), i64::from(u32::MAX))?
            .and_then(|i| u32::try_from(i).ok()))
    }

    fn opt_u64(&mut self, obj: &Obj<'_>, key: &str, min: u64) -> Result<Option<u64>, ()> {
        let min = i64::try_from(min).unwrap_or(i64::MAX);
        Ok(self
            .opt_int(
                obj,
                key,
                min,
                i64::try_from(schema::INTEGER_ABS_MAX).unwrap_or(i64::MAX),
            )?
            .and_then(|i| u64::try_from(i).ok()))
    }

    fn opt_seq<'a>(&mut self, obj: &Obj<'a>, key: &str) -> Option<&'a [Node]> {
        let node = obj.get(key)?;
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.wrong_type(&obj.field_path(key), node, "a sequence");
                None
            }
        }
    }

    fn string_list(&mut self, obj: &Obj<'_>, key: &str) -> Vec<String> {
        let Some(items) = self.opt_seq(obj, key) else {
            return Vec::new();
        };
        let path = obj.field_path(key);
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match &item.value {
                Value::Str(s) => out.push(s.clone()),
                _ => self.wrong_type(&format!("{path}[{i}]"), item, "a string"),
            }
        }
        out
    }

    /// YAML → JSON, rejecting integers outside ±2^53.
    fn json(&mut self, node: &Node, path: &str) -> Option<Json> {
        Some(match &node.value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::Number(self.int_number(*i, path, node.pos)?),
            Value::BigInt(text) => {
                self.big_int(text, path, node.pos);
                return None;
            }
            Value::Float(f) => Json::Number(self.float_number(*f, path, node.pos)?),
            Value::Str(s) => Json::String(s.clone()),
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.json(item, &format!("{path}[{i}]")) {
                        Some(v) => out.push(v),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                Json::Array(out)
            }
            Value::Map(entries) => {
                let mut out = serde_json::Map::new();
                let mut ok = true;
                for entry in entries {
                    match self.json(&entry.value, &join(path, &entry.key)) {
                        Some(v) => {
                            out.insert(entry.key.clone(), v);
                        }
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                Json::Object(out)
            }
        })
    }

    fn int_number(&mut self, i: i128, path: &str, pos: Pos) -> Option<serde_json::Number> {
        if i.abs() > schema::INTEGER_ABS_MAX {
            self.big_int(&i.to_string(), path, pos);
            return None;
        }
        i64::try_from(i).ok().map(serde_json::Number::from)
    }

    /// An integer literal outside ±2^53 (SPEC §8.1 rule 6).
    fn big_int(&mut self, text: &str, path: &str, pos: Pos) {
        self.error(
            codes::OUT_OF_RANGE,
            path,
            pos,
            format!(
                "integer {} is outside the range ±2^53 (9007199254740992)",
                schema::excerpt(text)
            ),
        );
    }

    /// A finite float; `.inf`, `.nan` and literals such as `1e400` are reported.
    fn float_number(&mut self, f: f64, path: &str, pos: Pos) -> Option<serde_json::Number> {
        let number = serde_json::Number::from_f64(f);
        if number.is_none() {
            self.error(
                codes::OUT_OF_RANGE,
                path,
                pos,
                format!(
                    "{} is not a finite number, expected a finite number",
                    crate::yaml::float_text(f)
                ),
            );
        }
        number
    }

    // ---- expressions and templates ---------------------------------------------------------

    fn record(&mut self, refs: References, path: &str, pos: Pos, ctx: &Ctx) {
        self.uses.push(Use {
            refs,
            path: path.to_owned(),
            pos,
            target: ctx.target.clone(),
            vars: ctx.vars.clone(),
        });
    }

    fn expr_error(&mut self, path: &str, pos: Pos, what: &str, e: &ParseError) {
        let code = if what == "template" {
            codes::TEMPLATE_SYNTAX
        } else {
            codes::EXPR_SYNTAX
        };
        self.error(
            code,
            path,
            pos,
            format!(
                "invalid {what} at offset {}: {}",
                e.offset,
                schema::lowercase_first(&e.message)
            ),
        );
    }

    /// A condition-like expression: a bare expression, a YAML boolean, or a string that is
    /// exactly one `{{ }}` template.
    fn condition(&mut self, node: &Node, path: &str, ctx: &Ctx) -> Option<Expression> {
        let expr = match &node.value {
            Value::Bool(b) => {
                let text = if *b { "`true`" } else { "`false`" };
                match Expression::parse(text) {
                    Ok(e) => e,
                    Err(e) => {
                        self.expr_error(path, node.pos, "expression", &e);
                        return None;
                    }
                }
            }
            Value::Str(s) => self.expression_text(s, path, node.pos)?,
            _ => {
                self.wrong_type(path, node, "an expression string");
                return None;
            }
        };
        self.record(expr.references(), path, node.pos, ctx);
        Some(expr)
    }

    /// Parses a bare expression, or a string that is exactly one `{{ }}` template.
    fn expression_text(&mut self, s: &str, path: &str, pos: Pos) -> Option<Expression> {
        let trimmed = s.trim();
        if trimmed.starts_with("{{") && trimmed.ends_with("}}") {
            match Template::parse(s) {
                Ok(t) => match t.single_expression() {
                    Some(e) => return Some(e.clone()),
                    None => {
                        self.error(
                            codes::EXPR_SYNTAX,
                            path,
                            pos,
                            "expected a bare expression or exactly one {{ }} template".to_owned(),
                        );
                        return None;
                    }
                },
                Err(e) => {
                    self.expr_error(path, pos, "template", &e);
                    return None;
                }
            }
        }
        match Expression::parse(s) {
            Ok(e) => Some(e),
            Err(e) => {
                self.expr_error(path, pos, "expression", &e);
                None
            }
        }
    }

    fn expression(&mut self, node: &Node, path: &str, ctx: &Ctx) -> Option<Expression> {
        let Value::Str(s) = &node.value else {
            self.wrong_type(path, node, "an expression string");
            return None;
        };
        let expr = self.expression_text(s, path, node.pos)?;
        self.record(expr.references(), path, node.pos, ctx);
        Some(expr)
    }

    fn template_str(&mut self, s: &str, path: &str, pos: Pos, ctx: &Ctx) -> Option<Template> {
        match Template::parse(s) {
            Ok(t) => {
                let mut refs = References::default();
                for part in t.parts() {
                    if let TemplatePart::Expr(e) = part {
                        let r = e.references();
                        refs.paths.extend(r.paths);
                        refs.whole_root |= r.whole_root;
                    }
                }
                if !refs.paths.is_empty() || refs.whole_root {
                    self.record(refs, path, pos, ctx);
                }
                Some(t)
            }
            Err(e) => {
                self.expr_error(path, pos, "template", &e);
                None
            }
        }
    }

    fn template(&mut self, node: &Node, path: &str, ctx: &Ctx) -> Option<Template> {
        let Value::Str(s) = &node.value else {
            self.wrong_type(path, node, "a template string");
            return None;
        };
        self.template_str(s, path, node.pos, ctx)
    }

    fn opt_template(
        &mut self,
        obj: &Obj<'_>,
        key: &str,
        ctx: &Ctx,
    ) -> Result<Option<Template>, ()> {
        match obj.get(key) {
            None => Ok(None),
            Some(node) => self
                .template(node, &obj.field_path(key), ctx)
                .map(Some)
                .ok_or(()),
        }
    }

    fn template_value(&mut self, node: &Node, path: &str, ctx: &Ctx) -> Option<TemplateValue> {
        Some(match &node.value {
            Value::Null => TemplateValue::Null,
            Value::Bool(b) => TemplateValue::Bool(*b),
            Value::Int(i) => TemplateValue::Number(self.int_number(*i, path, node.pos)?),
            Value::BigInt(text) => {
                self.big_int(text, path, node.pos);
                return None;
            }
            Value::Float(f) => TemplateValue::Number(self.float_number(*f, path, node.pos)?),
            Value::Str(s) => TemplateValue::String(self.template_str(s, path, node.pos, ctx)?),
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.template_value(item, &format!("{path}[{i}]"), ctx) {
                        Some(v) => out.push(v),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                TemplateValue::Array(out)
            }
            Value::Map(entries) => {
                let mut out = BTreeMap::new();
                let mut ok = true;
                for entry in entries {
                    match self.template_value(&entry.value, &join(path, &entry.key), ctx) {
                        Some(v) => {
                            out.insert(entry.key.clone(), v);
                        }
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                TemplateValue::Object(out)
            }
        })
    }

    // ---- the document ----------------------------------------------------------------------

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

    fn invalid_enum(&mut self, path: &str, pos: Pos, found: &str, allowed: &[&str]) {
        let hint = suggest::hint(found, allowed.iter().copied());
        self.error(
            codes::INVALID_VALUE,
            path,
            pos,
            format!(
                "expected one of {}, found '{}'{hint}",
                allowed.join(", "),
                schema::excerpt(found)
            ),
        );
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

    /// Reports a duplicate name; returns whether `name` was new.
    fn unique(
        &mut self,
        seen: &mut BTreeMap<String, String>,
        name: &str,
        path: String,
        pos: Pos,
        what: &str,
    ) -> bool {
        if let Some(first) = seen.get(name) {
            let message = format!(
                "duplicate {what} '{}' (first defined at {first})",
                schema::excerpt(name)
            );
            self.error(codes::DUPLICATE_NAME, path, pos, message);
            false
        } else {
            seen.insert(name.to_owned(), path);
            true
        }
    }

    fn list_of<'a>(&mut self, obj: &Obj<'a>, key: &str) -> Vec<(String, &'a Node)> {
        let Some(items) = self.opt_seq(obj, key) else {
            return Vec::new();
        };
        let base = obj.field_path(key);
        items
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("{base}[{i}]"), n))
            .collect()
    }

    fn inputs(&mut self, spec: &Obj<'_>) -> Vec<InputDef> {
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

    fn secrets(&mut self, spec: &Obj<'_>) -> Vec<SecretDef> {
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

    fn approvals(&mut self, spec: &Obj<'_>) -> Vec<ApprovalDef> {
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

    fn policies(&mut self, spec: &Obj<'_>) -> Vec<PolicyDef> {
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

    fn retries(&mut self, node: &Node, path: &str) -> StepRetries {
        let Some(obj) = self.object(node, path, RETRIES_FIELDS) else {
            return StepRetries::default();
        };
        StepRetries {
            max_attempts: self.opt_u32(&obj, "maxAttempts", 1).ok().flatten(),
            backoff_seconds: self.opt_u64(&obj, "backoffSeconds", 0).ok().flatten(),
        }
    }

    fn failure(&mut self, spec: &Obj<'_>) -> FailurePolicy {
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

    fn sandbox(&mut self, spec: &Obj<'_>) -> Sandbox {
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

    fn slo(&mut self, spec: &Obj<'_>) -> Slo {
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

    fn outputs(&mut self, spec: &Obj<'_>) -> Vec<OutputDef> {
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

    fn not_allowed(&mut self, obj: &Obj<'_>, key: &str, when: &str) {
        if obj.entries.contains_key(key) {
            self.error(
                codes::UNKNOWN_FIELD,
                obj.field_path(key),
                obj.key_pos(key),
                format!("field '{key}' is not allowed when {when}"),
            );
        }
    }

    // ---- steps -----------------------------------------------------------------------------

    /// A required, non-empty step list.
    fn step_list(
        &mut self,
        node: &Node,
        path: &str,
        list: usize,
        vars: &[String],
    ) -> Option<Vec<Step>> {
        let Value::Seq(items) = &node.value else {
            self.steps_incomplete = true;
            self.wrong_type(path, node, "a sequence of steps");
            return None;
        };
        if items.is_empty() {
            self.error(
                codes::MISSING_FIELD,
                path,
                node.pos,
                "expected at least one step".to_owned(),
            );
            return None;
        }
        let mut steps = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            match self.step(item, &format!("{path}[{i}]"), list, index, vars) {
                Some(s) => steps.push(s),
                None => ok = false,
            }
        }
        ok.then_some(steps)
    }

    fn req_step_list(
        &mut self,
        obj: &Obj<'_>,
        key: &str,
        list: usize,
        vars: &[String],
    ) -> Option<Vec<Step>> {
        match obj.get(key) {
            None => {
                self.missing(obj, key);
                None
            }
            Some(node) => self.step_list(node, &obj.field_path(key), list, vars),
        }
    }

    fn step(
        &mut self,
        node: &Node,
        path: &str,
        list: usize,
        index: u32,
        vars: &[String],
    ) -> Option<Step> {
        self.step_count += 1;
        let Some(obj) = self.object(node, path, STEP_FIELDS) else {
            self.steps_incomplete = true;
            return None;
        };
        let before = self.diags.len();
        let id = self.req_str(&obj, "id");
        if id.as_ref().is_none_or(|(id, _)| !is_step_id(id)) {
            self.steps_incomplete = true;
        }
        let me = self.graph.add_step(list, index);
        if let Some((id, pos)) = &id {
            if !is_step_id(id) {
                self.error(
                    codes::INVALID_NAME,
                    obj.field_path("id"),
                    *pos,
                    format!(
                        "'{}' is not a valid step id, expected ^[A-Za-z0-9][A-Za-z0-9_-]*$",
                        schema::excerpt(id)
                    ),
                );
            } else if let Some(first) = self.graph.register_id(me, id, obj.field_path("id")) {
                self.error(
                    codes::DUPLICATE_STEP_ID,
                    obj.field_path("id"),
                    *pos,
                    format!(
                        "duplicate step id '{}' (first defined at {first})",
                        schema::excerpt(id)
                    ),
                );
            }
        }
        let site = Site { list, index };
        let ctx = Ctx {
            target: UseTarget::Step(site),
            vars: vars.to_vec(),
        };
        let name = self.opt_str(&obj, "name").map(|s| s.0);
        let description = self.opt_str(&obj, "description").map(|s| s.0);
        let when = obj.get("when").and_then(|n| {
            // A map/loop `when` is evaluated once, before the items, without the iteration
            // variables (SPEC §8.1 rule 10) — which is exactly the enclosing scope.
            self.condition(n, &obj.field_path("when"), &ctx)
        });
        let mut continue_on_error = self.opt_bool(&obj, "continueOnError");
        let retries = obj
            .get("retries")
            .map(|n| self.retries(n, &obj.field_path("retries")))
            .unwrap_or_default();
        let timeout_seconds = self.opt_u64(&obj, "timeoutSeconds", 1).ok().flatten();

        let present: Vec<&str> = KIND_KEYS
            .iter()
            .copied()
            .filter(|k| obj.entries.contains_key(k))
            .collect();
        let kind = match present.as_slice() {
            [] => {
                self.error(
                    codes::EXACTLY_ONE,
                    path,
                    node.pos,
                    format!(
                        "a step needs exactly one of {}, found none",
                        KIND_KEYS.join(", ")
                    ),
                );
                None
            }
            [key] => self.step_kind(&obj, key, me, &ctx, &mut continue_on_error),
            [first, rest @ ..] => {
                // Still check what each kind holds: one extra key must not hide the rest.
                for key in &present {
                    self.step_kind(&obj, key, me, &ctx, &mut continue_on_error);
                }
                for key in rest {
                    self.error(
                        codes::EXACTLY_ONE,
                        obj.field_path(key),
                        obj.key_pos(key),
                        format!(
                            "a step needs exactly one kind key, found both '{first}' and '{key}'"
                        ),
                    );
                }
                None
            }
        };
        let (Some((id, _)), Some(kind)) = (id, kind) else {
            return None;
        };
        (self.diags.len() == before).then_some(Step {
            id,
            name,
            description,
            when,
            continue_on_error,
            retries,
            timeout_seconds,
            kind,
        })
    }

    fn step_kind(
        &mut self,
        step: &Obj<'_>,
        key: &str,
        me: usize,
        ctx: &Ctx,
        continue_on_error: &mut Option<bool>,
    ) -> Option<StepKind> {
        let node = step
            .get(key)
            .or_else(|| step.entries.get(key).map(|e| &e.value))?;
        let path = step.field_path(key);
        match key {
            "run" => self.run(node, &path, ctx).map(StepKind::Run),
            "gate" => self.gate(node, &path, me, ctx),
            "parallel" => {
                let obj = self.object(node, &path, PARALLEL_FIELDS)?;
                // An invalid maxParallel is reported; the steps are still checked.
                let max_parallel = self.opt_u32(&obj, "maxParallel", 1);
                if let Some(inner) = self.opt_bool(&obj, "continueOnError") {
                    if continue_on_error.is_some_and(|outer| outer != inner) {
                        self.error(
                            codes::INVALID_VALUE,
                            obj.field_path("continueOnError"),
                            obj.key_pos("continueOnError"),
                            "continueOnError is set on the step and in parallel with different values, expected one of them".to_owned(),
                        );
                    }
                    *continue_on_error = Some(inner);
                }
                let list = self.graph.add_list(Some(me), ListKind::Parallel);
                let steps = self.req_step_list(&obj, "steps", list, &ctx.vars)?;
                Some(StepKind::Parallel(ParallelStep {
                    steps,
                    max_parallel: max_parallel.ok()?,
                }))
            }
            "map" => self.map(node, &path, me, ctx).map(StepKind::Map),
            "loop" => self.loop_step(node, &path, me, ctx).map(StepKind::Loop),
            "conditional" => self
                .conditional(node, &path, me, ctx)
                .map(StepKind::Conditional),
            _ => None,
        }
    }

    fn run(&mut self, node: &Node, path: &str, ctx: &Ctx) -> Option<RunStep> {
        let obj = self.object(node, path, RUN_FIELDS)?;
        let uses = self.req_str(&obj, "uses");
        let mut ok = true;
        if let Some((uses, pos)) = &uses
            && let Err(why) = check_uses(uses)
        {
            // `with` is still checked.
            self.error(codes::INVALID_USES, obj.field_path("uses"), *pos, why);
            ok = false;
        }
        let mut with = BTreeMap::new();
        if let Some(node) = obj.get("with") {
            let with_path = obj.field_path("with");
            match &node.value {
                Value::Map(entries) => {
                    for entry in entries {
                        match self.template_value(&entry.value, &join(&with_path, &entry.key), ctx)
                        {
                            Some(v) => {
                                with.insert(entry.key.clone(), v);
                            }
                            None => ok = false,
                        }
                    }
                }
                _ => {
                    self.wrong_type(&with_path, node, "a mapping");
                    ok = false;
                }
            }
        }
        let (uses, _) = uses?;
        ok.then_some(RunStep { uses, with })
    }

    fn gate(&mut self, node: &Node, path: &str, me: usize, ctx: &Ctx) -> Option<StepKind> {
        let obj = self.object(node, path, GATE_FIELDS)?;
        // Each gate kind present is checked, even when both are (that is reported below).
        let approval = obj
            .entries
            .get("approval")
            .map(|e| self.approval_gate(&e.value, &obj.field_path("approval"), ctx));
        let policy = obj
            .entries
            .get("policy")
            .map(|e| self.policy_gate(&e.value, &obj.field_path("policy"), me, ctx));
        match (approval, policy) {
            (Some(approval), None) => approval.map(StepKind::GateApproval),
            (None, Some(policy)) => policy.map(StepKind::GatePolicy),
            (approval, _) => {
                let message = if approval.is_some() {
                    "a gate needs exactly one of approval, policy, found both"
                } else {
                    "a gate needs exactly one of approval, policy, found none"
                };
                self.error(codes::EXACTLY_ONE, path, node.pos, message.to_owned());
                None
            }
        }
    }

    fn approval_gate(&mut self, node: &Node, path: &str, ctx: &Ctx) -> Option<ApprovalGate> {
        let a = self.object(node, path, GATE_APPROVAL_FIELDS)?;
        let id = self.req_str(&a, "id");
        if let Some((id, pos)) = &id {
            self.approval_ref(id, &a.field_path("id"), *pos, ctx);
        }
        let message = self.opt_template(&a, "message", ctx).ok()?;
        let (approval_id, _) = id?;
        Some(ApprovalGate {
            approval_id,
            message,
        })
    }

    fn approval_ref(&mut self, id: &str, path: &str, pos: Pos, ctx: &Ctx) -> bool {
        if self.approvals.contains(id) {
            self.uses.push(Use {
                refs: References::default(),
                path: path.to_owned(),
                pos,
                target: UseTarget::GateUsesApproval(id.to_owned(), Box::new(ctx.target.clone())),
                vars: ctx.vars.clone(),
            });
            true
        } else {
            let hint = suggest::hint(id, self.approvals.iter().map(String::as_str));
            self.error(
                codes::UNKNOWN_APPROVAL,
                path,
                pos,
                format!(
                    "unknown approval '{}', expected an id from spec.approvals{hint}",
                    schema::excerpt(id)
                ),
            );
            false
        }
    }

    fn policy_gate(&mut self, node: &Node, path: &str, me: usize, ctx: &Ctx) -> Option<PolicyGate> {
        let obj = self.object(node, path, GATE_POLICY_FIELDS)?;
        let before = self.diags.len();
        let policy = self.req_str(&obj, "policy");
        if let Some((id, pos)) = &policy {
            if self.policies.contains(id) {
                self.uses.push(Use {
                    refs: References::default(),
                    path: obj.field_path("policy"),
                    pos: *pos,
                    target: UseTarget::GateUsesPolicy(id.clone(), Box::new(ctx.target.clone())),
                    vars: ctx.vars.clone(),
                });
            } else {
                let hint = suggest::hint(id, self.policies.iter().map(String::as_str));
                self.error(
                    codes::UNKNOWN_POLICY,
                    obj.field_path("policy"),
                    *pos,
                    format!(
                        "unknown policy '{}', expected an id from spec.policies{hint}",
                        schema::excerpt(id)
                    ),
                );
            }
        }
        let failure_action = match self.opt_str(&obj, "failureAction") {
            None => FailureAction::Abort,
            Some((a, pos)) => match a.as_str() {
                "abort" => FailureAction::Abort,
                "warn" => FailureAction::Warn,
                "requestOverride" => FailureAction::RequestOverride,
                "branch" => FailureAction::Branch,
                _ => {
                    self.invalid_enum(
                        &obj.field_path("failureAction"),
                        pos,
                        &a,
                        &["abort", "warn", "requestOverride", "branch"],
                    );
                    FailureAction::Abort
                }
            },
        };
        let override_approval = self.opt_str(&obj, "overrideApproval");
        if let Some((id, pos)) = &override_approval {
            self.approval_ref(id, &obj.field_path("overrideApproval"), *pos, ctx);
        } else if failure_action == FailureAction::RequestOverride {
            self.error(
                codes::OVERRIDE_APPROVAL_MISSING,
                obj.field_path("overrideApproval"),
                obj.pos,
                "failureAction requestOverride needs overrideApproval naming an entry of spec.approvals".to_owned(),
            );
        }
        let retry_count = self
            .opt_u32(&obj, "retryCount", 0)
            .ok()
            .flatten()
            .unwrap_or(0);
        let on_failure = match obj.get("onFailure") {
            None => {
                if failure_action == FailureAction::Branch {
                    self.error(
                        codes::ON_FAILURE_MISMATCH,
                        obj.field_path("onFailure"),
                        obj.pos,
                        "failureAction branch needs onFailure steps".to_owned(),
                    );
                }
                Vec::new()
            }
            Some(node) => {
                if failure_action != FailureAction::Branch {
                    self.error(
                        codes::ON_FAILURE_MISMATCH,
                        obj.field_path("onFailure"),
                        obj.key_pos("onFailure"),
                        format!(
                            "onFailure is only used with failureAction branch, found failureAction {}",
                            failure_action.as_str()
                        ),
                    );
                }
                let list = self.graph.add_list(Some(me), ListKind::Sequential);
                self.step_list(node, &obj.field_path("onFailure"), list, &ctx.vars)
                    .unwrap_or_default()
            }
        };
        let (policy_id, _) = policy?;
        (self.diags.len() == before).then_some(PolicyGate {
            policy_id,
            failure_action,
            override_approval: override_approval.map(|o| o.0),
            retry_count,
            on_failure,
        })
    }

    fn map(&mut self, node: &Node, path: &str, me: usize, ctx: &Ctx) -> Option<MapStep> {
        let obj = self.object(node, path, MAP_FIELDS)?;
        let before = self.diags.len();
        let items = match obj.get("items") {
            None => {
                self.missing(&obj, "items");
                None
            }
            Some(node) => {
                let items_path = obj.field_path("items");
                match &node.value {
                    Value::Seq(list) => {
                        if list.len() as u64 > MAP_ITEMS_MAX {
                            self.error(
                                codes::MAX_ITERATIONS,
                                &items_path,
                                node.pos,
                                format!(
                                    "map has {} items, expected at most {MAP_ITEMS_MAX}",
                                    list.len()
                                ),
                            );
                        }
                        self.json(node, &items_path).and_then(|v| {
                            let literal = json_literal_expression(&v);
                            match Expression::parse(&literal) {
                                Ok(e) => Some(e),
                                Err(e) => {
                                    self.expr_error(&items_path, node.pos, "expression", &e);
                                    None
                                }
                            }
                        })
                    }
                    _ => self.expression(node, &items_path, ctx),
                }
            }
        };
        let max_parallel = self
            .opt_u32(&obj, "maxParallel", 1)
            .ok()
            .flatten()
            .unwrap_or(1);
        let mut vars = ctx.vars.clone();
        vars.push("item".to_owned());
        vars.push("index".to_owned());
        let list = self.graph.add_list(Some(me), ListKind::Iteration);
        let step = match obj.get("step") {
            None => {
                self.missing(&obj, "step");
                None
            }
            Some(node) => self.step(node, &obj.field_path("step"), list, 0, &vars),
        };
        let (items, step) = (items?, step?);
        (self.diags.len() == before).then_some(MapStep {
            items,
            step: Box::new(step),
            max_parallel,
        })
    }

    fn loop_step(&mut self, node: &Node, path: &str, me: usize, ctx: &Ctx) -> Option<LoopStep> {
        let obj = self.object(node, path, LOOP_FIELDS)?;
        let before = self.diags.len();
        let max_iterations = self
            .opt_int(
                &obj,
                "maxIterations",
                1,
                i64::try_from(LOOP_ITERATIONS_MAX).unwrap_or(i64::MAX),
            )
            .ok()
            .flatten()
            .and_then(|i| u64::try_from(i).ok())
            .unwrap_or(LOOP_ITERATIONS_DEFAULT);
        let items = match obj.get("items") {
            None => {
                self.missing(&obj, "items");
                None
            }
            Some(node) => self.loop_items(node, &obj.field_path("items"), max_iterations, ctx),
        };
        let iterator = self.iteration_var(&obj, "iterator", "item");
        let index = self.iteration_var(&obj, "index", "index");
        if let (Some(it), Some(ix)) = (&iterator, &index)
            && it == ix
        {
            self.error(
                codes::ITERATION_VARIABLE,
                obj.field_path("index"),
                obj.key_pos("index"),
                format!("iterator and index are both '{it}', expected different names"),
            );
        }
        let aggregation = match self.opt_str(&obj, "aggregation") {
            None => Aggregation::Collect,
            Some((a, pos)) => match a.as_str() {
                "collect" => Aggregation::Collect,
                "merge" => Aggregation::Merge,
                "last" => Aggregation::Last,
                "first" => Aggregation::First,
                "none" => Aggregation::None,
                _ => {
                    self.invalid_enum(
                        &obj.field_path("aggregation"),
                        pos,
                        &a,
                        &["collect", "merge", "last", "first", "none"],
                    );
                    Aggregation::Collect
                }
            },
        };
        let mut vars = ctx.vars.clone();
        vars.push(iterator.clone().unwrap_or_else(|| "item".to_owned()));
        vars.push(index.clone().unwrap_or_else(|| "index".to_owned()));
        let list = self.graph.add_list(Some(me), ListKind::Iteration);
        let steps = self.req_step_list(&obj, "steps", list, &vars);
        // `until` runs after each iteration with that iteration's variables and outputs bound:
        // it sees the body as if it were placed after the body's last step.
        let body_len = obj
            .get("steps")
            .and_then(|n| {
                if let Value::Seq(s) = &n.value {
                    Some(s.len())
                } else {
                    None
                }
            })
            .unwrap_or(0);
        let until_ctx = Ctx {
            target: UseTarget::Step(Site {
                list,
                index: u32::try_from(body_len).unwrap_or(u32::MAX),
            }),
            vars,
        };
        let until = obj
            .get("until")
            .and_then(|n| self.condition(n, &obj.field_path("until"), &until_ctx));
        let (items, iterator, index, steps) = (items?, iterator?, index?, steps?);
        (self.diags.len() == before).then_some(LoopStep {
            items,
            iterator,
            index,
            max_iterations,
            until,
            aggregation,
            steps,
        })
    }

    fn iteration_var(&mut self, obj: &Obj<'_>, key: &str, default: &str) -> Option<String> {
        let Some((name, pos)) = self.opt_str(obj, key) else {
            return (!obj.has(key)).then(|| default.to_owned());
        };
        if !is_identifier(&name) {
            self.error(
                codes::ITERATION_VARIABLE,
                obj.field_path(key),
                pos,
                format!(
                    "'{}' is not a valid {key} name, expected ^[A-Za-z_][A-Za-z0-9_]*$",
                    schema::excerpt(&name)
                ),
            );
            return None;
        }
        if CONTEXT_ROOTS.contains(&name.as_str()) {
            self.error(
                codes::ITERATION_VARIABLE,
                obj.field_path(key),
                pos,
                format!(
                    "'{name}' is a reserved context variable, expected a name other than {}",
                    CONTEXT_ROOTS.join(", ")
                ),
            );
            return None;
        }
        Some(name)
    }

    fn loop_items(
        &mut self,
        node: &Node,
        path: &str,
        max_iterations: u64,
        ctx: &Ctx,
    ) -> Option<LoopItems> {
        let obj = self.object(node, path, LOOP_ITEMS_FIELDS)?;
        let present: Vec<&str> = LOOP_ITEMS_FIELDS
            .iter()
            .copied()
            .filter(|k| obj.entries.contains_key(k))
            .collect();
        let key = match present.as_slice() {
            [key] => *key,
            _ => {
                self.error(
                    codes::EXACTLY_ONE,
                    path,
                    node.pos,
                    format!(
                        "loop items need exactly one of expression, range, static, found {}",
                        if present.is_empty() {
                            "none".to_owned()
                        } else {
                            present.join(" and ")
                        }
                    ),
                );
                return None;
            }
        };
        let inner_path = obj.field_path(key);
        let Some(inner) = obj.get(key) else {
            self.error(
                codes::MISSING_FIELD,
                &inner_path,
                obj.key_pos(key),
                format!("expected a value for '{key}'"),
            );
            return None;
        };
        match key {
            "expression" => self
                .expression(inner, &inner_path, ctx)
                .map(LoopItems::Expression),
            "range" => {
                let r = self.object(inner, &inner_path, RANGE_FIELDS)?;
                let bound = i64::try_from(schema::INTEGER_ABS_MAX).unwrap_or(i64::MAX);
                // Every bound is checked before giving up on the range.
                let start = self.opt_int(&r, "start", -bound, bound);
                let end = self.opt_int(&r, "end", -bound, bound);
                if start == Ok(None) {
                    self.missing(&r, "start");
                }
                if end == Ok(None) {
                    self.missing(&r, "end");
                }
                let step = self.opt_int(&r, "step", -bound, bound);
                let (start, end, step) = (start.ok()?, end.ok()?, step.ok()?.unwrap_or(1));
                if step == 0 {
                    self.error(
                        codes::OUT_OF_RANGE,
                        r.field_path("step"),
                        r.get("step").map_or(r.pos, |n| n.pos),
                        "range step is 0, expected a non-zero integer".to_owned(),
                    );
                    return None;
                }
                let (start, end) = (start?, end?);
                let count = range_len(start, end, step);
                if count > u128::from(max_iterations) {
                    self.error(
                        codes::MAX_ITERATIONS,
                        inner_path,
                        inner.pos,
                        format!("range has {count} items, expected at most maxIterations ({max_iterations}) (max-iterations)"),
                    );
                    return None;
                }
                Some(LoopItems::Range { start, end, step })
            }
            _ => {
                let Value::Seq(list) = &inner.value else {
                    self.wrong_type(&inner_path, inner, "a sequence");
                    return None;
                };
                if list.len() as u64 > max_iterations {
                    self.error(
                        codes::MAX_ITERATIONS,
                        &inner_path,
                        inner.pos,
                        format!(
                            "static list has {} items, expected at most maxIterations ({max_iterations}) (max-iterations)",
                            list.len()
                        ),
                    );
                    return None;
                }
                match self.json(inner, &inner_path)? {
                    Json::Array(items) => Some(LoopItems::Static(items)),
                    _ => None,
                }
            }
        }
    }

    fn conditional(
        &mut self,
        node: &Node,
        path: &str,
        me: usize,
        ctx: &Ctx,
    ) -> Option<ConditionalStep> {
        let obj = self.object(node, path, CONDITIONAL_FIELDS)?;
        let before = self.diags.len();
        let mut branches = Vec::new();
        match obj.get("branches") {
            None => self.missing(&obj, "branches"),
            Some(node) => match &node.value {
                Value::Seq(items) if !items.is_empty() => {
                    for (i, item) in items.iter().enumerate() {
                        let bpath = format!("{}[{i}]", obj.field_path("branches"));
                        let Some(b) = self.object(item, &bpath, BRANCH_FIELDS) else {
                            continue;
                        };
                        let when = match b.get("when") {
                            None => {
                                self.missing(&b, "when");
                                None
                            }
                            Some(n) => self.condition(n, &b.field_path("when"), ctx),
                        };
                        let list = self.graph.add_list(Some(me), ListKind::Sequential);
                        let steps = self.req_step_list(&b, "steps", list, &ctx.vars);
                        if let (Some(when), Some(steps)) = (when, steps) {
                            branches.push(Branch { when, steps });
                        }
                    }
                }
                Value::Seq(_) => self.error(
                    codes::MISSING_FIELD,
                    obj.field_path("branches"),
                    node.pos,
                    "expected at least one branch".to_owned(),
                ),
                _ => self.wrong_type(&obj.field_path("branches"), node, "a sequence of branches"),
            },
        }
        let else_steps = match obj.get("else") {
            None => Vec::new(),
            Some(node) => {
                let list = self.graph.add_list(Some(me), ListKind::Sequential);
                self.step_list(node, &obj.field_path("else"), list, &ctx.vars)
                    .unwrap_or_default()
            }
        };
        let output_union = self.opt_bool(&obj, "outputUnion").unwrap_or(false);
        (self.diags.len() == before).then_some(ConditionalStep {
            branches,
            else_steps,
            output_union,
        })
    }

    // ---- cross-references ------------------------------------------------------------------

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

// ---- small syntax checks ------------------------------------------------------------------

/// `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`
pub(crate) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(ok)
        && b.last().is_some_and(ok)
        && b.iter().all(|c| ok(c) || *c == b'-')
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `^[a-z0-9][a-z0-9._-]*$`
fn is_lower_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// `^[A-Za-z0-9][A-Za-z0-9_-]*$`
fn is_step_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// Semantic Versioning 2.0.0.
pub(crate) fn is_semver(s: &str) -> bool {
    let (rest, build) = match s.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let numeric = |p: &str| {
        !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) && (p == "0" || !p.starts_with('0'))
    };
    let ident =
        |p: &str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-');
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| numeric(p))
        && pre.is_none_or(|p| {
            p.split('.')
                .all(|id| ident(id) && (!id.bytes().all(|c| c.is_ascii_digit()) || numeric(id)))
        })
        && build.is_none_or(|b| b.split('.').all(ident))
}

/// `<n>s|m|h|d` with n ≥ 1 → seconds.
pub(crate) fn parse_duration(s: &str) -> Option<u64> {
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let seconds = n.checked_mul(factor)?;
    (n > 0 && i128::from(seconds) <= schema::INTEGER_ABS_MAX).then_some(seconds)
}

/// `host` or `host:port`; host is a DNS name (optionally `*.`-prefixed) or an IPv4 address.
fn check_host_port(s: &str) -> Result<(), String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if let Some(p) = port {
        match p.parse::<u32>() {
            Ok(n) if (1..=65_535).contains(&n) && p.bytes().all(|c| c.is_ascii_digit()) => {}
            _ => {
                return Err(format!(
                    "port '{}' is not a number between 1 and 65535",
                    schema::excerpt(p)
                ));
            }
        }
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return Err("host must be 1 to 253 characters".to_owned());
    }
    for label in name.split('.') {
        let b = label.as_bytes();
        let valid = !b.is_empty()
            && b.len() <= 63
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b.first() != Some(&b'-')
            && b.last() != Some(&b'-');
        if !valid {
            return Err(format!(
                "label '{}' is not 1 to 63 letters, digits or inner hyphens",
                schema::excerpt(label)
            ));
        }
    }
    Ok(())
}

/// `builtin:<name>` or a host executor name ([`crate::parse_uses`] owns the rule).
fn check_uses(uses: &str) -> Result<(), String> {
    crate::uses::parse_uses(uses)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A file output path must stay inside the workspace.
fn check_output_path(t: &Template) -> Result<(), String> {
    let absolute =
        |s: &str| s.starts_with('/') || s.starts_with('\\') || s.as_bytes().get(1) == Some(&b':');
    if t.is_literal() {
        let s = t.source();
        if absolute(s) {
            return Err(format!(
                "path '{}' is absolute, expected a path relative to the run workspace",
                schema::excerpt(s)
            ));
        }
        if s.split(['/', '\\']).any(|seg| seg == "..") {
            return Err(format!(
                "path '{}' contains '..', expected a path inside the run workspace",
                schema::excerpt(s)
            ));
        }
        if s.is_empty() {
            return Err("expected a non-empty path".to_owned());
        }
    } else if let Some(TemplatePart::Literal(first)) = t.parts().first()
        && absolute(first)
    {
        return Err(format!(
            "path '{}' is absolute, expected a path relative to the run workspace",
            schema::excerpt(t.source())
        ));
    }
    Ok(())
}

/// Items of `[start, end)` stepping by `step` (never 0).
fn range_len(start: i64, end: i64, step: i64) -> u128 {
    let (start, end, step) = (i128::from(start), i128::from(end), i128::from(step));
    let span = if step > 0 { end - start } else { start - end };
    if span <= 0 {
        return 0;
    }
    let step = step.unsigned_abs();
    let span = span.unsigned_abs();
    span.div_ceil(step)
}

/// A JMESPath raw literal (`` `…` ``) holding `value`.
fn json_literal_expression(value: &Json) -> String {
    format!("`{}`", value.to_string().replace('`', "\\`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver() {
        for ok in [
            "1.0.0",
            "0.0.1",
            "1.2.3-alpha.1",
            "1.2.3+build.5",
            "1.0.0-0.3.7",
            "10.20.30",
        ] {
            assert!(is_semver(ok), "{ok}");
        }
        for bad in [
            "1.0", "01.0.0", "1.0.0-", "1.0.0-01", "v1.0.0", "1.0.0+", "",
        ] {
            assert!(!is_semver(bad), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("24h"), Some(86_400));
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("15s"), Some(15));
        for bad in ["0s", "m", "10", "1.5h", "10w", "-1h", ""] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn hosts() {
        for ok in [
            "example.com",
            "example.com:443",
            "10.0.0.1:8080",
            "*.github.com",
            "localhost",
        ] {
            assert!(check_host_port(ok).is_ok(), "{ok}");
        }
        for bad in [
            "example.com:0",
            "example.com:70000",
            "exa mple.com",
            "-a.com",
            "a..b",
            "",
            "h:p",
        ] {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uses() {
        for ok in [
            "builtin:echo",
            "builtin:http.get",
            "acme/deploy",
            "registry:tool/x",
        ] {
            assert!(check_uses(ok).is_ok(), "{ok}");
        }
        for bad in ["builtin:", "builtin:Echo", "Deploy", "", "builtin:a/b"] {
            assert!(check_uses(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(range_len(0, 10, 1), 10);
        assert_eq!(range_len(0, 10, 3), 4);
        assert_eq!(range_len(10, 0, -2), 5);
        assert_eq!(range_len(0, 10, -1), 0);
    }
}
