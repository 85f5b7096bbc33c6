//! Attempts: starting one, its end, retries with backoff, and stopping them (a cancelled run,
//! a sibling's failure).

use serde_json::Value;
use taskrunner_plan::PlanStepKind;

use super::Cx;
use super::context::Need;
use super::schedule::dfs;
use crate::event::{AttemptOutcome, Command, Level, RunStatus, StepStatus};
use crate::state::PolicyPhase;
use crate::time::Timestamp;

impl<'a> Cx<'a> {
    pub(super) fn start_attempt(&mut self, i: usize) {
        let Some(def) = self.def(i) else { return };
        let PlanStepKind::Run { uses, with } = &def.kind else {
            return;
        };
        if self.terminal() {
            return;
        }
        let with = match with.resolve(&self.context_for(Some(i), &Need::of_value(with))) {
            Ok(v) => v,
            Err(e) => {
                self.fail(i, "expression-error", Some(format!("with: {e}")));
                return;
            }
        };
        let n = &mut self.st.nodes[i];
        n.attempts += 1;
        n.running_attempt = Some(n.attempts);
        n.cancel_sent = false;
        n.next_attempt_at = None;
        let attempt = n.attempts;
        let step_id = n.id.clone();
        self.transition(i, StepStatus::Running, None);
        self.log(
            Level::Info,
            "step.started",
            Some(i),
            format!("step {step_id} started (attempt {attempt}, {uses})"),
            &[("attempt", attempt.to_string()), ("uses", uses.clone())],
        );
        let timeout_seconds = match (def.timeout_seconds, self.plan.sandbox().quota_seconds) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let idempotency_key = format!(
            "{}/{}/{}/{}",
            self.st.tenant, self.st.run_id, step_id, attempt
        );
        self.cmds.push(Command::StartAttempt {
            step_id,
            attempt,
            uses: uses.clone(),
            with,
            timeout_seconds,
            idempotency_key,
        });
    }

    pub(super) fn attempt_finished(&mut self, i: usize, outcome: &AttemptOutcome) {
        let Some(def) = self.def(i) else { return };
        let n = &mut self.st.nodes[i];
        n.running_attempt = None;
        let stopped = n.cancel_sent || n.aborting || self.st.status.is_terminal();
        self.touch();
        match outcome {
            AttemptOutcome::Succeeded { outputs } if !stopped => {
                let masked = self.secrets.mask_value(&Value::Object(outputs.clone()));
                self.succeed(i, Some(masked));
            }
            AttemptOutcome::Succeeded { .. } => self.fail(i, "cancelled", None),
            AttemptOutcome::Failed { .. } if stopped => self.fail(i, "cancelled", None),
            AttemptOutcome::Failed { reason, message } => {
                let attempts = self.st.nodes[i].attempts;
                let reason = if reason.is_empty() {
                    "executor-error"
                } else {
                    reason
                };
                if attempts < def.retries.max_attempts {
                    let next = self.now.plus_seconds(def.retries.backoff_seconds);
                    self.schedule_retry(i, next, reason, message);
                } else {
                    self.fail(i, reason, Some(message.clone()));
                }
            }
        }
    }

    pub(super) fn schedule_retry(
        &mut self,
        i: usize,
        next: Timestamp,
        reason: &str,
        message: &str,
    ) {
        self.transition(i, StepStatus::Pending, Some("retry-scheduled"));
        self.st.nodes[i].next_attempt_at = Some(next);
        let n = &self.st.nodes[i];
        let text = format!(
            "step {} attempt {} failed ({reason}); retry at {}",
            n.id,
            n.attempts,
            next.to_rfc3339()
        );
        let text = if message.is_empty() {
            text
        } else {
            format!("{text}: {message}")
        };
        let attempt = n.attempts.to_string();
        self.log(
            Level::Warn,
            "step.retry-scheduled",
            Some(i),
            text,
            &[
                ("nextAttemptAt", next.to_rfc3339()),
                ("attempt", attempt),
                ("reason", reason.to_owned()),
            ],
        );
    }

    pub(super) fn cancel(&mut self, actor: Option<&str>) {
        let mut meta = Vec::new();
        if let Some(a) = actor {
            meta.push(("actor", a.to_owned()));
        }
        self.log(
            Level::Info,
            "run.cancel-requested",
            None,
            match actor {
                Some(a) => format!("cancellation requested by {a}"),
                None => "cancellation requested".to_owned(),
            },
            &meta,
        );
        self.st.status = RunStatus::Cancelled;
        self.st.held.clear();
        self.touch();
        for i in dfs(self.st) {
            let n = &self.st.nodes[i];
            if let Some(attempt) = n.running_attempt {
                if !n.cancel_sent {
                    let step_id = n.id.clone();
                    self.st.nodes[i].cancel_sent = true;
                    self.cmds.push(Command::CancelAttempt { step_id, attempt });
                }
            } else if n.status == StepStatus::Pending {
                self.skip_tree(i, "cancelled");
            }
        }
        self.settle();
        let run_id = self.st.run_id.clone();
        self.log(
            Level::Info,
            "run.cancelled",
            None,
            format!("run {run_id} cancelled"),
            &[],
        );
        self.finish_outputs(RunStatus::Cancelled);
    }

    /// After cancellation: a running parent whose children all finished ends `Failed`
    /// (`cancelled`). Parents come before children in the arena, so one reverse pass suffices.
    pub(super) fn settle(&mut self) {
        for i in (0..self.st.nodes.len()).rev() {
            let n = &self.st.nodes[i];
            if n.detached
                || n.finished()
                || n.children.is_empty()
                || n.running_attempt.is_some()
                || !n.children.iter().all(|&c| self.st.nodes[c].finished())
            {
                continue;
            }
            self.fail(i, "cancelled", None);
        }
    }

    /// Stops `i` because a sibling failed: running attempts are cancelled, steps not started
    /// are skipped with `reason`, waiting steps that never made an attempt are skipped, and
    /// steps between attempts fail `cancelled`.
    pub(super) fn abort(&mut self, i: usize, reason: &str) {
        let n = &self.st.nodes[i];
        if n.finished() {
            return;
        }
        if !n.reached {
            self.skip_tree(i, reason);
            return;
        }
        if let Some(attempt) = n.running_attempt {
            if !n.cancel_sent {
                let step_id = n.id.clone();
                self.st.nodes[i].cancel_sent = true;
                self.touch();
                self.cmds.push(Command::CancelAttempt { step_id, attempt });
            }
            return;
        }
        let container = !n.children.is_empty()
            && (n.policy == Some(PolicyPhase::Branch)
                || self.def(i).is_some_and(|d| {
                    !matches!(
                        d.kind,
                        PlanStepKind::Run { .. }
                            | PlanStepKind::GateApproval { .. }
                            | PlanStepKind::GatePolicy { .. }
                    )
                }));
        if container {
            if !self.st.nodes[i].aborting {
                self.st.nodes[i].aborting = true;
                self.touch();
            }
            for k in self.st.nodes[i].children.clone() {
                self.abort(k, reason);
            }
            if self.st.nodes[i]
                .children
                .iter()
                .all(|&k| self.st.nodes[k].finished())
            {
                self.fail(i, "cancelled", None);
            }
        } else if self.st.nodes[i].attempts == 0 {
            self.skip_tree(i, reason);
        } else {
            self.skip_children(i, reason);
            self.fail(i, "cancelled", None);
        }
    }
}
