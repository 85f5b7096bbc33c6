//! The fixpoint: which steps make progress next, the tree walk, the next wake.

use taskrunner_expr::{Expression, is_truthy};
use taskrunner_plan::{Iterations, LoopSource, Plan, PlanStep, PlanStepKind};

use super::context::Need;
use super::expansion::{branch_ranges, range};
use super::outputs::union_outputs;
use super::{Cx, MAP_ITEMS_MAX};
use crate::event::{Command, Level, RunStatus, StepStatus};
use crate::state::{PolicyPhase, RunState};
use crate::time::Timestamp;

pub(super) enum Seq {
    Pending,
    Done,
    Failed(usize),
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

pub(super) fn subtree(st: &RunState, root: usize, out: &mut Vec<usize>) {
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

pub(super) fn next_wake(st: &RunState) -> Option<Timestamp> {
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

impl<'a> Cx<'a> {
    pub(super) fn pump(&mut self) {
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

    /// Runs `kids` one after another. On a blocking failure, the rest are skipped with
    /// `reason`.
    pub(super) fn seq(&mut self, kids: &[usize], reason: &str) -> Seq {
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
    pub(super) fn reach(&mut self, i: usize) {
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

    /// Lets a reached, unfinished step make progress.
    pub(super) fn advance(&mut self, i: usize) {
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
}
