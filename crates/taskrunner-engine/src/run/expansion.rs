//! The node tree: building it from the plan, run-time map/loop expansion (one copy of the
//! `[*]` template subtree per item), and the progress of parallel, map and loop steps.

use serde_json::Value;
use taskrunner_expr::{Expression, is_truthy};
use taskrunner_plan::{Aggregation, PlanStep};

use super::context::Need;
use super::gates::step_approval;
use super::schedule::{Seq, subtree};
use super::{Cx, RUN_STEPS_MAX, type_name};
use crate::event::StepStatus;
use crate::state::{Node, RunState};
use crate::time::Timestamp;

/// Creates the node for `step` and its subtree (plan order: parent before children).
pub(super) fn build(
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

impl<'a> Cx<'a> {
    /// Evaluates the items of a run-time map/loop `i`; on anything but an array the step fails
    /// with `expression-error` and `None` is returned.
    pub(super) fn runtime_items(
        &mut self,
        i: usize,
        items: &Expression,
        what: &str,
    ) -> Option<Vec<Value>> {
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

    pub(super) fn fail_expansion(&mut self, i: usize, reason: &str, message: String) {
        self.skip_children(i, "parent-failed");
        self.fail(i, reason, Some(message));
    }

    /// Replaces the `[*]` template children of a run-time map/loop by one copy per item.
    pub(super) fn expand(&mut self, i: usize, items: Vec<Value>) -> bool {
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

    pub(super) fn advance_parallel(&mut self, i: usize, limit: Option<u32>) {
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

    pub(super) fn advance_loop(
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
}

/// Child index ranges of each branch, then `else`.
pub(super) fn branch_ranges(
    counts: impl Iterator<Item = usize>,
    else_count: usize,
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for c in counts.chain(std::iter::once(else_count)) {
        out.push((start, start + c));
        start += c;
    }
    out
}

pub(super) fn range(start: i64, end: i64, step: i64, max: u64) -> Vec<Value> {
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
