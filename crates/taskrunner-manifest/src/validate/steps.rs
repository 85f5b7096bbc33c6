//! Steps: step lists, one step (id, common fields, exactly one kind), and the run and gate
//! kinds; parallel is read inline, map/loop/conditional in `containers`.

use std::collections::BTreeMap;

use taskrunner_expr::References;

use super::lexical::{check_uses, is_step_id};
use super::reader::{Obj, join};
use super::{Ctx, Validator};
use crate::codes;
use crate::model::*;
use crate::refs::{ListKind, Site, Use, UseTarget};
use crate::schema;
use crate::suggest;
use crate::yaml::{Node, Pos, Value};

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

impl Validator {
    /// A required, non-empty step list.
    pub(super) fn step_list(
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

    pub(super) fn req_step_list(
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

    pub(super) fn step(
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
}
