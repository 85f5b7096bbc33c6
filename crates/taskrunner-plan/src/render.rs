//! Human renderings: the plan as a tree, the simulation as a table.

use std::fmt::Write;

use crate::model::{Plan, PlanStep, PlanStepKind};
use crate::simulate::{SimulationResponse, SimulationStep};

/// A readable tree of the plan (`taskrunner plan --format tree`).
pub fn plan_tree(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} ({})",
        plan.pack().name,
        plan.pack().version,
        plan.hash()
    );
    let count = plan.steps().len();
    for (i, step) in plan.steps().iter().enumerate() {
        tree_step(&mut out, step, "", i + 1 == count);
    }
    out
}

fn tree_step(out: &mut String, step: &PlanStep, indent: &str, last: bool) {
    let branch = if last { "└─ " } else { "├─ " };
    let detail = match &step.kind {
        PlanStepKind::Run { uses, .. } => format!(" uses {uses}"),
        PlanStepKind::GateApproval { approval_id, .. } => format!(" approval {approval_id}"),
        PlanStepKind::GatePolicy {
            policy_id,
            failure_action,
            ..
        } => {
            format!(" policy {policy_id} on failure {}", failure_action.as_str())
        }
        PlanStepKind::Parallel {
            max_parallel: Some(n),
        } => format!(" maxParallel {n}"),
        PlanStepKind::Parallel { max_parallel: None } => String::new(),
        PlanStepKind::Map {
            items,
            max_parallel,
            ..
        } => {
            format!(" over {} maxParallel {max_parallel}", items.source())
        }
        PlanStepKind::Loop { source, .. } => format!(" over {}", source.display()),
        PlanStepKind::Conditional {
            taken, branches, ..
        } => match taken {
            Some(t) if *t == branches.len() => " takes else".to_owned(),
            Some(t) => format!(" takes branch {t}"),
            None => " decided at run time".to_owned(),
        },
    };
    let mut flags = String::new();
    if let Some(reason) = &step.status_reason {
        let _ = write!(flags, " [skipped: {reason}]");
    }
    if let Some(when) = &step.when {
        let _ = write!(flags, " [when {}]", when.source());
    }
    let _ = writeln!(
        out,
        "{indent}{branch}{} ({}){detail}{flags}",
        step.id,
        step.kind.name()
    );
    let next = format!("{indent}{}", if last { "   " } else { "│  " });
    let count = step.children.len();
    for (i, child) in step.children.iter().enumerate() {
        tree_step(out, child, &next, i + 1 == count);
    }
}

/// A table of the simulation (`taskrunner simulate --format table`).
pub fn simulation_table(sim: &SimulationResponse) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    fn walk(rows: &mut Vec<[String; 4]>, step: &SimulationStep, depth: usize) {
        let detail = step
            .uses
            .clone()
            .or_else(|| step.approval_id.as_ref().map(|a| format!("approval {a}")))
            .or_else(|| {
                step.policy_info
                    .as_ref()
                    .map(|p| format!("policy {} ({})", p.policy_id, p.failure_action))
            })
            .or_else(|| {
                step.loop_info
                    .as_ref()
                    .map(|l| format!("over {}", l.items_expression))
            })
            .unwrap_or_default();
        let status = match &step.status_reason {
            Some(r) => format!("{} ({r})", step.status),
            None => step.status.to_owned(),
        };
        rows.push([
            format!("{}{}", "  ".repeat(depth), step.id),
            step.kind.to_owned(),
            status,
            detail,
        ]);
        for child in &step.children {
            walk(rows, child, depth + 1);
        }
    }
    for step in &sim.steps {
        walk(&mut rows, step, 0);
    }
    let header = [
        "STEP".to_owned(),
        "KIND".to_owned(),
        "STATUS".to_owned(),
        "DETAIL".to_owned(),
    ];
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(rows.iter()) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i == 3 {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "plan hash: {}", sim.plan_hash);
    let _ = writeln!(
        out,
        "pending approvals: {}",
        if sim.has_pending_approvals {
            "yes"
        } else {
            "no"
        }
    );
    for o in &sim.outputs {
        let _ = writeln!(
            out,
            "output {} ({}){}",
            o.name,
            o.ty,
            if o.requires_runtime_value {
                ": known at run time"
            } else {
                ""
            }
        );
    }
    out
}
