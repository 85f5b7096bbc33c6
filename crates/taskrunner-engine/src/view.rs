//! [`RunView`]: the read side of a run, shaped like the contract's `RunStateResponse` (plus
//! the extensions `status`, `tenantId`, `templateId`, `parentStepId`). Timestamps stay
//! [`Timestamp`]s; the HTTP layer formats them.

use serde::Serialize;
use taskrunner_plan::PlanStepKind;

use crate::event::{RunStatus, StepStatus};
use crate::run::{Run, def_at, dfs};
use crate::time::Timestamp;

/// The pack's `failure` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicyView {
    pub max_attempts: u32,
    pub backoff_seconds: u64,
    pub continue_on_error: bool,
}

/// A run as the API reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub run_id: String,
    pub plan_hash: String,
    pub failure_policy: FailurePolicyView,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub status: RunStatus,
    pub tenant_id: String,
    /// Depth-first, parent before children (plan order), run-time iterations included.
    pub steps: Vec<StepView>,
}

/// One step of a [`RunView`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    pub step_id: String,
    pub template_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_step_id: Option<String>,
    pub kind: &'static str,
    pub enabled: bool,
    pub continue_on_error: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_message: Option<String>,
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
}

impl Run {
    /// The run as `RunStateResponse` needs it.
    pub fn view(&self) -> RunView {
        let st = self.state();
        let plan = self.plan();
        let f = plan.failure();
        let steps = dfs(st)
            .into_iter()
            .filter_map(|i| {
                let n = st.nodes.get(i)?;
                let def = def_at(plan, &n.def)?;
                let (max_parallel, approval_id, literal_message) = match &def.kind {
                    PlanStepKind::Parallel { max_parallel } => (*max_parallel, None, None),
                    PlanStepKind::Map { max_parallel, .. } => (Some(*max_parallel), None, None),
                    PlanStepKind::GateApproval {
                        approval_id,
                        message,
                    } => (
                        None,
                        Some(approval_id.clone()),
                        message
                            .as_ref()
                            .and_then(|m| m.as_literal())
                            .map(taskrunner_expr::render_text),
                    ),
                    _ => (None, n.def_approval.clone(), None),
                };
                Some(StepView {
                    step_id: n.id.clone(),
                    template_id: n.template_id.clone(),
                    parent_step_id: n.parent.and_then(|p| st.nodes.get(p)).map(|p| p.id.clone()),
                    kind: def.kind.name(),
                    enabled: def.enabled,
                    continue_on_error: def.continue_on_error,
                    max_parallel,
                    approval_id,
                    gate_message: n
                        .gate
                        .as_ref()
                        .and_then(|g| g.message.clone())
                        .or(literal_message),
                    status: n.status,
                    attempts: n.attempts,
                    last_transition_at: n.last_transition_at,
                    next_attempt_at: n.next_attempt_at,
                    status_reason: n.status_reason.clone(),
                })
            })
            .collect();
        RunView {
            run_id: st.run_id.clone(),
            plan_hash: st.plan_hash.clone(),
            failure_policy: FailurePolicyView {
                max_attempts: f.max_attempts,
                backoff_seconds: f.backoff_seconds,
                continue_on_error: f.continue_on_error,
            },
            created_at: st.created_at,
            updated_at: st.updated_at,
            status: st.status,
            tenant_id: st.tenant.clone(),
            steps,
        }
    }
}
