//! [`Run`]: the state machine of one run (SPEC §5.3–§5.7, §8.2 rules 14–17 and 20).
//!
//! Calling contract: the driver journals an [`Event`], then calls [`Run::apply`] with the
//! event's time and the host's secrets, then performs the returned [`Command`]s in order. The
//! state is a pure fold of `(at, event)` pairs: the same events give the same state, whatever
//! the secrets' values are masked to. The engine never reads a clock, a file or the network.
//!
//! Scheduling is a fixpoint: after each event, `pump` walks the active part of the tree from
//! the top-level sequence and lets every reached, unfinished step make progress (start an
//! attempt that is due, expire a gate, activate the next child), until nothing changes.
//!
//! Files, one seam each (every one adds an `impl Cx` block for its part of the work):
//! `schedule` (the fixpoint: what becomes ready next, the tree walk, the next wake),
//! `attempts` (starting attempts, their end, retries and backoff, cancelling and aborting),
//! `gates` (approval and policy gates, decisions, expiry), `expansion` (the node tree: building
//! it, run-time map/loop expansion, parallel and loop progress), `context` (the expression
//! context and the `steps` entries an expression needs), `outputs` (step aggregation, the
//! conditional union, pack outputs).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use taskrunner_plan::{Plan, PlanStep};

use crate::error::Error;
use crate::event::{
    AttemptOutcome, Command, Decision, Event, Level, LogEntry, OutputResult, RunInfo, RunStatus,
    StepStatus,
};
use crate::secrets::Secrets;
use crate::state::RunState;
use crate::time::Timestamp;

mod attempts;
mod context;
mod expansion;
mod gates;
mod outputs;
mod schedule;
#[cfg(test)]
mod tests;

use expansion::build;
use gates::{awaiting_gate, has_undecided_instance, plan_uses_approval};
pub(crate) use schedule::{def_at, dfs};
use schedule::{next_wake, subtree};

/// A map expands to at most this many iterations at run time (`too-many-items` beyond).
pub const MAP_ITEMS_MAX: usize = 10_000;
/// A run holds at most this many steps after run-time expansion (`too-many-steps` beyond);
/// the planner's `STEPS_MAX`.
pub const RUN_STEPS_MAX: usize = 50_000;

/// The answer [`Run::check_decision`] gives before a decision is journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionCheck {
    /// The same actor already gave this decision for the same gate: do not journal it again,
    /// answer as before.
    pub already_applied: bool,
    /// This decision completes (or completed) the gate: `{resumed: true}`.
    pub resume: bool,
}

/// One run: its frozen plan and its state.
#[derive(Debug, Clone)]
pub struct Run {
    plan: Arc<Plan>,
    state: RunState,
}

impl PartialEq for Run {
    fn eq(&self, other: &Run) -> bool {
        self.plan.hash() == other.plan.hash() && self.state == other.state
    }
}

impl Run {
    /// A new run in `Pending`; every disabled plan step is `Skipped` from creation (with the
    /// plan's `statusReason`, and without a `step.skipped` log since the run has not started).
    pub fn new(plan: Arc<Plan>, info: RunInfo, created_at: Timestamp) -> Run {
        let mut state = RunState {
            run_id: info.run_id,
            tenant: info.tenant,
            plan_hash: plan.hash().to_owned(),
            created_at,
            updated_at: created_at,
            status: RunStatus::Pending,
            started: false,
            roots: Vec::new(),
            nodes: Vec::new(),
            index: BTreeMap::new(),
            held: BTreeMap::new(),
            decisions: Vec::new(),
            last_wake: None,
            failure: None,
            outputs: None,
        };
        for (i, step) in plan.steps().iter().enumerate() {
            let root = build(&mut state, step, None, vec![i], created_at);
            state.roots.push(root);
        }
        Run { plan, state }
    }

    /// Rebuilds a run from a stored state snapshot (a cache of the journal fold).
    pub fn from_state(plan: Arc<Plan>, state: RunState) -> Result<Run, Error> {
        if state.plan_hash != plan.hash() {
            return Err(Error::PlanHashMismatch {
                expected: plan.hash().to_owned(),
                given: state.plan_hash,
            });
        }
        Ok(Run { plan, state })
    }

    /// Applies one event at time `at` and returns what the driver must do.
    pub fn apply(&mut self, at: Timestamp, event: &Event, secrets: &Secrets) -> Vec<Command> {
        let mut cx = Cx {
            plan: &self.plan,
            st: &mut self.state,
            secrets,
            now: at,
            cmds: Vec::new(),
            touched: 0,
        };
        cx.handle(event);
        if cx.touched > 0 {
            cx.st.updated_at = at;
        }
        cx.cmds
    }

    /// The run status.
    pub fn status(&self) -> RunStatus {
        self.state.status
    }

    /// Succeeded, Failed or Cancelled.
    pub fn is_terminal(&self) -> bool {
        self.state.status.is_terminal()
    }

    /// The frozen plan.
    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// The serialisable state (compare it to check a replay).
    pub fn state(&self) -> &RunState {
        &self.state
    }

    /// The earliest pending timer (retry due, approval deadline), if any.
    pub fn next_wake(&self) -> Option<Timestamp> {
        if self.state.status.is_terminal() {
            return None;
        }
        next_wake(&self.state)
    }

    /// `(step id, attempt)` of every attempt in flight, in plan order.
    pub fn running_attempts(&self) -> Vec<(String, u32)> {
        dfs(&self.state)
            .into_iter()
            .filter_map(|i| {
                let n = &self.state.nodes[i];
                n.running_attempt.map(|a| (n.id.clone(), a))
            })
            .collect()
    }

    /// The outputs captured when the run finished.
    pub fn outputs(&self) -> Option<&[OutputResult]> {
        self.state.outputs.as_deref()
    }

    /// The (masked) outputs of a step.
    pub fn step_outputs(&self, step_id: &str) -> Option<&Value> {
        let i = *self.state.index.get(step_id)?;
        self.state.nodes.get(i)?.outputs.as_ref()
    }

    /// Decides how a decision would be answered, without changing anything (rule 16 order
    /// after auth: 404 → 409 `plan_hash_mismatch` → idempotent repeat → 409 `run_terminal` /
    /// `approval_already_decided`).
    pub fn check_decision(
        &self,
        approval_id: &str,
        decision: Decision,
        actor: &str,
        plan_hash: &str,
    ) -> Result<DecisionCheck, Error> {
        let st = &self.state;
        if !plan_uses_approval(&self.plan, approval_id) {
            return Err(Error::UnknownApproval(approval_id.to_owned()));
        }
        if plan_hash != st.plan_hash {
            return Err(Error::PlanHashMismatch {
                expected: st.plan_hash.clone(),
                given: plan_hash.to_owned(),
            });
        }
        let target = awaiting_gate(st, approval_id);
        let target_id = target.map(|t| st.nodes[t].id.clone());
        let last = st
            .decisions
            .iter()
            .rev()
            .find(|d| d.approval_id == approval_id && d.actor == actor);
        if let Some(last) = last
            && last.decision == decision
        {
            // A repeat of the same decision for the same gate (or, when nothing is waiting any
            // more, of the last decision this actor gave) is idempotent.
            let same_target = match (&target_id, &last.gate) {
                (Some(t), Some(g)) => t == g,
                (Some(_), None) => false,
                (None, None) => true,
                (None, Some(_)) => !has_undecided_instance(st, approval_id),
            };
            if same_target {
                return Ok(DecisionCheck {
                    already_applied: true,
                    resume: last.resumed,
                });
            }
        }
        if st.status.is_terminal() {
            return Err(Error::RunTerminal(st.status.as_str().to_owned()));
        }
        match target {
            Some(t) => {
                let resume = decision == Decision::Approved
                    && st.nodes[t].gate.as_ref().is_some_and(|g| {
                        !g.approvers.contains(actor) && g.approvers.len() + 1 >= g.required as usize
                    });
                Ok(DecisionCheck {
                    already_applied: false,
                    resume,
                })
            }
            None if has_undecided_instance(st, approval_id) => Ok(DecisionCheck {
                already_applied: false,
                resume: false,
            }),
            None => Err(Error::ApprovalAlreadyDecided(approval_id.to_owned())),
        }
    }
}

/// The working context of one `apply`.
struct Cx<'a> {
    plan: &'a Plan,
    st: &'a mut RunState,
    secrets: &'a Secrets,
    now: Timestamp,
    cmds: Vec<Command>,
    touched: u64,
}

impl<'a> Cx<'a> {
    fn touch(&mut self) {
        self.touched += 1;
    }

    fn def(&self, i: usize) -> Option<&'a PlanStep> {
        let plan: &'a Plan = self.plan;
        def_at(plan, &self.st.nodes.get(i)?.def)
    }

    fn terminal(&self) -> bool {
        self.st.status.is_terminal()
    }

    fn log(
        &mut self,
        level: Level,
        event_type: &str,
        step: Option<usize>,
        message: String,
        metadata: &[(&str, String)],
    ) {
        let step_id = step
            .and_then(|i| self.st.nodes.get(i))
            .map(|n| n.id.clone());
        self.cmds.push(Command::Log(LogEntry {
            timestamp: self.now,
            level,
            event_type: event_type.to_owned(),
            message: self.secrets.mask(&message),
            step_id,
            metadata: metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), self.secrets.mask(v)))
                .collect(),
        }));
    }

    fn transition(&mut self, i: usize, status: StepStatus, reason: Option<&str>) {
        let now = self.now;
        let n = &mut self.st.nodes[i];
        n.status = status;
        n.status_reason = reason.map(str::to_owned);
        n.last_transition_at = Some(now);
        if status.is_finished() {
            n.next_attempt_at = None;
        }
        self.touch();
    }

    fn succeed(&mut self, i: usize, outputs: Option<Value>) {
        self.transition(i, StepStatus::Succeeded, None);
        self.st.nodes[i].outputs = outputs;
        let started = self.st.nodes[i].started_at.unwrap_or(self.now);
        let id = self.st.nodes[i].id.clone();
        self.log(
            Level::Info,
            "step.completed",
            Some(i),
            format!("step {id} succeeded"),
            &[("duration", duration(self.now.0 - started.0))],
        );
    }

    fn fail(&mut self, i: usize, reason: &str, message: Option<String>) {
        self.transition(i, StepStatus::Failed, Some(reason));
        let n = &mut self.st.nodes[i];
        if n.cause.is_none() {
            n.cause = Some((n.id.clone(), reason.to_owned()));
        }
        let id = n.id.clone();
        let attempts = n.attempts;
        let message = match message {
            Some(m) if !m.is_empty() => format!("step {id} failed ({reason}): {m}"),
            _ => format!("step {id} failed ({reason})"),
        };
        let mut meta = vec![("reason", reason.to_owned())];
        if attempts > 0 {
            meta.push(("attempts", attempts.to_string()));
        }
        self.log(Level::Error, "step.failed", Some(i), message, &meta);
    }

    /// Fails `i` because of a child. The cause first recorded (a parallel records it when it
    /// stops, before siblings are cancelled) is kept, so the run blames the step that really
    /// failed, not a sibling cancelled because of it.
    fn fail_from_child(&mut self, i: usize, child: usize) {
        if self.st.nodes[i].cause.is_none() {
            let cause = self.st.nodes[child].cause.clone();
            self.st.nodes[i].cause = cause;
        }
        let cid = match &self.st.nodes[i].cause {
            Some((id, _)) => id.clone(),
            None => self.st.nodes[child].id.clone(),
        };
        self.fail(i, "child-failed", Some(format!("step {cid} failed")));
    }

    /// Skips `i` and every unfinished step below it.
    fn skip_tree(&mut self, i: usize, reason: &str) {
        let mut all = Vec::new();
        subtree(self.st, i, &mut all);
        for k in all {
            if self.st.nodes[k].finished() || self.st.nodes[k].running_attempt.is_some() {
                continue;
            }
            self.transition(k, StepStatus::Skipped, Some(reason));
            if self.st.started {
                let id = self.st.nodes[k].id.clone();
                self.log(
                    Level::Info,
                    "step.skipped",
                    Some(k),
                    format!("step {id} skipped ({reason})"),
                    &[("reason", reason.to_owned())],
                );
            }
        }
    }

    fn skip_children(&mut self, i: usize, reason: &str) {
        for c in self.st.nodes[i].children.clone() {
            self.skip_tree(c, reason);
        }
    }

    fn blocking(&self, i: usize) -> bool {
        self.st.nodes[i].status == StepStatus::Failed
            && !self.def(i).is_some_and(|d| d.continue_on_error)
    }

    fn handle(&mut self, event: &Event) {
        match event {
            Event::Started => {
                if self.st.started || self.terminal() {
                    return;
                }
                self.st.started = true;
                self.st.status = RunStatus::Running;
                self.touch();
                let run_id = self.st.run_id.clone();
                self.log(
                    Level::Info,
                    "run.started",
                    None,
                    format!("run {run_id} started"),
                    &[("planHash", self.st.plan_hash.clone())],
                );
            }
            Event::AttemptFinished {
                step_id,
                attempt,
                outcome,
            } => {
                let Some(&i) = self.st.index.get(step_id) else {
                    return;
                };
                if self.st.nodes[i].running_attempt != Some(*attempt) {
                    return;
                }
                self.attempt_finished(i, outcome);
                if self.terminal() {
                    self.settle();
                    return;
                }
            }
            Event::ApprovalDecided {
                approval_id,
                decision,
                actor,
                summary,
                plan_hash,
            } => {
                if self.terminal()
                    || *plan_hash != self.st.plan_hash
                    || !plan_uses_approval(self.plan, approval_id)
                {
                    return;
                }
                self.decide(approval_id, *decision, actor, summary.clone());
            }
            Event::CancelRequested { actor } => {
                if self.terminal() {
                    return;
                }
                self.cancel(actor.as_deref());
                return;
            }
            Event::Recovered => {
                let running: Vec<usize> = dfs(self.st)
                    .into_iter()
                    .filter(|&i| self.st.nodes[i].running_attempt.is_some())
                    .collect();
                for i in running {
                    self.attempt_finished(
                        i,
                        &AttemptOutcome::Failed {
                            reason: "interrupted".to_owned(),
                            message: "the process restarted while the attempt was running"
                                .to_owned(),
                        },
                    );
                }
                // Timers were lost with the process: emit the next one again.
                if self.st.last_wake.take().is_some() {
                    self.touch();
                }
                if self.terminal() {
                    self.settle();
                    return;
                }
            }
            Event::Tick => {}
        }
        self.pump();
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `1.500s`.
fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}
