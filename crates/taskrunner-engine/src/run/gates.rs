//! Gates: approval gates, policy gates and their override/branch paths, decisions (held until
//! a gate is reached), expiry.

use taskrunner_expr::{Template, is_truthy, render_text};
use taskrunner_plan::{FailureAction, Plan, PlanStep, PlanStepKind};

use super::Cx;
use super::context::Need;
use super::schedule::dfs;
use crate::event::{Decision, Level, StepStatus};
use crate::state::{DecisionRecord, GateWait, HeldDecision, PolicyPhase, RunState};

pub(super) fn step_approval(step: &PlanStep) -> Option<String> {
    match &step.kind {
        PlanStepKind::GateApproval { approval_id, .. } => Some(approval_id.clone()),
        PlanStepKind::GatePolicy {
            override_approval: Some(a),
            failure_action: FailureAction::RequestOverride,
            ..
        } => Some(a.clone()),
        _ => None,
    }
}

pub(super) fn plan_uses_approval(plan: &Plan, approval_id: &str) -> bool {
    plan.walk()
        .any(|s| step_approval(s).as_deref() == Some(approval_id))
}

/// The earliest (plan order) gate instance waiting for `approval_id`.
pub(super) fn awaiting_gate(st: &RunState, approval_id: &str) -> Option<usize> {
    dfs(st).into_iter().find(|&i| {
        let n = &st.nodes[i];
        n.awaiting()
            && n.gate
                .as_ref()
                .is_some_and(|g| g.approval_id == approval_id)
    })
}

/// Is any gate instance that may still wait for `approval_id` unfinished?
pub(super) fn has_undecided_instance(st: &RunState, approval_id: &str) -> bool {
    st.status.is_terminal().then_some(()).is_none()
        && dfs(st)
            .into_iter()
            .any(|i| !st.nodes[i].finished() && node_uses_approval(st, i, approval_id))
}

fn node_uses_approval(st: &RunState, i: usize, approval_id: &str) -> bool {
    let n = &st.nodes[i];
    match &n.gate {
        Some(g) => g.approval_id == approval_id,
        None => n.def_approval.as_deref() == Some(approval_id),
    }
}

impl<'a> Cx<'a> {
    pub(super) fn decide(
        &mut self,
        approval_id: &str,
        decision: Decision,
        actor: &str,
        summary: Option<String>,
    ) {
        let mut record = DecisionRecord {
            approval_id: approval_id.to_owned(),
            decision,
            actor: actor.to_owned(),
            at: self.now,
            summary: summary.map(|s| self.secrets.mask(&s)),
            gate: None,
            resumed: false,
        };
        if let Some(t) = awaiting_gate(self.st, approval_id) {
            let already = decision == Decision::Approved
                && self.st.nodes[t]
                    .gate
                    .as_ref()
                    .is_some_and(|g| g.approvers.contains(actor));
            if already {
                return;
            }
            record.gate = Some(self.st.nodes[t].id.clone());
            record.resumed = self.apply_decision(t, decision, actor);
        } else {
            if !has_undecided_instance(self.st, approval_id) {
                return;
            }
            let held = self.st.held.entry(approval_id.to_owned()).or_default();
            if held
                .iter()
                .any(|h| h.actor == actor && h.decision == decision)
            {
                return;
            }
            held.push(HeldDecision {
                decision,
                actor: actor.to_owned(),
                at: self.now,
            });
        }
        self.st.decisions.push(record);
        self.touch();
    }

    /// Applies a decision to a waiting gate; true when it completed the gate (approved).
    fn apply_decision(&mut self, i: usize, decision: Decision, actor: &str) -> bool {
        let id = self.st.nodes[i].id.clone();
        self.touch();
        let Some(gate) = self.st.nodes[i].gate.as_mut() else {
            return false;
        };
        let approval_id = gate.approval_id.clone();
        match decision {
            Decision::Approved => {
                gate.approvers.insert(actor.to_owned());
                let (have, need) = (gate.approvers.len(), gate.required as usize);
                if have < need {
                    return false;
                }
                self.log(
                    Level::Info,
                    "gate.approved",
                    Some(i),
                    format!("{approval_id} approved for {id}"),
                    &[("approvalId", approval_id), ("actor", actor.to_owned())],
                );
                self.skip_children(i, "branch-not-taken");
                self.succeed(i, None);
                true
            }
            Decision::Rejected => {
                self.log(
                    Level::Warn,
                    "gate.rejected",
                    Some(i),
                    format!("{approval_id} rejected for {id} by {actor}"),
                    &[("approvalId", approval_id), ("actor", actor.to_owned())],
                );
                self.skip_children(i, "branch-not-taken");
                self.fail(i, "approval-rejected", None);
                false
            }
            Decision::Expired => {
                self.expire(i, Some(actor));
                false
            }
        }
    }

    fn expire(&mut self, i: usize, actor: Option<&str>) {
        let approval_id = self.st.nodes[i]
            .gate
            .as_ref()
            .map(|g| g.approval_id.clone())
            .unwrap_or_default();
        let id = self.st.nodes[i].id.clone();
        let mut meta = vec![("approvalId", approval_id.clone())];
        if let Some(a) = actor {
            meta.push(("actor", a.to_owned()));
        }
        self.log(
            Level::Warn,
            "gate.expired",
            Some(i),
            format!("{approval_id} expired for {id}"),
            &meta,
        );
        self.skip_children(i, "branch-not-taken");
        self.fail(i, "approval-expired", None);
    }

    /// Starts waiting for `approval_id` at step `i`, then applies held decisions.
    pub(super) fn open_gate(&mut self, i: usize, approval_id: &str, message: Option<String>) {
        let approval = self.plan.approval(approval_id);
        let required = approval.map_or(1, |a| a.required_approvals.max(1));
        let deadline = approval
            .and_then(|a| a.expires_after_seconds)
            .map(|s| self.now.plus_seconds(s));
        let message = message.map(|m| self.secrets.mask(&m));
        self.st.nodes[i].gate = Some(GateWait {
            approval_id: approval_id.to_owned(),
            required,
            approvers: Default::default(),
            deadline,
            message: message.clone(),
        });
        self.transition(i, StepStatus::Pending, Some("awaiting-approval"));
        let id = self.st.nodes[i].id.clone();
        let mut meta = vec![
            ("approvalId", approval_id.to_owned()),
            ("requiredApprovals", required.to_string()),
        ];
        if let Some(d) = deadline {
            meta.push(("expiresAt", d.to_rfc3339()));
        }
        self.log(
            Level::Info,
            "gate.awaiting",
            Some(i),
            message.unwrap_or_else(|| format!("step {id} awaits approval {approval_id}")),
            &meta,
        );
        // Decisions given before the gate was reached (rule 15).
        while self.st.nodes[i].awaiting() {
            let Some(held) = self.st.held.get_mut(approval_id) else {
                break;
            };
            if held.is_empty() {
                self.st.held.remove(approval_id);
                break;
            }
            let h = held.remove(0);
            let dup = h.decision == Decision::Approved
                && self.st.nodes[i]
                    .gate
                    .as_ref()
                    .is_some_and(|g| g.approvers.contains(&h.actor));
            if dup {
                continue;
            }
            let resumed = self.apply_decision(i, h.decision, &h.actor);
            if let Some(r) = self.st.decisions.iter_mut().find(|r| {
                r.approval_id == approval_id
                    && r.gate.is_none()
                    && r.actor == h.actor
                    && r.decision == h.decision
            }) {
                r.gate = Some(id.clone());
                r.resumed = resumed;
            }
        }
        if self.st.held.get(approval_id).is_some_and(Vec::is_empty) {
            self.st.held.remove(approval_id);
        }
    }

    pub(super) fn check_deadline(&mut self, i: usize) {
        let due = self.st.nodes[i]
            .gate
            .as_ref()
            .and_then(|g| g.deadline)
            .is_some_and(|d| d <= self.now);
        if due && self.st.nodes[i].awaiting() {
            self.expire(i, None);
        }
    }

    pub(super) fn evaluate_policy(&mut self, i: usize) {
        let Some(def) = self.def(i) else { return };
        let PlanStepKind::GatePolicy {
            policy_id,
            failure_action,
            override_approval,
            retry_count,
        } = &def.kind
        else {
            return;
        };
        let n = &mut self.st.nodes[i];
        n.attempts += 1;
        n.next_attempt_at = None;
        let attempt = n.attempts;
        let id = n.id.clone();
        self.transition(i, StepStatus::Running, None);
        self.log(
            Level::Info,
            "step.started",
            Some(i),
            format!("step {id} evaluates policy {policy_id} (attempt {attempt})"),
            &[
                ("attempt", attempt.to_string()),
                ("policyId", policy_id.clone()),
            ],
        );
        let policy = self.plan.policy(policy_id);
        let message = policy
            .and_then(|p| p.message.as_deref())
            .map(|m| (m, Template::parse(m)));
        let mut need = Need::none();
        if let Some(p) = policy {
            need.add(&p.rule);
        }
        if let Some((_, Ok(t))) = &message {
            t.expressions().for_each(|e| need.add(e));
        }
        let ctx = self.context_for(Some(i), &need);
        let verdict = match policy {
            None => Err(format!("unknown policy {policy_id}")),
            Some(p) => match p.rule.evaluate(&ctx) {
                Ok(v) if is_truthy(&v) => Ok(()),
                Ok(v) => Err(format!("rule '{}' evaluated to {}", p.rule.source(), v)),
                Err(e) => Err(format!("rule '{}' failed: {e}", p.rule.source())),
            },
        };
        let meta = |extra: &[(&'static str, String)]| {
            let mut m = vec![
                ("policyId", policy_id.clone()),
                ("attempt", attempt.to_string()),
            ];
            m.extend_from_slice(extra);
            m
        };
        match verdict {
            Ok(()) => {
                self.log(
                    Level::Info,
                    "policy.passed",
                    Some(i),
                    format!("policy {policy_id} passed at {id}"),
                    &meta(&[]),
                );
                self.skip_children(i, "branch-not-taken");
                self.succeed(i, None);
            }
            Err(detail) => {
                let message = message
                    .as_ref()
                    .map(|(m, t)| match t.as_ref().map(|t| t.render(&ctx)) {
                        Ok(Ok(v)) => render_text(&v),
                        _ => (*m).to_owned(),
                    })
                    .unwrap_or_else(|| format!("policy {policy_id} failed at {id}"));
                let level = if *failure_action == FailureAction::Warn {
                    Level::Warn
                } else {
                    Level::Error
                };
                self.log(
                    level,
                    "policy.failed",
                    Some(i),
                    message.clone(),
                    &meta(&[
                        ("failureAction", failure_action.as_str().to_owned()),
                        ("detail", detail.clone()),
                    ]),
                );
                if attempt <= *retry_count {
                    let next = self.now.plus_seconds(def.retries.backoff_seconds);
                    self.schedule_retry(i, next, "policy-failed", &detail);
                    return;
                }
                match failure_action {
                    FailureAction::Abort => {
                        self.skip_children(i, "branch-not-taken");
                        self.fail(i, "policy-failed", Some(detail));
                    }
                    FailureAction::Warn => {
                        self.skip_children(i, "branch-not-taken");
                        self.succeed(i, None);
                    }
                    FailureAction::RequestOverride => {
                        let approval = override_approval.clone().unwrap_or_default();
                        self.st.nodes[i].policy = Some(PolicyPhase::Override);
                        self.open_gate(i, &approval, Some(message));
                    }
                    FailureAction::Branch => {
                        self.st.nodes[i].policy = Some(PolicyPhase::Branch);
                        self.touch();
                        self.advance(i);
                    }
                }
            }
        }
    }
}
