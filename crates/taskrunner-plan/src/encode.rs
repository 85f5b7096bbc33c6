//! Plan → `taskrunner.plan/v1` JSON document. This function decides what is hashed: every
//! member written here is covered by the plan hash (documented in `docs/PLAN_FORMAT.md`).

use serde_json::{Map, Value, json};

use crate::model::{Iterations, LoopSource, PLAN_SCHEMA, Plan, PlanOutput, PlanStep, PlanStepKind};
use crate::value::PlanValue;

fn literal(v: &Value) -> Value {
    PlanValue::Literal(v.clone()).to_json()
}

fn put_opt<T: Into<Value>>(map: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), v.into());
    }
}

/// The plan document (without hash).
pub(crate) fn plan_to_json(plan: &Plan) -> Value {
    let mut doc = Map::new();
    doc.insert("schema".into(), json!(PLAN_SCHEMA));
    doc.insert(
        "pack".into(),
        json!({"name": plan.pack.name, "version": plan.pack.version}),
    );
    doc.insert(
        "inputs".into(),
        Value::Object(
            plan.inputs
                .iter()
                .map(|(k, v)| (k.clone(), literal(v)))
                .collect(),
        ),
    );
    doc.insert(
        "secrets".into(),
        Value::Array(
            plan.secrets
                .iter()
                .map(|s| json!({"name": s.name, "required": s.required}))
                .collect(),
        ),
    );
    doc.insert(
        "failure".into(),
        json!({
            "maxAttempts": plan.failure.max_attempts,
            "backoffSeconds": plan.failure.backoff_seconds,
            "continueOnError": plan.failure.continue_on_error,
        }),
    );
    let mut sandbox = Map::new();
    sandbox.insert("mode".into(), json!(plan.sandbox.mode.as_str()));
    sandbox.insert(
        "egressAllowlist".into(),
        json!(plan.sandbox.egress_allowlist),
    );
    put_opt(
        &mut sandbox,
        "cpuLimitMillicores",
        plan.sandbox.cpu_limit_millicores,
    );
    put_opt(
        &mut sandbox,
        "memoryLimitMiB",
        plan.sandbox.memory_limit_mib,
    );
    put_opt(&mut sandbox, "quotaSeconds", plan.sandbox.quota_seconds);
    doc.insert("sandbox".into(), Value::Object(sandbox));
    let mut slo = Map::new();
    put_opt(&mut slo, "runP95Seconds", plan.slo.run_p95_seconds);
    put_opt(
        &mut slo,
        "approvalP95Seconds",
        plan.slo.approval_p95_seconds,
    );
    put_opt(&mut slo, "maxQueueDepth", plan.slo.max_queue_depth);
    doc.insert("slo".into(), Value::Object(slo));
    doc.insert(
        "approvals".into(),
        Value::Array(
            plan.approvals
                .iter()
                .map(|a| {
                    let mut m = Map::new();
                    m.insert("id".into(), json!(a.id));
                    m.insert("grants".into(), json!(a.grants));
                    m.insert("requiredApprovals".into(), json!(a.required_approvals));
                    put_opt(&mut m, "expiresAfterSeconds", a.expires_after_seconds);
                    put_opt(&mut m, "reasonTemplate", a.reason_template.clone());
                    Value::Object(m)
                })
                .collect(),
        ),
    );
    doc.insert(
        "policies".into(),
        Value::Array(
            plan.policies
                .iter()
                .map(|p| {
                    let mut m = Map::new();
                    m.insert("id".into(), json!(p.id));
                    m.insert("version".into(), json!(p.version));
                    m.insert("rule".into(), json!(p.rule.source()));
                    put_opt(&mut m, "message", p.message.clone());
                    Value::Object(m)
                })
                .collect(),
        ),
    );
    doc.insert(
        "steps".into(),
        Value::Array(plan.steps.iter().map(step_to_json).collect()),
    );
    doc.insert(
        "outputs".into(),
        Value::Array(
            plan.outputs
                .iter()
                .map(|o| match o {
                    PlanOutput::File {
                        name,
                        source: _,
                        path,
                    } => {
                        json!({"name": name, "type": "file", "path": path.to_json()})
                    }
                    PlanOutput::Object {
                        name,
                        expression,
                        value,
                    } => {
                        let mut m = Map::new();
                        m.insert("name".into(), json!(name));
                        m.insert("type".into(), json!("object"));
                        m.insert("expression".into(), json!(expression.source()));
                        if let Some(v) = value {
                            m.insert("value".into(), literal(v));
                        }
                        Value::Object(m)
                    }
                })
                .collect(),
        ),
    );
    Value::Object(doc)
}

fn iterations_json(m: &mut Map<String, Value>, iterations: &Iterations, body_len: usize) {
    m.insert("bodySize".into(), json!(body_len));
    match iterations {
        Iterations::Expanded { items } => {
            m.insert("expanded".into(), json!(true));
            m.insert(
                "iterations".into(),
                Value::Array(items.iter().map(literal).collect()),
            );
        }
        Iterations::Runtime => {
            m.insert("expanded".into(), json!(false));
        }
    }
}

pub(crate) fn step_to_json(step: &PlanStep) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(step.id));
    m.insert("templateId".into(), json!(step.template_id));
    m.insert("kind".into(), json!(step.kind.name()));
    m.insert("enabled".into(), json!(step.enabled));
    put_opt(&mut m, "statusReason", step.status_reason.clone());
    put_opt(&mut m, "name", step.name.clone());
    if let Some(when) = &step.when {
        m.insert("when".into(), json!(when.source()));
    }
    m.insert("continueOnError".into(), json!(step.continue_on_error));
    match &step.kind {
        PlanStepKind::Run { uses, with } => {
            m.insert("uses".into(), json!(uses));
            m.insert("with".into(), with.to_json());
            retries_json(&mut m, step);
        }
        PlanStepKind::GateApproval {
            approval_id,
            message,
        } => {
            m.insert("approvalId".into(), json!(approval_id));
            if let Some(msg) = message {
                m.insert("message".into(), msg.to_json());
            }
        }
        PlanStepKind::GatePolicy {
            policy_id,
            failure_action,
            override_approval,
            retry_count,
        } => {
            m.insert("policyId".into(), json!(policy_id));
            m.insert("failureAction".into(), json!(failure_action.as_str()));
            put_opt(&mut m, "overrideApproval", override_approval.clone());
            m.insert("retryCount".into(), json!(retry_count));
            retries_json(&mut m, step);
        }
        PlanStepKind::Parallel { max_parallel } => {
            put_opt(&mut m, "maxParallel", *max_parallel);
        }
        PlanStepKind::Map {
            items,
            max_parallel,
            iterations,
            body_len,
        } => {
            m.insert("items".into(), json!(items.source()));
            m.insert("maxParallel".into(), json!(max_parallel));
            iterations_json(&mut m, iterations, *body_len);
        }
        PlanStepKind::Loop {
            source,
            iterator,
            index,
            max_iterations,
            until,
            aggregation,
            iterations,
            body_len,
        } => {
            let items = match source {
                LoopSource::Expression(e) => json!({"expression": e.source()}),
                LoopSource::Range { start, end, step } => {
                    json!({"range": {"start": start, "end": end, "step": step}})
                }
                LoopSource::Static(items) => {
                    json!({"static": items.iter().map(literal).collect::<Vec<_>>()})
                }
            };
            m.insert("items".into(), items);
            m.insert("iterator".into(), json!(iterator));
            m.insert("index".into(), json!(index));
            m.insert("maxIterations".into(), json!(max_iterations));
            if let Some(u) = until {
                m.insert("until".into(), json!(u.source()));
            }
            m.insert("aggregation".into(), json!(aggregation.as_str()));
            iterations_json(&mut m, iterations, *body_len);
        }
        PlanStepKind::Conditional {
            branches,
            else_step_count,
            output_union,
            taken,
        } => {
            m.insert(
                "branches".into(),
                Value::Array(
                    branches
                        .iter()
                        .map(|b| json!({"when": b.when.source(), "stepCount": b.step_count}))
                        .collect(),
                ),
            );
            m.insert("elseStepCount".into(), json!(else_step_count));
            m.insert("outputUnion".into(), json!(output_union));
            put_opt(&mut m, "branchTaken", *taken);
        }
    }
    m.insert(
        "children".into(),
        Value::Array(step.children.iter().map(step_to_json).collect()),
    );
    Value::Object(m)
}

fn retries_json(m: &mut Map<String, Value>, step: &PlanStep) {
    m.insert(
        "retries".into(),
        json!({"maxAttempts": step.retries.max_attempts, "backoffSeconds": step.retries.backoff_seconds}),
    );
    put_opt(m, "timeoutSeconds", step.timeout_seconds);
}
