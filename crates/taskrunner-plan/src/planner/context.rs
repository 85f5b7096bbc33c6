//! The planner's state and plan-time evaluation: scopes of iteration variables, expressions
//! evaluated now or left for run time, templates and values, and the small helpers steps share.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};
use taskrunner_expr::{Expression, Template, TemplatePart, render_text};
use taskrunner_manifest::{Diagnostic, Diagnostics, Manifest, TemplateValue};

use crate::codes;
use crate::jcs;
use crate::value::{PlanValue, TemplatePiece};

/// Iteration variables visible where a step is planned.
#[derive(Debug, Clone, Default)]
pub(super) struct Scope {
    /// Bound while planning (plan-time expanded iterations).
    pub(super) bound: BTreeMap<String, Value>,
    /// In scope but only known at run time (run-time map/loop templates).
    pub(super) unbound: BTreeSet<String>,
    /// Id prefix, e.g. `outer[1]::`.
    pub(super) prefix: String,
}

impl Scope {
    pub(super) fn with_iteration(&self, vars: [(&str, Option<Value>); 2], prefix: String) -> Scope {
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

pub(super) struct Planner<'m> {
    pub(super) manifest: &'m Manifest,
    pub(super) inputs_value: Value,
    pub(super) diagnostics: Diagnostics,
    pub(super) step_count: usize,
}

pub(super) enum Eval {
    Value(Value),
    Runtime,
    Failed,
}

impl Planner<'_> {
    pub(super) fn error(&mut self, code: &'static str, path: &str, message: String) {
        self.diagnostics.push(Diagnostic {
            code,
            path: path.to_owned(),
            message,
            line: None,
            column: None,
        });
    }

    pub(super) fn check_exact(&mut self, value: &Value, path: &str) -> bool {
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

    pub(super) fn is_plan_time(expr: &Expression, scope: &Scope) -> bool {
        let refs = expr.references();
        !refs.whole_root
            && refs
                .roots()
                .iter()
                .all(|root| *root == "inputs" || scope.bound.contains_key(*root))
    }

    pub(super) fn context(&self, scope: &Scope) -> Value {
        let mut ctx = Map::new();
        ctx.insert("inputs".into(), self.inputs_value.clone());
        for (k, v) in &scope.bound {
            ctx.insert(k.clone(), v.clone());
        }
        Value::Object(ctx)
    }

    /// Evaluates `expr` now if it is plan-time. `lenient` (for disabled steps) turns evaluation
    /// errors into "leave it for run time" instead of plan errors.
    pub(super) fn eval(
        &mut self,
        expr: &Expression,
        scope: &Scope,
        path: &str,
        lenient: bool,
    ) -> Eval {
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

    pub(super) fn plan_template(
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

    pub(super) fn plan_value(
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
}

/// Where a plan-time error happened inside an expanded iteration (`in iteration 'm[1]': `).
pub(super) fn iteration_note(scope: &Scope) -> String {
    match scope.prefix.strip_suffix("::") {
        Some(iteration) => format!("in iteration '{iteration}': "),
        None => String::new(),
    }
}

/// Why a workspace-relative path is refused (SPEC §5.6, rule 20), if it is.
pub(super) fn escapes_workspace(path: &str) -> Option<&'static str> {
    if path.starts_with('/') || path.starts_with('\\') {
        Some("is absolute")
    } else if path.split(['/', '\\']).any(|segment| segment == "..") {
        Some("contains '..'")
    } else {
        None
    }
}

/// `path.key`, quoting keys that are not plain identifiers.
pub(super) fn field_path(path: &str, key: &str) -> String {
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

pub(super) fn type_name(v: &Value) -> &'static str {
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
pub(super) fn range_items(start: i64, end: i64, step: i64, max: u64) -> Option<Vec<Value>> {
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
