//! Simulation (SPEC §4): walks a plan without executing anything and produces exactly the
//! contract's `SimulationResponse` (field names and enum spellings as in the OpenAPI file).

use serde::Serialize;
use taskrunner_expr::Expression;

use crate::model::{FailureAction, Plan, PlanOutput, PlanStep, PlanStepKind};

/// The contract's `FailurePolicy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicyDto {
    pub max_attempts: u32,
    pub backoff_seconds: u64,
    pub continue_on_error: bool,
}

/// The contract's `SimulationResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulationResponse {
    pub plan_hash: String,
    pub failure_policy: FailurePolicyDto,
    pub steps: Vec<SimulationStep>,
    pub outputs: Vec<SimulationOutput>,
    pub has_pending_approvals: bool,
}

/// The contract's `SimulationStep`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulationStep {
    pub id: String,
    pub template_id: String,
    pub kind: &'static str,
    pub enabled: bool,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Written only when true (the contract's examples omit the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continue_on_error: Option<bool>,
    pub children: Vec<SimulationStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loop_info: Option<LoopInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditional_info: Option<ConditionalInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_info: Option<PolicyInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoopInfo {
    pub items_expression: String,
    pub iterator: String,
    pub index: String,
    /// Omitted for a map, which has no `maxIterations`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_iterations: Option<u64>,
    pub aggregation_mode: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BranchInfo {
    pub condition: String,
    pub step_count: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionalInfo {
    pub branches: Vec<BranchInfo>,
    pub else_step_count: usize,
    pub output_union: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyInfo {
    pub policy_id: String,
    pub policy_version: String,
    pub failure_action: &'static str,
    pub retry_count: u32,
}

/// The contract's `SimulationOutput`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulationOutput {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub requires_runtime_value: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_expression: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_expression: Option<String>,
}

/// Simulates a plan. Pure: nothing is executed or stored.
pub fn simulate(plan: &Plan) -> SimulationResponse {
    let f = plan.failure();
    SimulationResponse {
        plan_hash: plan.hash().to_owned(),
        failure_policy: FailurePolicyDto {
            max_attempts: f.max_attempts,
            backoff_seconds: f.backoff_seconds,
            continue_on_error: f.continue_on_error,
        },
        steps: plan.steps().iter().map(|s| sim_step(plan, s)).collect(),
        outputs: plan
            .outputs()
            .iter()
            .map(|o| match o {
                PlanOutput::File { name, source, .. } => SimulationOutput {
                    name: name.clone(),
                    ty: "file",
                    requires_runtime_value: true,
                    path_expression: Some(source.clone()),
                    value_expression: None,
                },
                PlanOutput::Object {
                    name,
                    expression,
                    value,
                } => SimulationOutput {
                    name: name.clone(),
                    ty: "object",
                    requires_runtime_value: value.is_none(),
                    path_expression: None,
                    value_expression: Some(expression.source().to_owned()),
                },
            })
            .collect(),
        has_pending_approvals: plan.walk().any(|s| {
            s.enabled
                && match &s.kind {
                    PlanStepKind::GateApproval { .. } => true,
                    PlanStepKind::GatePolicy { failure_action, .. } => {
                        *failure_action == FailureAction::RequestOverride
                    }
                    _ => false,
                }
        }),
    }
}

fn sim_step(plan: &Plan, step: &PlanStep) -> SimulationStep {
    let mut out = SimulationStep {
        id: step.id.clone(),
        template_id: step.template_id.clone(),
        kind: step.kind.name(),
        enabled: step.enabled,
        status: "Pending",
        status_reason: step.status_reason.clone(),
        uses: None,
        approval_id: None,
        gate_message: None,
        max_parallel: None,
        continue_on_error: step.continue_on_error.then_some(true),
        children: step.children.iter().map(|c| sim_step(plan, c)).collect(),
        loop_info: None,
        conditional_info: None,
        policy_info: None,
    };
    // Kind-specific details are reported whatever the status.
    match &step.kind {
        PlanStepKind::Run { uses, .. } => out.uses = Some(uses.clone()),
        PlanStepKind::GateApproval {
            approval_id,
            message,
        } => {
            out.status = "RequiresApproval";
            out.approval_id = Some(approval_id.clone());
            out.gate_message = message.as_ref().map(|m| m.display());
        }
        PlanStepKind::GatePolicy {
            policy_id,
            failure_action,
            retry_count,
            ..
        } => {
            out.status = "RequiresPolicy";
            out.policy_info = Some(PolicyInfo {
                policy_id: policy_id.clone(),
                policy_version: plan
                    .policy(policy_id)
                    .map(|p| p.version.clone())
                    .unwrap_or_default(),
                failure_action: failure_action.as_str(),
                retry_count: *retry_count,
            });
        }
        PlanStepKind::Parallel { max_parallel } => out.max_parallel = *max_parallel,
        PlanStepKind::Map {
            items,
            max_parallel,
            ..
        } => {
            out.status = "WillIterate";
            out.max_parallel = Some(*max_parallel);
            out.loop_info = Some(LoopInfo {
                items_expression: items.source().to_owned(),
                iterator: "item".into(),
                index: "index".into(),
                max_iterations: None,
                aggregation_mode: "collect",
            });
        }
        PlanStepKind::Loop {
            source,
            iterator,
            index,
            max_iterations,
            aggregation,
            ..
        } => {
            out.status = "WillIterate";
            out.loop_info = Some(LoopInfo {
                items_expression: source.display(),
                iterator: iterator.clone(),
                index: index.clone(),
                max_iterations: Some(*max_iterations),
                aggregation_mode: aggregation.as_str(),
            });
        }
        PlanStepKind::Conditional {
            branches,
            else_step_count,
            output_union,
            ..
        } => {
            out.status = "WillBranch";
            out.conditional_info = Some(ConditionalInfo {
                branches: branches
                    .iter()
                    .map(|b| BranchInfo {
                        condition: source(&b.when),
                        step_count: b.step_count,
                    })
                    .collect(),
                else_step_count: *else_step_count,
                output_union: *output_union,
            });
        }
    }
    if !step.enabled {
        out.status = "Skipped";
    }
    out
}

fn source(e: &Expression) -> String {
    e.source().to_owned()
}
