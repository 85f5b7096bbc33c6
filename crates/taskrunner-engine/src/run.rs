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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use taskrunner_expr::{Expression, Template, is_truthy, render_text};
use taskrunner_plan::{
    Aggregation, FailureAction, Iterations, LoopSource, Plan, PlanOutput, PlanStep, PlanStepKind,
    PlanValue, TemplatePiece,
};

use crate::error::Error;
use crate::event::{
    AttemptOutcome, Command, Decision, Event, Level, LogEntry, OutputResult, RunInfo, RunStatus,
    StepStatus,
};
use crate::secrets::Secrets;
use crate::state::{DecisionRecord, GateWait, HeldDecision, Node, PolicyPhase, RunState};
use crate::time::Timestamp;

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

/// Creates the node for `step` and its subtree (plan order: parent before children).
fn build(
    st: &mut RunState,
    step: &PlanStep,
    parent: Option<usize>,
    def: Vec<usize>,
    now: Timestamp,
) -> usize {
    let i = st.nodes.len();
    let skipped = !step.enabled;
    st.nodes.push(Node {
        id: step.id.clone(),
        template_id: step.template_id.clone(),
        parent,
        children: Vec::new(),
        def: def.clone(),
        detached: false,
        status: if skipped {
            StepStatus::Skipped
        } else {
            StepStatus::Pending
        },
        status_reason: if skipped {
            Some(
                step.status_reason
                    .clone()
                    .unwrap_or_else(|| "disabled".to_owned()),
            )
        } else {
            None
        },
        attempts: 0,
        last_transition_at: skipped.then_some(now),
        next_attempt_at: None,
        reached: false,
        started_at: None,
        running_attempt: None,
        cancel_sent: false,
        aborting: false,
        outputs: None,
        items: None,
        cursor: 0,
        branch: None,
        policy: None,
        gate: None,
        cause: None,
        def_approval: step_approval(step),
    });
    st.index.insert(step.id.clone(), i);
    for (c, child) in step.children.iter().enumerate() {
        let mut path = def.clone();
        path.push(c);
        let ci = build(st, child, Some(i), path, now);
        st.nodes[i].children.push(ci);
    }
    i
}

/// Attached nodes, depth-first, parent before children (plan order).
pub(crate) fn dfs(st: &RunState) -> Vec<usize> {
    let mut out = Vec::with_capacity(st.nodes.len());
    let mut stack: Vec<usize> = st.roots.iter().rev().copied().collect();
    while let Some(i) = stack.pop() {
        out.push(i);
        if let Some(n) = st.nodes.get(i) {
            stack.extend(n.children.iter().rev().copied());
        }
    }
    out
}

fn subtree(st: &RunState, root: usize, out: &mut Vec<usize>) {
    let mut stack = vec![root];
    while let Some(i) = stack.pop() {
        out.push(i);
        if let Some(n) = st.nodes.get(i) {
            stack.extend(n.children.iter().rev().copied());
        }
    }
}

pub(crate) fn def_at<'p>(plan: &'p Plan, path: &[usize]) -> Option<&'p PlanStep> {
    let (first, rest) = path.split_first()?;
    let mut step = plan.steps().get(*first)?;
    for c in rest {
        step = step.children.get(*c)?;
    }
    Some(step)
}

fn next_wake(st: &RunState) -> Option<Timestamp> {
    dfs(st)
        .into_iter()
        .filter_map(|i| {
            let n = &st.nodes[i];
            if n.finished() || !n.reached {
                return None;
            }
            let retry = n.next_attempt_at.filter(|_| n.running_attempt.is_none());
            let deadline = n.gate.as_ref().and_then(|g| g.deadline);
            match (retry, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        })
        .min()
}

fn step_approval(step: &PlanStep) -> Option<String> {
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

fn plan_uses_approval(plan: &Plan, approval_id: &str) -> bool {
    plan.walk()
        .any(|s| step_approval(s).as_deref() == Some(approval_id))
}

/// The earliest (plan order) gate instance waiting for `approval_id`.
fn awaiting_gate(st: &RunState, approval_id: &str) -> Option<usize> {
    dfs(st).into_iter().find(|&i| {
        let n = &st.nodes[i];
        n.awaiting()
            && n.gate
                .as_ref()
                .is_some_and(|g| g.approval_id == approval_id)
    })
}

/// Is any gate instance that may still wait for `approval_id` unfinished?
fn has_undecided_instance(st: &RunState, approval_id: &str) -> bool {
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

enum Seq {
    Pending,
    Done,
    Failed(usize),
}

/// Which entries of `steps` an expression context must hold.
///
/// Building every step's entry is O(steps in the run); doing it for each run-time evaluation
/// made a 10,000-item map quadratic. An expression can only observe the `steps` entries it
/// names (`Expression::references`): when it reads the whole root, or `steps` other than
/// through `steps.<id>…`, every entry is built ([`Need::All`]); otherwise only the named ids
/// ([`Need::Ids`]), resolved exactly as in the full context (iteration siblings by template id
/// included). Keys the expression cannot observe are the only difference.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Need {
    All,
    Ids(BTreeSet<String>),
}

impl Need {
    fn none() -> Need {
        Need::Ids(BTreeSet::new())
    }

    /// Adds what one expression reads.
    fn add(&mut self, expr: &Expression) {
        let Need::Ids(ids) = self else { return };
        let refs = expr.references();
        if refs.whole_root {
            *self = Need::All;
            return;
        }
        for path in &refs.paths {
            match path.as_slice() {
                [root] if root == "steps" => {
                    *self = Need::All;
                    return;
                }
                [root, id, ..] if root == "steps" => {
                    ids.insert(id.clone());
                }
                _ => {}
            }
        }
    }

    fn of(exprs: &[&Expression]) -> Need {
        let mut need = Need::none();
        for e in exprs {
            need.add(e);
        }
        need
    }

    /// Adds every run-time expression of a plan value.
    fn add_value(&mut self, value: &PlanValue) {
        match value {
            PlanValue::Literal(_) => {}
            PlanValue::Expr(e) => self.add(e),
            PlanValue::Template(pieces) => {
                for piece in pieces {
                    if let TemplatePiece::Expr(e) = piece {
                        self.add(e);
                    }
                }
            }
            PlanValue::Array(items) => items.iter().for_each(|v| self.add_value(v)),
            PlanValue::Object(members) => members.values().for_each(|v| self.add_value(v)),
        }
    }

    fn of_value(value: &PlanValue) -> Need {
        let mut need = Need::none();
        need.add_value(value);
        need
    }

    fn wants(&self, id: &str) -> bool {
        match self {
            Need::All => true,
            Need::Ids(ids) => ids.contains(id),
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

    // ---- logging -------------------------------------------------------------------------

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

    // ---- transitions ---------------------------------------------------------------------

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

    /// Evaluates the items of a run-time map/loop `i`; on anything but an array the step fails
    /// with `expression-error` and `None` is returned.
    fn runtime_items(&mut self, i: usize, items: &Expression, what: &str) -> Option<Vec<Value>> {
        let msg = match items.evaluate(&self.context_for(Some(i), &Need::of(&[items]))) {
            Ok(Value::Array(items)) => return Some(items),
            Ok(other) => format!(
                "{what} items '{}' must be an array, got {}",
                items.source(),
                type_name(&other)
            ),
            Err(e) => format!("{what} items '{}': {e}", items.source()),
        };
        self.fail_expansion(i, "expression-error", msg);
        None
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

    fn blocking(&self, i: usize) -> bool {
        self.st.nodes[i].status == StepStatus::Failed
            && !self.def(i).is_some_and(|d| d.continue_on_error)
    }

    // ---- events --------------------------------------------------------------------------

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

    fn attempt_finished(&mut self, i: usize, outcome: &AttemptOutcome) {
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

    fn schedule_retry(&mut self, i: usize, next: Timestamp, reason: &str, message: &str) {
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

    fn cancel(&mut self, actor: Option<&str>) {
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
    fn settle(&mut self) {
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

    // ---- approvals -----------------------------------------------------------------------

    fn decide(
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

    fn skip_children(&mut self, i: usize, reason: &str) {
        for c in self.st.nodes[i].children.clone() {
            self.skip_tree(c, reason);
        }
    }

    /// Starts waiting for `approval_id` at step `i`, then applies held decisions.
    fn open_gate(&mut self, i: usize, approval_id: &str, message: Option<String>) {
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

    // ---- expression context --------------------------------------------------------------

    /// `{inputs, secrets, run, steps, <iteration variables>}` as seen from step `at`
    /// (`None`: the run level, for pack outputs), with every step in `steps`.
    fn context(&self, at: Option<usize>) -> Value {
        self.context_for(at, &Need::All)
    }

    /// The context an expression needs: [`Cx::context`] with `steps` limited to the ids in
    /// `need` (see [`Need`]). Same values as the full context for every key the expression
    /// can read, without building an entry for each step of the run.
    fn context_for(&self, at: Option<usize>, need: &Need) -> Value {
        let st = &*self.st;
        let mut ctx = Map::new();
        ctx.insert(
            "inputs".into(),
            Value::Object(
                self.plan
                    .inputs()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        );
        ctx.insert("secrets".into(), self.secrets.to_json());
        ctx.insert(
            "run".into(),
            json!({"id": st.run_id, "tenant": st.tenant, "planHash": st.plan_hash}),
        );
        let entry = |n: &Node| {
            json!({
                "outputs": n.outputs.clone().unwrap_or(Value::Null),
                "status": n.status.as_str(),
            })
        };
        let mut steps = Map::new();
        match need {
            Need::All => {
                for i in dfs(st) {
                    let n = &st.nodes[i];
                    steps.insert(n.id.clone(), entry(n));
                }
            }
            Need::Ids(ids) => {
                // `index` holds exactly the attached nodes, the ones `dfs` visits.
                for id in ids {
                    if let Some(&k) = st.index.get(id)
                        && let Some(n) = st.nodes.get(k).filter(|n| !n.detached)
                    {
                        steps.insert(n.id.clone(), entry(n));
                    }
                }
            }
        }
        // Enclosing iterations, outermost first: bind their variables and let the template
        // ids of the iteration's steps mean this iteration's instances (rule 10).
        let mut chain = Vec::new();
        let mut cur = at;
        while let Some(c) = cur {
            let parent = st.nodes[c].parent;
            if let Some(p) = parent {
                chain.push((p, c));
            }
            cur = parent;
        }
        for (p, c) in chain.into_iter().rev() {
            let Some(def) = self.def(p) else { continue };
            let (iterator, index, body_len, plan_items) = match &def.kind {
                PlanStepKind::Map { iterations, .. } => ("item", "index", 1, iterations),
                PlanStepKind::Loop {
                    iterator,
                    index,
                    body_len,
                    iterations,
                    ..
                } => (iterator.as_str(), index.as_str(), *body_len, iterations),
                _ => continue,
            };
            let body_len = body_len.max(1);
            let pn = &st.nodes[p];
            // Children are created in arena order, so `children` is sorted.
            let Some(pos) = pn
                .children
                .binary_search(&c)
                .ok()
                .or_else(|| pn.children.iter().position(|&k| k == c))
            else {
                continue;
            };
            let it = pos / body_len;
            let item = match (&pn.items, plan_items) {
                (Some(items), _) => items.get(it).cloned(),
                (None, Iterations::Expanded { items }) => items.get(it).cloned(),
                (None, _) => None,
            };
            if let Some(item) = item {
                ctx.insert(iterator.to_owned(), item);
                ctx.insert(index.to_owned(), Value::from(it));
            }
            let from = it * body_len;
            let to = (from + body_len).min(pn.children.len());
            let mut members = Vec::new();
            for &k in pn.children.get(from..to).unwrap_or(&[]) {
                subtree(st, k, &mut members);
            }
            for k in members {
                let n = &st.nodes[k];
                if need.wants(&n.template_id) {
                    steps.insert(n.template_id.clone(), entry(n));
                }
            }
        }
        ctx.insert("steps".into(), Value::Object(steps));
        Value::Object(ctx)
    }

    // ---- scheduling ----------------------------------------------------------------------

    fn pump(&mut self) {
        if !self.st.started || self.terminal() {
            self.emit_wake();
            return;
        }
        let guard = 4 * self.st.nodes.len() + 64;
        for _ in 0..guard {
            let before = self.touched;
            let roots = self.st.roots.clone();
            match self.seq(&roots, "run-failed") {
                Seq::Pending => {}
                Seq::Done => {
                    self.complete(RunStatus::Succeeded);
                    return;
                }
                Seq::Failed(k) => {
                    self.st.failure = self.st.nodes[k].cause.clone();
                    self.complete(RunStatus::Failed);
                    return;
                }
            }
            if self.touched == before {
                break;
            }
        }
        let awaiting = dfs(self.st)
            .into_iter()
            .any(|i| self.st.nodes[i].awaiting());
        let status = if awaiting {
            RunStatus::AwaitingApproval
        } else {
            RunStatus::Running
        };
        if self.st.status != status {
            self.st.status = status;
            self.touch();
        }
        self.emit_wake();
    }

    fn emit_wake(&mut self) {
        let wake = if self.terminal() {
            None
        } else {
            next_wake(self.st)
        };
        if wake != self.st.last_wake {
            self.st.last_wake = wake;
            self.touch();
            if let Some(t) = wake {
                self.cmds.push(Command::WakeAt(t));
            }
        }
    }

    fn complete(&mut self, status: RunStatus) {
        // Anything not finished (only possible on failure) is skipped; a stray running
        // attempt is stopped.
        for i in dfs(self.st) {
            let n = &self.st.nodes[i];
            if let Some(attempt) = n.running_attempt {
                if !n.cancel_sent {
                    let step_id = n.id.clone();
                    self.st.nodes[i].cancel_sent = true;
                    self.cmds.push(Command::CancelAttempt { step_id, attempt });
                }
            } else if !n.finished() {
                self.skip_tree(i, "run-failed");
            }
        }
        self.st.status = status;
        self.st.held.clear();
        self.touch();
        let run_id = self.st.run_id.clone();
        if status == RunStatus::Failed {
            let (step, reason) = self.st.failure.clone().unwrap_or_default();
            self.log(
                Level::Error,
                "run.failed",
                None,
                format!("run {run_id} failed: step {step} ({reason})"),
                &[("stepId", step), ("reason", reason)],
            );
        } else {
            self.log(
                Level::Info,
                "run.completed",
                None,
                format!("run {run_id} succeeded"),
                &[],
            );
        }
        self.finish_outputs(status);
        self.settle();
    }

    fn finish_outputs(&mut self, status: RunStatus) {
        let ctx = self.context(None);
        let outputs: Vec<OutputResult> = self
            .plan
            .outputs()
            .iter()
            .map(|o| match o {
                PlanOutput::Object {
                    name,
                    expression,
                    value,
                } => {
                    let result = match value {
                        Some(v) => Ok(v.clone()),
                        None => expression.evaluate(&ctx).map_err(|e| e.to_string()),
                    };
                    match result {
                        Ok(v) => OutputResult::Object {
                            name: name.clone(),
                            value: Some(self.secrets.mask_value(&v)),
                            error: None,
                        },
                        Err(e) => OutputResult::Object {
                            name: name.clone(),
                            value: None,
                            error: Some(self.secrets.mask(&e)),
                        },
                    }
                }
                PlanOutput::File { name, path, .. } => {
                    let result =
                        path.resolve(&ctx)
                            .map_err(|e| e.to_string())
                            .and_then(|v| match v {
                                Value::String(s) => workspace_path(&s),
                                other => Err(format!("path is not a string: {other}")),
                            });
                    match result {
                        Ok(p) => OutputResult::File {
                            name: name.clone(),
                            path: Some(self.secrets.mask(&p)),
                            error: None,
                        },
                        Err(e) => OutputResult::File {
                            name: name.clone(),
                            path: None,
                            error: Some(self.secrets.mask(&e)),
                        },
                    }
                }
                other => OutputResult::Object {
                    name: other.name().to_owned(),
                    value: None,
                    error: Some("unsupported output type".to_owned()),
                },
            })
            .collect();
        self.st.outputs = Some(outputs.clone());
        self.cmds.push(Command::Finished { status, outputs });
    }

    /// Runs `kids` one after another. On a blocking failure, the rest are skipped with
    /// `reason`.
    fn seq(&mut self, kids: &[usize], reason: &str) -> Seq {
        for (pos, &k) in kids.iter().enumerate() {
            if !self.st.nodes[k].finished() {
                if self.st.nodes[k].reached {
                    self.advance(k);
                } else {
                    self.reach(k);
                }
                if !self.st.nodes[k].finished() {
                    return Seq::Pending;
                }
            }
            if self.blocking(k) {
                for &r in &kids[pos + 1..] {
                    self.skip_tree(r, reason);
                }
                return Seq::Failed(k);
            }
        }
        Seq::Done
    }

    /// Activates step `i`: its turn has come.
    fn reach(&mut self, i: usize) {
        let n = &mut self.st.nodes[i];
        if n.reached || n.finished() {
            return;
        }
        n.reached = true;
        n.started_at = Some(self.now);
        self.touch();
        let Some(def) = self.def(i) else {
            self.fail(i, "internal-error", Some("unknown plan step".to_owned()));
            return;
        };
        if let Some(when) = &def.when {
            match when.evaluate(&self.context_for(Some(i), &Need::of(&[when]))) {
                Err(e) => {
                    let msg = format!("when '{}': {e}", when.source());
                    self.skip_children(i, "parent-failed");
                    self.fail(i, "expression-error", Some(msg));
                    return;
                }
                Ok(v) if !is_truthy(&v) => {
                    self.skip_tree(i, "when-false");
                    return;
                }
                Ok(_) => {}
            }
        }
        match &def.kind {
            PlanStepKind::Run { .. } => self.start_attempt(i),
            PlanStepKind::GateApproval {
                approval_id,
                message,
            } => {
                let text = message.as_ref().map(|m| self.render(m, i));
                self.open_gate(i, approval_id, text);
            }
            PlanStepKind::GatePolicy { .. } => self.evaluate_policy(i),
            PlanStepKind::Parallel { .. } => {
                self.transition(i, StepStatus::Running, None);
                self.advance(i);
            }
            PlanStepKind::Map {
                items, iterations, ..
            } => {
                self.transition(i, StepStatus::Running, None);
                if matches!(iterations, Iterations::Runtime) {
                    let Some(items) = self.runtime_items(i, items, "map") else {
                        return;
                    };
                    if items.len() > MAP_ITEMS_MAX {
                        let msg = format!(
                            "{} items exceed the map limit of {MAP_ITEMS_MAX}",
                            items.len()
                        );
                        return self.fail_expansion(i, "too-many-items", msg);
                    }
                    if !self.expand(i, items) {
                        return;
                    }
                }
                self.advance(i);
            }
            PlanStepKind::Loop {
                source,
                max_iterations,
                iterations,
                ..
            } => {
                self.transition(i, StepStatus::Running, None);
                if matches!(iterations, Iterations::Runtime) {
                    let items = match source {
                        LoopSource::Expression(e) => {
                            let Some(items) = self.runtime_items(i, e, "loop") else {
                                return;
                            };
                            items
                        }
                        LoopSource::Static(items) => items.clone(),
                        LoopSource::Range { start, end, step } => {
                            range(*start, *end, *step, *max_iterations)
                        }
                        _ => Vec::new(),
                    };
                    if items.len() as u64 > *max_iterations {
                        let msg = format!(
                            "{} items exceed maxIterations ({max_iterations})",
                            items.len()
                        );
                        return self.fail_expansion(i, "max-iterations", msg);
                    }
                    if !self.expand(i, items) {
                        return;
                    }
                }
                self.advance(i);
            }
            PlanStepKind::Conditional {
                branches,
                else_step_count,
                taken,
                ..
            } => {
                self.transition(i, StepStatus::Running, None);
                let chosen = match taken {
                    Some(t) => *t,
                    None => {
                        let whens: Vec<&Expression> = branches.iter().map(|b| &b.when).collect();
                        let ctx = self.context_for(Some(i), &Need::of(&whens));
                        let mut chosen = branches.len();
                        for (b, branch) in branches.iter().enumerate() {
                            match branch.when.evaluate(&ctx) {
                                Ok(v) if is_truthy(&v) => {
                                    chosen = b;
                                    break;
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    let msg =
                                        format!("branch when '{}': {e}", branch.when.source());
                                    return self.fail_expansion(i, "expression-error", msg);
                                }
                            }
                        }
                        chosen
                    }
                };
                let ranges = branch_ranges(branches.iter().map(|b| b.step_count), *else_step_count);
                let kids = self.st.nodes[i].children.clone();
                for (b, (from, to)) in ranges.iter().enumerate() {
                    if b == chosen {
                        continue;
                    }
                    for &k in kids.get(*from..(*to).min(kids.len())).unwrap_or(&[]) {
                        self.skip_tree(k, "branch-not-taken");
                    }
                }
                self.st.nodes[i].branch = Some(chosen);
                self.advance(i);
            }
            other => {
                let msg = format!("step kind {} is not supported", other.name());
                self.fail(i, "unsupported-step-kind", Some(msg));
            }
        }
    }

    fn fail_expansion(&mut self, i: usize, reason: &str, message: String) {
        self.skip_children(i, "parent-failed");
        self.fail(i, reason, Some(message));
    }

    fn render(&self, value: &PlanValue, i: usize) -> String {
        match value.resolve(&self.context_for(Some(i), &Need::of_value(value))) {
            Ok(v) => render_text(&v),
            Err(e) => format!("{} (message could not be rendered: {e})", value.display()),
        }
    }

    /// Replaces the `[*]` template children of a run-time map/loop by one copy per item.
    fn expand(&mut self, i: usize, items: Vec<Value>) -> bool {
        let template = self.st.nodes[i].children.clone();
        let mut size = 0;
        for &t in &template {
            let mut all = Vec::new();
            subtree(self.st, t, &mut all);
            size += all.len();
        }
        let live = self.st.index.len();
        if live.saturating_add(items.len().saturating_mul(size)) > RUN_STEPS_MAX {
            let msg = format!(
                "expanding {} items would exceed {RUN_STEPS_MAX} steps",
                items.len()
            );
            self.fail_expansion(i, "too-many-steps", msg);
            return false;
        }
        let mid = self.st.nodes[i].id.clone();
        let from = format!("{mid}[*]::");
        let mut children = Vec::with_capacity(items.len() * template.len());
        for it in 0..items.len() {
            let to = format!("{mid}[{it}]::");
            for &t in &template {
                children.push(self.clone_subtree(t, i, &from, &to));
            }
        }
        for &t in &template {
            let mut all = Vec::new();
            subtree(self.st, t, &mut all);
            for k in all {
                let n = &mut self.st.nodes[k];
                n.detached = true;
                let id = n.id.clone();
                if self.st.index.get(&id) == Some(&k) {
                    self.st.index.remove(&id);
                }
            }
        }
        let masked = items.iter().map(|v| self.secrets.mask_value(v)).collect();
        let n = &mut self.st.nodes[i];
        n.children = children;
        n.items = Some(masked);
        self.touch();
        true
    }

    fn clone_subtree(&mut self, src: usize, parent: usize, from: &str, to: &str) -> usize {
        let s = &self.st.nodes[src];
        let id = match s.id.strip_prefix(from) {
            Some(rest) => format!("{to}{rest}"),
            None => s.id.clone(),
        };
        let skipped = s.status == StepStatus::Skipped;
        let node = Node {
            id: id.clone(),
            template_id: s.template_id.clone(),
            parent: Some(parent),
            children: Vec::new(),
            def: s.def.clone(),
            detached: false,
            status: s.status,
            status_reason: s.status_reason.clone(),
            attempts: 0,
            last_transition_at: skipped.then_some(self.now),
            next_attempt_at: None,
            reached: false,
            started_at: None,
            running_attempt: None,
            cancel_sent: false,
            aborting: false,
            outputs: None,
            items: None,
            cursor: 0,
            branch: None,
            policy: None,
            gate: None,
            cause: None,
            def_approval: s.def_approval.clone(),
        };
        let src_children = s.children.clone();
        let k = self.st.nodes.len();
        self.st.nodes.push(node);
        self.st.index.insert(id, k);
        for c in src_children {
            let ck = self.clone_subtree(c, k, from, to);
            self.st.nodes[k].children.push(ck);
        }
        k
    }

    fn start_attempt(&mut self, i: usize) {
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

    fn evaluate_policy(&mut self, i: usize) {
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

    /// Lets a reached, unfinished step make progress.
    fn advance(&mut self, i: usize) {
        if self.st.nodes[i].finished() || self.terminal() {
            return;
        }
        let Some(def) = self.def(i) else { return };
        if self.st.nodes[i].aborting {
            for k in self.st.nodes[i].children.clone() {
                if self.st.nodes[k].reached && !self.st.nodes[k].finished() {
                    self.advance(k);
                }
            }
            let n = &self.st.nodes[i];
            if n.running_attempt.is_none()
                && n.children.iter().all(|&k| self.st.nodes[k].finished())
            {
                self.fail(i, "cancelled", None);
            }
            return;
        }
        let now = self.now;
        match &def.kind {
            PlanStepKind::Run { .. } => {
                let n = &self.st.nodes[i];
                if n.status == StepStatus::Pending
                    && n.running_attempt.is_none()
                    && n.next_attempt_at.is_none_or(|t| t <= now)
                {
                    self.start_attempt(i);
                }
            }
            PlanStepKind::GateApproval { .. } => self.check_deadline(i),
            PlanStepKind::GatePolicy { .. } => match self.st.nodes[i].policy {
                None => {
                    let n = &self.st.nodes[i];
                    if n.status == StepStatus::Pending && n.next_attempt_at.is_none_or(|t| t <= now)
                    {
                        self.evaluate_policy(i);
                    }
                }
                Some(PolicyPhase::Override) => self.check_deadline(i),
                Some(PolicyPhase::Branch) => {
                    let kids = self.st.nodes[i].children.clone();
                    match self.seq(&kids, "parent-failed") {
                        Seq::Pending => {}
                        Seq::Done => self.succeed(i, None),
                        Seq::Failed(k) => self.fail_from_child(i, k),
                    }
                }
            },
            PlanStepKind::Parallel { max_parallel } => self.advance_parallel(i, *max_parallel),
            PlanStepKind::Map { max_parallel, .. } => {
                self.advance_parallel(i, Some((*max_parallel).max(1)));
            }
            PlanStepKind::Loop {
                body_len,
                until,
                aggregation,
                ..
            } => self.advance_loop(i, (*body_len).max(1), until.as_ref(), *aggregation),
            PlanStepKind::Conditional {
                branches,
                else_step_count,
                output_union,
                ..
            } => {
                let chosen = self.st.nodes[i].branch.unwrap_or(branches.len());
                let ranges = branch_ranges(branches.iter().map(|b| b.step_count), *else_step_count);
                let kids = self.st.nodes[i].children.clone();
                let (from, to) = ranges.get(chosen).copied().unwrap_or((0, 0));
                let body: Vec<usize> = kids
                    .get(from.min(kids.len())..to.min(kids.len()))
                    .unwrap_or(&[])
                    .to_vec();
                match self.seq(&body, "parent-failed") {
                    Seq::Pending => {}
                    Seq::Done => {
                        let out = body.last().and_then(|&k| self.st.nodes[k].outputs.clone());
                        let out = if *output_union {
                            Some(union_outputs(def, &ranges, chosen, out))
                        } else {
                            out
                        };
                        self.succeed(i, out);
                    }
                    Seq::Failed(k) => self.fail_from_child(i, k),
                }
            }
            other => {
                let msg = format!("step kind {} is not supported", other.name());
                self.fail(i, "unsupported-step-kind", Some(msg));
            }
        }
    }

    fn check_deadline(&mut self, i: usize) {
        let due = self.st.nodes[i]
            .gate
            .as_ref()
            .and_then(|g| g.deadline)
            .is_some_and(|d| d <= self.now);
        if due && self.st.nodes[i].awaiting() {
            self.expire(i, None);
        }
    }

    fn advance_parallel(&mut self, i: usize, limit: Option<u32>) {
        let kids = self.st.nodes[i].children.clone();
        for &k in &kids {
            if self.st.nodes[k].reached && !self.st.nodes[k].finished() {
                self.advance(k);
            }
        }
        if let Some(&failed) = kids.iter().find(|&&k| self.blocking(k)) {
            // Stop: cancel what runs, skip what has not started (rule 14).
            if self.st.nodes[i].cause.is_none() {
                let cause = self.st.nodes[failed].cause.clone();
                self.st.nodes[i].cause = cause;
                self.touch();
                for &k in &kids {
                    self.abort(k, "parent-failed");
                }
            }
            if kids.iter().all(|&k| self.st.nodes[k].finished()) {
                self.fail_from_child(i, failed);
            }
            return;
        }
        let limit = limit.map_or(usize::MAX, |l| l as usize);
        // Reaching a child changes no sibling, so the count of active children is kept as it
        // goes rather than recounted for each child (which made a large map cubic).
        let mut active = kids
            .iter()
            .filter(|&&c| self.st.nodes[c].reached && !self.st.nodes[c].finished())
            .count();
        for &k in &kids {
            if active >= limit {
                break;
            }
            if !self.st.nodes[k].reached && !self.st.nodes[k].finished() {
                self.reach(k);
                if self.blocking(k) {
                    // Handle the failure on the next pass (the pump repeats).
                    return;
                }
                if !self.st.nodes[k].finished() {
                    active += 1;
                }
            }
        }
        if kids.iter().all(|&k| self.st.nodes[k].finished()) {
            let outputs = self.aggregate_parallel(i);
            self.succeed(i, Some(outputs));
        }
    }

    fn aggregate_parallel(&self, i: usize) -> Value {
        let n = &self.st.nodes[i];
        let is_map = self
            .def(i)
            .is_some_and(|d| matches!(d.kind, PlanStepKind::Map { .. }));
        if is_map {
            Value::Array(
                n.children
                    .iter()
                    .map(|&k| self.st.nodes[k].outputs.clone().unwrap_or(Value::Null))
                    .collect(),
            )
        } else {
            Value::Object(
                n.children
                    .iter()
                    .map(|&k| {
                        let c = &self.st.nodes[k];
                        (
                            c.template_id.clone(),
                            c.outputs.clone().unwrap_or(Value::Null),
                        )
                    })
                    .collect(),
            )
        }
    }

    /// Stops `i` because a sibling failed: running attempts are cancelled, steps not started
    /// are skipped with `reason`, waiting steps that never made an attempt are skipped, and
    /// steps between attempts fail `cancelled`.
    fn abort(&mut self, i: usize, reason: &str) {
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

    fn advance_loop(
        &mut self,
        i: usize,
        body_len: usize,
        until: Option<&Expression>,
        aggregation: Aggregation,
    ) {
        let kids = self.st.nodes[i].children.clone();
        let count = kids.len().div_ceil(body_len);
        loop {
            let cur = self.st.nodes[i].cursor;
            if cur >= count {
                let out = self.aggregate_loop(i, body_len, aggregation);
                self.succeed(i, out);
                return;
            }
            let from = cur * body_len;
            let to = (from + body_len).min(kids.len());
            let body = &kids[from..to];
            match self.seq(body, "parent-failed") {
                Seq::Pending => return,
                Seq::Failed(k) => {
                    for &r in &kids[to..] {
                        self.skip_tree(r, "parent-failed");
                    }
                    self.fail_from_child(i, k);
                    return;
                }
                Seq::Done => {
                    self.st.nodes[i].cursor = cur + 1;
                    self.touch();
                    if let Some(until) = until {
                        match until.evaluate(&self.context_for(Some(body[0]), &Need::of(&[until])))
                        {
                            Ok(v) if is_truthy(&v) => {
                                for &r in &kids[to..] {
                                    self.skip_tree(r, "until-satisfied");
                                }
                                let out = self.aggregate_loop(i, body_len, aggregation);
                                self.succeed(i, out);
                                return;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                for &r in &kids[to..] {
                                    self.skip_tree(r, "parent-failed");
                                }
                                let msg = format!("until '{}': {e}", until.source());
                                self.fail(i, "expression-error", Some(msg));
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// An iteration's outputs are those of its last step (rule 11); only iterations that ran.
    fn aggregate_loop(&self, i: usize, body_len: usize, aggregation: Aggregation) -> Option<Value> {
        let n = &self.st.nodes[i];
        let ran = n.cursor.min(n.children.len().div_ceil(body_len));
        let outs: Vec<Value> = (0..ran)
            .map(|it| {
                let last = ((it + 1) * body_len).min(n.children.len()) - 1;
                self.st.nodes[n.children[last]]
                    .outputs
                    .clone()
                    .unwrap_or(Value::Null)
            })
            .collect();
        Some(match aggregation {
            Aggregation::Collect => Value::Array(outs),
            Aggregation::Merge => {
                let mut merged = Map::new();
                for o in outs {
                    if let Value::Object(m) = o {
                        merged.extend(m);
                    }
                }
                Value::Object(merged)
            }
            Aggregation::First => outs.into_iter().next().unwrap_or(Value::Null),
            Aggregation::Last => outs.into_iter().last().unwrap_or(Value::Null),
            Aggregation::None => return None,
        })
    }
}

/// A conditional's outputs with `outputUnion: true` (SPEC §8 rule 11).
///
/// The keys a branch "can produce" are only partly known before it runs, so the engine uses
/// this rule: the result holds
/// - every key of the outputs the taken branch actually produced (its last step's outputs,
///   values as produced), and
/// - for every other branch (`else` included), the keys of its last step's `with` object when
///   that step is a `run` with `uses: builtin:noop` (whose outputs are its `with`); literal and
///   run-time members count alike, since the keys are known in the plan either way. A branch
///   whose last step is anything else (another executor, a gate, a container) or which has no
///   steps contributes no keys.
///
/// Keys only another branch could produce are `null`. The result is always an object (empty
/// when no key is known), even when the taken branch produced nothing (its last step skipped,
/// or a gate) or produced a non-object.
fn union_outputs(
    def: &PlanStep,
    ranges: &[(usize, usize)],
    chosen: usize,
    taken: Option<Value>,
) -> Value {
    let mut out = match taken {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (b, &(from, to)) in ranges.iter().enumerate() {
        if b == chosen || to <= from {
            continue;
        }
        let Some(last) = def.children.get(to - 1) else {
            continue;
        };
        let PlanStepKind::Run { uses, with } = &last.kind else {
            continue;
        };
        if uses != "builtin:noop" {
            continue;
        }
        let keys: Vec<&String> = match with {
            PlanValue::Literal(Value::Object(m)) => m.keys().collect(),
            PlanValue::Object(m) => m.keys().collect(),
            _ => Vec::new(),
        };
        for k in keys {
            if !out.contains_key(k) {
                out.insert(k.clone(), Value::Null);
            }
        }
    }
    Value::Object(out)
}

/// Child index ranges of each branch, then `else`.
fn branch_ranges(counts: impl Iterator<Item = usize>, else_count: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for c in counts.chain(std::iter::once(else_count)) {
        out.push((start, start + c));
        start += c;
    }
    out
}

fn range(start: i64, end: i64, step: i64, max: u64) -> Vec<Value> {
    let mut out = Vec::new();
    if step == 0 {
        return out;
    }
    let mut v = start;
    while (step > 0 && v < end) || (step < 0 && v > end) {
        out.push(Value::from(v));
        if out.len() as u64 > max {
            break;
        }
        match v.checked_add(step) {
            Some(n) => v = n,
            None => break,
        }
    }
    out
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

/// A workspace-relative path: no absolute paths, drive letters or `..` (SPEC §5.6).
fn workspace_path(path: &str) -> Result<String, String> {
    let escapes = || "path escapes the workspace".to_owned();
    if path.is_empty() {
        return Err("path is empty".to_owned());
    }
    if path.starts_with('/') || path.starts_with('\\') || path.contains('\0') {
        return Err(escapes());
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return Err(escapes());
    }
    let mut parts = Vec::new();
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err(escapes()),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("path names the workspace itself".to_owned());
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_paths() {
        assert_eq!(workspace_path("out/./a.json"), Ok("out/a.json".to_owned()));
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "C:\\x",
            "\\\\srv\\x",
            "a/..",
        ] {
            assert_eq!(
                workspace_path(bad),
                Err("path escapes the workspace".to_owned())
            );
        }
        assert!(workspace_path("").is_err());
        assert!(workspace_path("./").is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(range(0, 3, 1, 10), vec![json!(0), json!(1), json!(2)]);
        assert_eq!(range(3, 0, -2, 10), vec![json!(3), json!(1)]);
        assert_eq!(range(0, 100, 1, 3).len(), 4);
        assert!(range(0, 3, 0, 10).is_empty());
    }

    fn need(src: &str) -> Need {
        Need::of(&[&Expression::parse(src).unwrap()])
    }

    #[test]
    fn needs() {
        let ids = |v: &[&str]| Need::Ids(v.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(need("steps.a.outputs.x"), ids(&["a"]));
        assert_eq!(
            need("steps.\"a-b\".status == 'x' && steps.c"),
            ids(&["a-b", "c"])
        );
        assert_eq!(need("steps | b.outputs"), ids(&["b"]));
        assert_eq!(need("inputs.x"), ids(&[]));
        assert_eq!(need("keys(steps)"), Need::All);
        assert_eq!(need("steps.*.status"), Need::All);
        assert_eq!(need("@"), Need::All);
        assert_eq!(need("length(@)"), Need::All);
    }

    /// At every step of a run with nested iterations, each expression gives the same value
    /// with the context limited to what it names as with the full context.
    #[test]
    fn limited_context_evaluates_like_the_full_one() {
        let yaml = r#"apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: ctx, version: 1.0.0}
spec:
  steps:
    - {id: gen, run: {uses: "builtin:noop", with: {items: [1, 2]}}}
    - id: outer
      loop:
        items: {expression: steps.gen.outputs.items}
        steps:
          - {id: a, run: {uses: "builtin:noop", with: {v: "{{ item }}"}}}
          - id: inner
            map:
              items: "[steps.a.outputs.v, `7`]"
              step: {id: w, run: {uses: "builtin:noop", with: {got: "{{ steps.a.outputs.v }}", i: "{{ item }}"}}}
          - {id: b, run: {uses: "builtin:noop", with: {w: "{{ steps.inner.outputs }}", a: "{{ steps.a }}"}}}
    - {id: last, run: {uses: "builtin:noop", with: {o: "{{ steps.outer.outputs }}"}}}
"#;
        let plan = Arc::new(taskrunner_plan::plan_yaml(yaml, &Map::new()).unwrap());
        let info = RunInfo {
            run_id: "r".to_owned(),
            tenant: "t".to_owned(),
        };
        let secrets = Secrets::new();
        let mut run = Run::new(plan.clone(), info, Timestamp(0));
        let exprs: Vec<Expression> = [
            "steps.a.outputs.v",
            "steps.w",
            "steps.b.status",
            "steps.gen.outputs.items[0]",
            "steps.\"outer[1]::a\".outputs",
            "steps.outer.status",
            "[steps.a, steps.inner.outputs, item, index]",
            "keys(steps)",
            "steps.nope",
        ]
        .iter()
        .map(|s| Expression::parse(s).unwrap())
        .collect();
        let mut queue = vec![Event::Started];
        let mut checked = 0;
        while let Some(event) = queue.pop() {
            for cmd in run.apply(Timestamp(0), &event, &secrets) {
                if let Command::StartAttempt {
                    step_id,
                    attempt,
                    with,
                    ..
                } = cmd
                {
                    let outputs = match with {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    };
                    queue.insert(
                        0,
                        Event::AttemptFinished {
                            step_id,
                            attempt,
                            outcome: AttemptOutcome::Succeeded { outputs },
                        },
                    );
                }
            }
            let mut state = run.state.clone();
            let cx = Cx {
                plan: &plan,
                st: &mut state,
                secrets: &secrets,
                now: Timestamp(0),
                cmds: Vec::new(),
                touched: 0,
            };
            for at in dfs(cx.st).into_iter().map(Some).chain([None]) {
                let full = cx.context(at);
                for e in &exprs {
                    let limited = cx.context_for(at, &Need::of(&[e]));
                    assert_eq!(e.evaluate(&limited), e.evaluate(&full), "{e} at {at:?}");
                    checked += 1;
                }
            }
        }
        assert_eq!(run.status(), RunStatus::Succeeded);
        assert_eq!(
            run.step_outputs("outer[1]::b").unwrap()["w"],
            json!([{"got": 2, "i": 2}, {"got": 2, "i": 7}])
        );
        assert!(checked > 500, "{checked}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(1500), "1.500s");
        assert_eq!(duration(-3), "0.000s");
    }
}
