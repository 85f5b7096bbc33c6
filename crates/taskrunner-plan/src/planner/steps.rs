//! Planning steps: each kind of step, map/loop expansion and the pack's outputs.

use serde_json::Value;
use taskrunner_expr::{Expression, is_truthy};
use taskrunner_manifest::{LoopItems, MAP_ITEMS_MAX, OutputSource, STEPS_MAX, Step, StepKind};

use crate::codes;
use crate::model::*;
use crate::value::PlanValue;

use super::context::{Eval, Planner, Scope, escapes_workspace, field_path, range_items, type_name};

impl Planner<'_> {
    pub(super) fn plan_steps(
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

    pub(super) fn plan_step(
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
    pub(super) fn items_now(
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

    pub(super) fn plan_outputs(&mut self) -> Vec<PlanOutput> {
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
