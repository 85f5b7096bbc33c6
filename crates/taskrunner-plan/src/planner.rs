//! The planner (SPEC §3): validated manifest + resolved inputs → [`Plan`].
//!
//! Plan time vs run time: an expression whose references stay within `inputs` and the
//! iteration variables bound while planning is evaluated here and its value goes into the plan;
//! anything that reads `steps`, `secrets`, `run`, the whole context, or an iteration variable of
//! a run-time map/loop stays symbolic. Map/loop items known now are expanded into iterations
//! with ids `<id>[<i>]::<templateId>`; otherwise one `<id>[*]::…` template child is kept.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use taskrunner_expr::{Expression, Template, TemplatePart, is_truthy, render_text};
use taskrunner_manifest::{
    Diagnostic, Diagnostics, LoopItems, MAP_ITEMS_MAX, Manifest, OutputSource, STEPS_MAX, Step,
    StepKind, TemplateValue,
};

use crate::codes;
use crate::encode::plan_to_json;
use crate::jcs;
use crate::model::*;
use crate::value::{PlanValue, TemplatePiece};

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

/// Iteration variables visible where a step is planned.
#[derive(Debug, Clone, Default)]
struct Scope {
    /// Bound while planning (plan-time expanded iterations).
    bound: BTreeMap<String, Value>,
    /// In scope but only known at run time (run-time map/loop templates).
    unbound: BTreeSet<String>,
    /// Id prefix, e.g. `outer[1]::`.
    prefix: String,
}

impl Scope {
    fn with_iteration(&self, vars: [(&str, Option<Value>); 2], prefix: String) -> Scope {
        let mut next = self.clone();
        for (name, value) in vars {
            match value {
                Some(v) => {
                    next.unbound.remove(name);
                    next.bound.insert(name.to_owned(), v);
                }
                None => {
                    next.bound.remove(name);
                    next.unbound.insert(name.to_owned());
                }
            }
        }
        next.prefix = prefix;
        next
    }
}

struct Planner<'m> {
    manifest: &'m Manifest,
    inputs_value: Value,
    diagnostics: Diagnostics,
    step_count: usize,
}

enum Eval {
    Value(Value),
    Runtime,
    Failed,
}

impl Planner<'_> {
    fn error(&mut self, code: &'static str, path: &str, message: String) {
        self.diagnostics.push(Diagnostic {
            code,
            path: path.to_owned(),
            message,
            line: None,
            column: None,
        });
    }

    fn check_exact(&mut self, value: &Value, path: &str) -> bool {
        match value {
            Value::Number(n) if !jcs::is_exact_number(n) => {
                self.error(
                    codes::NUMBER_NOT_EXACT,
                    path,
                    format!("number {n} is outside ±2^53 and cannot be hashed exactly; pass it as a string"),
                );
                false
            }
            Value::Array(items) => items.iter().all(|v| self.check_exact(v, path)),
            Value::Object(map) => map.values().all(|v| self.check_exact(v, path)),
            _ => true,
        }
    }

    fn is_plan_time(expr: &Expression, scope: &Scope) -> bool {
        let refs = expr.references();
        !refs.whole_root
            && refs
                .roots()
                .iter()
                .all(|root| *root == "inputs" || scope.bound.contains_key(*root))
    }

    fn context(&self, scope: &Scope) -> Value {
        let mut ctx = Map::new();
        ctx.insert("inputs".into(), self.inputs_value.clone());
        for (k, v) in &scope.bound {
            ctx.insert(k.clone(), v.clone());
        }
        Value::Object(ctx)
    }

    /// Evaluates `expr` now if it is plan-time. `lenient` (for disabled steps) turns evaluation
    /// errors into "leave it for run time" instead of plan errors.
    fn eval(&mut self, expr: &Expression, scope: &Scope, path: &str, lenient: bool) -> Eval {
        if !Self::is_plan_time(expr, scope) {
            return Eval::Runtime;
        }
        match expr.evaluate(&self.context(scope)) {
            Ok(v) => {
                if self.check_exact(&v, path) {
                    Eval::Value(v)
                } else {
                    Eval::Failed
                }
            }
            Err(_) if lenient => Eval::Runtime,
            Err(e) => {
                self.error(
                    codes::EVALUATION,
                    path,
                    format!(
                        "{}cannot evaluate '{}' while planning: {e}",
                        iteration_note(scope),
                        expr.source()
                    ),
                );
                Eval::Failed
            }
        }
    }

    fn plan_template(
        &mut self,
        t: &Template,
        scope: &Scope,
        path: &str,
        lenient: bool,
    ) -> PlanValue {
        if let Some(expr) = t.single_expression() {
            return match self.eval(expr, scope, path, lenient) {
                Eval::Value(v) => PlanValue::Literal(v),
                Eval::Runtime | Eval::Failed => PlanValue::Expr(expr.clone()),
            };
        }
        let mut pieces: Vec<TemplatePiece> = Vec::new();
        let push_text = |pieces: &mut Vec<TemplatePiece>, text: &str| {
            if let Some(TemplatePiece::Text(last)) = pieces.last_mut() {
                last.push_str(text);
            } else {
                pieces.push(TemplatePiece::Text(text.to_owned()));
            }
        };
        for part in t.parts() {
            match part {
                TemplatePart::Literal(text) => push_text(&mut pieces, text),
                TemplatePart::Expr(expr) => match self.eval(expr, scope, path, lenient) {
                    Eval::Value(v) => push_text(&mut pieces, &render_text(&v)),
                    Eval::Runtime | Eval::Failed => pieces.push(TemplatePiece::Expr(expr.clone())),
                },
            }
        }
        match pieces.as_slice() {
            [] => PlanValue::Literal(Value::String(String::new())),
            [TemplatePiece::Text(text)] => PlanValue::Literal(Value::String(text.clone())),
            _ => PlanValue::Template(pieces),
        }
    }

    fn plan_value(
        &mut self,
        v: &TemplateValue,
        scope: &Scope,
        path: &str,
        lenient: bool,
    ) -> PlanValue {
        match v {
            TemplateValue::Null => PlanValue::Literal(Value::Null),
            TemplateValue::Bool(b) => PlanValue::Literal(Value::Bool(*b)),
            TemplateValue::Number(n) => {
                let value = Value::Number(n.clone());
                self.check_exact(&value, path);
                PlanValue::Literal(value)
            }
            TemplateValue::String(t) => self.plan_template(t, scope, path, lenient),
            TemplateValue::Array(items) => PlanValue::array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.plan_value(item, scope, &format!("{path}[{i}]"), lenient))
                    .collect(),
            ),
            TemplateValue::Object(members) => PlanValue::object(
                members
                    .iter()
                    .map(|(k, item)| {
                        let planned = self.plan_value(item, scope, &field_path(path, k), lenient);
                        (k.clone(), planned)
                    })
                    .collect(),
            ),
        }
    }

    fn plan_steps(
        &mut self,
        steps: &[Step],
        path: &str,
        scope: &Scope,
        disabled: Option<&str>,
    ) -> Vec<PlanStep> {
        steps
            .iter()
            .enumerate()
            .map(|(i, step)| self.plan_step(step, &format!("{path}[{i}]"), scope, disabled))
            .collect()
    }

    fn plan_step(
        &mut self,
        step: &Step,
        path: &str,
        scope: &Scope,
        disabled: Option<&str>,
    ) -> PlanStep {
        self.step_count += 1;
        if self.step_count == STEPS_MAX + 1 {
            self.error(
                codes::TOO_MANY_STEPS,
                path,
                format!(
                    "the plan would hold more than {STEPS_MAX} steps after expanding maps and loops"
                ),
            );
        }
        let id = format!("{}{}", scope.prefix, step.id);
        let mut status_reason = disabled.map(str::to_owned);
        let mut when = None;
        if status_reason.is_none()
            && let Some(expr) = &step.when
        {
            match self.eval(expr, scope, &format!("{path}.when"), false) {
                Eval::Value(v) if !is_truthy(&v) => status_reason = Some("when-false".to_owned()),
                Eval::Value(_) | Eval::Failed => {}
                Eval::Runtime => when = Some(expr.clone()),
            }
        }
        let enabled = status_reason.is_none();
        let lenient = !enabled;
        let pack = self.manifest.failure();
        let retries = Retries {
            max_attempts: step.retries.max_attempts.unwrap_or(pack.max_attempts),
            backoff_seconds: step.retries.backoff_seconds.unwrap_or(pack.backoff_seconds),
        };
        let continue_on_error = step.continue_on_error.unwrap_or(pack.continue_on_error);
        let reason = status_reason.as_deref();
        // Past the cap, stop expanding: the error is already recorded.
        let over_cap = self.step_count > STEPS_MAX;

        let (kind, children) = match &step.kind {
            StepKind::Run(run) => {
                let with = PlanValue::object(
                    run.with
                        .iter()
                        .map(|(k, v)| {
                            let p = field_path(&format!("{path}.run.with"), k);
                            (k.clone(), self.plan_value(v, scope, &p, lenient))
                        })
                        .collect(),
                );
                (
                    PlanStepKind::Run {
                        uses: run.uses.clone(),
                        with,
                    },
                    Vec::new(),
                )
            }
            StepKind::GateApproval(gate) => {
                let (template, field) = match &gate.message {
                    Some(t) => (Some(t), format!("{path}.gate.approval.message")),
                    None => (
                        self.manifest
                            .approval(&gate.approval_id)
                            .and_then(|a| a.reason_template.as_ref()),
                        format!("{path}.gate.approval.id"),
                    ),
                };
                let message = template.map(|t| self.plan_template(t, scope, &field, lenient));
                (
                    PlanStepKind::GateApproval {
                        approval_id: gate.approval_id.clone(),
                        message,
                    },
                    Vec::new(),
                )
            }
            StepKind::GatePolicy(gate) => {
                let children = self.plan_steps(
                    &gate.on_failure,
                    &format!("{path}.gate.policy.onFailure"),
                    scope,
                    reason,
                );
                (
                    PlanStepKind::GatePolicy {
                        policy_id: gate.policy_id.clone(),
                        failure_action: gate.failure_action,
                        override_approval: gate.override_approval.clone(),
                        retry_count: gate.retry_count,
                    },
                    children,
                )
            }
            StepKind::Parallel(par) => {
                let children =
                    self.plan_steps(&par.steps, &format!("{path}.parallel.steps"), scope, reason);
                (
                    PlanStepKind::Parallel {
                        max_parallel: par.max_parallel,
                    },
                    children,
                )
            }
            StepKind::Map(map) => {
                let items_path = format!("{path}.map.items");
                let body_path = format!("{path}.map.step");
                let items = if enabled && !over_cap {
                    self.items_now(&map.items, scope, &items_path, MAP_ITEMS_MAX, "map items")
                } else {
                    None
                };
                let (iterations, children) = match items {
                    Some(items) => {
                        let mut children = Vec::with_capacity(items.len());
                        for (i, item) in items.iter().enumerate() {
                            let inner = scope.with_iteration(
                                [
                                    ("item", Some(item.clone())),
                                    ("index", Some(Value::from(i))),
                                ],
                                format!("{id}[{i}]::"),
                            );
                            children.push(self.plan_step(&map.step, &body_path, &inner, reason));
                        }
                        (Iterations::Expanded { items }, children)
                    }
                    None => {
                        let inner = scope.with_iteration(
                            [("item", None), ("index", None)],
                            format!("{id}[*]::"),
                        );
                        (
                            Iterations::Runtime,
                            vec![self.plan_step(&map.step, &body_path, &inner, reason)],
                        )
                    }
                };
                (
                    PlanStepKind::Map {
                        items: map.items.clone(),
                        max_parallel: map.max_parallel,
                        iterations,
                        body_len: 1,
                    },
                    children,
                )
            }
            StepKind::Loop(lp) => {
                let body_path = format!("{path}.loop.steps");
                let (source, items) = match &lp.items {
                    LoopItems::Expression(e) => {
                        let items = if enabled && !over_cap {
                            self.items_now(
                                e,
                                scope,
                                &format!("{path}.loop.items.expression"),
                                lp.max_iterations,
                                "loop items",
                            )
                        } else {
                            None
                        };
                        (LoopSource::Expression(e.clone()), items)
                    }
                    LoopItems::Range {
                        start,
                        end,
                        step: by,
                    } => {
                        let items = range_items(*start, *end, *by, lp.max_iterations);
                        if items.is_none() && enabled {
                            self.error(
                                codes::MAX_ITERATIONS,
                                &format!("{path}.loop.items.range"),
                                format!(
                                    "the range yields more than maxIterations ({}) items",
                                    lp.max_iterations
                                ),
                            );
                        }
                        (
                            LoopSource::Range {
                                start: *start,
                                end: *end,
                                step: *by,
                            },
                            items,
                        )
                    }
                    LoopItems::Static(values) => {
                        if values.len() as u64 > lp.max_iterations && enabled {
                            self.error(
                                codes::MAX_ITERATIONS,
                                &format!("{path}.loop.items.static"),
                                format!(
                                    "{} static items exceed maxIterations ({})",
                                    values.len(),
                                    lp.max_iterations
                                ),
                            );
                        }
                        for (i, v) in values.iter().enumerate() {
                            self.check_exact(v, &format!("{path}.loop.items.static[{i}]"));
                        }
                        (LoopSource::Static(values.clone()), Some(values.clone()))
                    }
                };
                let items = items.filter(|_| enabled && !over_cap);
                let (iterations, children) = match items {
                    Some(items) => {
                        let mut children = Vec::with_capacity(items.len() * lp.steps.len());
                        for (i, item) in items.iter().enumerate() {
                            let inner = scope.with_iteration(
                                [
                                    (lp.iterator.as_str(), Some(item.clone())),
                                    (lp.index.as_str(), Some(Value::from(i))),
                                ],
                                format!("{id}[{i}]::"),
                            );
                            children.extend(self.plan_steps(&lp.steps, &body_path, &inner, reason));
                        }
                        (Iterations::Expanded { items }, children)
                    }
                    None => {
                        let inner = scope.with_iteration(
                            [(lp.iterator.as_str(), None), (lp.index.as_str(), None)],
                            format!("{id}[*]::"),
                        );
                        (
                            Iterations::Runtime,
                            self.plan_steps(&lp.steps, &body_path, &inner, reason),
                        )
                    }
                };
                (
                    PlanStepKind::Loop {
                        source,
                        iterator: lp.iterator.clone(),
                        index: lp.index.clone(),
                        max_iterations: lp.max_iterations,
                        until: lp.until.clone(),
                        aggregation: lp.aggregation,
                        iterations,
                        body_len: lp.steps.len(),
                    },
                    children,
                )
            }
            StepKind::Conditional(cond) => {
                // Which branches can still be taken: a plan-time false condition never can;
                // everything after a plan-time true condition (and `else`) never can. `taken`
                // is known when every condition before the chosen one was decided now.
                let count = cond.branches.len();
                let mut possible = vec![enabled; count + 1];
                let mut taken = None;
                if enabled {
                    let mut all_decided = true;
                    let mut chosen = count;
                    for (b, branch) in cond.branches.iter().enumerate() {
                        let wpath = format!("{path}.conditional.branches[{b}].when");
                        match self.eval(&branch.when, scope, &wpath, false) {
                            Eval::Value(v) if is_truthy(&v) => {
                                chosen = b;
                                break;
                            }
                            Eval::Value(_) => possible[b] = false,
                            Eval::Runtime | Eval::Failed => all_decided = false,
                        }
                    }
                    for later in possible.iter_mut().skip(chosen + 1) {
                        *later = false;
                    }
                    if all_decided {
                        taken = Some(chosen);
                    }
                }
                let not_taken = |b: usize| reason.or((!possible[b]).then_some("branch-not-taken"));
                let mut children = Vec::new();
                for (b, branch) in cond.branches.iter().enumerate() {
                    children.extend(self.plan_steps(
                        &branch.steps,
                        &format!("{path}.conditional.branches[{b}].steps"),
                        scope,
                        not_taken(b),
                    ));
                }
                children.extend(self.plan_steps(
                    &cond.else_steps,
                    &format!("{path}.conditional.else"),
                    scope,
                    not_taken(count),
                ));
                (
                    PlanStepKind::Conditional {
                        branches: cond
                            .branches
                            .iter()
                            .map(|b| PlanBranch {
                                when: b.when.clone(),
                                step_count: b.steps.len(),
                            })
                            .collect(),
                        else_step_count: cond.else_steps.len(),
                        output_union: cond.output_union,
                        taken,
                    },
                    children,
                )
            }
        };
        let is_run = matches!(kind, PlanStepKind::Run { .. });
        PlanStep {
            id,
            template_id: step.id.clone(),
            name: step.name.clone(),
            enabled,
            status_reason,
            when,
            continue_on_error,
            retries,
            timeout_seconds: if is_run || matches!(kind, PlanStepKind::GatePolicy { .. }) {
                step.timeout_seconds
            } else {
                None
            },
            kind,
            children,
        }
    }

    /// Evaluates map/loop items now when possible. `None` = run time (or an error was recorded).
    fn items_now(
        &mut self,
        expr: &Expression,
        scope: &Scope,
        path: &str,
        max: u64,
        what: &str,
    ) -> Option<Vec<Value>> {
        match self.eval(expr, scope, path, false) {
            Eval::Value(Value::Array(items)) => {
                if items.len() as u64 > max {
                    let (code, limit) = if what == "map items" {
                        (codes::MAP_ITEMS, format!("at most {max} are allowed"))
                    } else {
                        (
                            codes::MAX_ITERATIONS,
                            format!("more than maxIterations ({max})"),
                        )
                    };
                    let count = items.len();
                    self.error(
                        code,
                        path,
                        format!("{what} evaluated to {count} items, {limit}"),
                    );
                    return None;
                }
                Some(items)
            }
            Eval::Value(other) => {
                self.error(
                    codes::ITEMS_NOT_ARRAY,
                    path,
                    format!(
                        "{what} must evaluate to an array, found {}",
                        type_name(&other)
                    ),
                );
                None
            }
            Eval::Runtime | Eval::Failed => None,
        }
    }

    fn plan_outputs(&mut self) -> Vec<PlanOutput> {
        let scope = Scope::default();
        let mut out = Vec::new();
        for (i, def) in self.manifest.outputs().iter().enumerate() {
            match &def.source {
                OutputSource::File { path } => {
                    let p = format!("spec.outputs[{i}].path");
                    let planned = self.plan_template(path, &scope, &p, false);
                    if let Some(Value::String(rendered)) = planned.as_literal()
                        && let Some(why) = escapes_workspace(rendered)
                    {
                        self.error(
                            codes::PATH_ESCAPES,
                            &p,
                            format!(
                                "path '{rendered}' {why}, expected a path inside the run workspace"
                            ),
                        );
                    }
                    out.push(PlanOutput::File {
                        name: def.name.clone(),
                        source: path.source().to_owned(),
                        path: planned,
                    });
                }
                OutputSource::Object { expression } => {
                    let p = format!("spec.outputs[{i}].expression");
                    let value = match self.eval(expression, &scope, &p, false) {
                        Eval::Value(v) => Some(v),
                        Eval::Runtime | Eval::Failed => None,
                    };
                    out.push(PlanOutput::Object {
                        name: def.name.clone(),
                        expression: expression.clone(),
                        value,
                    });
                }
            }
        }
        out
    }
}

/// Where a plan-time error happened inside an expanded iteration (`in iteration 'm[1]': `).
fn iteration_note(scope: &Scope) -> String {
    match scope.prefix.strip_suffix("::") {
        Some(iteration) => format!("in iteration '{iteration}': "),
        None => String::new(),
    }
}

/// Why a workspace-relative path is refused (SPEC §5.6, rule 20), if it is.
fn escapes_workspace(path: &str) -> Option<&'static str> {
    if path.starts_with('/') || path.starts_with('\\') {
        Some("is absolute")
    } else if path.split(['/', '\\']).any(|segment| segment == "..") {
        Some("contains '..'")
    } else {
        None
    }
}

/// `path.key`, quoting keys that are not plain identifiers.
fn field_path(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", Value::String(key.to_owned()))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The items of `range(start, end, step)` (end exclusive), or `None` if more than `max`.
fn range_items(start: i64, end: i64, step: i64, max: u64) -> Option<Vec<Value>> {
    if step == 0 {
        return Some(Vec::new()); // validation rejects step 0; be total anyway
    }
    let span = if step > 0 {
        i128::from(end) - i128::from(start)
    } else {
        i128::from(start) - i128::from(end)
    };
    let stride = i128::from(step).abs();
    let count = if span <= 0 {
        0
    } else {
        (span + stride - 1) / stride
    };
    if count > i128::from(max) {
        return None;
    }
    let mut items = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut v = i128::from(start);
    for _ in 0..count {
        items.push(Value::from(i64::try_from(v).unwrap_or(0)));
        v += i128::from(step);
    }
    Some(items)
}

#[cfg(test)]
mod tests {
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
