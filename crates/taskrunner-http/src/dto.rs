//! Wire DTOs, converted by hand at the boundary (STYLE habit 10): request bodies are parsed
//! from JSON with errors naming the field (`body.planHash`), domain values are rendered into
//! the contract's shapes (`RunStateResponse`, `RunArtifact`) with timestamps as RFC 3339.

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use serde_json::{Map, Value, json};
use taskrunner_engine::{Decision, RunView, StepView, Timestamp};
use taskrunner_runtime::{Artifact, RunSummary};

use crate::error::ApiError;

/// 415 unless the request says its body is JSON (`application/json` or `…+json`).
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else if content_type.is_empty() {
        Err(ApiError::UnsupportedMediaType(
            "the request has no Content-Type, expected application/json".into(),
        ))
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type '{}' is not supported, expected application/json",
            content_type.chars().take(100).collect::<String>()
        )))
    }
}

/// The body as a JSON object (400 otherwise).
pub(crate) fn json_object(bytes: &Bytes) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "body",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(
            "body",
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

fn optional_string(body: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(
            format!("body.{field}"),
            format!("{field} must be a string"),
        )),
    }
}

fn required_string(body: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    optional_string(body, field)?.ok_or_else(|| {
        ApiError::bad_request(format!("body.{field}"), format!("{field} is required"))
    })
}

fn inputs(body: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    match body.get("inputs") {
        None => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(ApiError::bad_request(
            "body.inputs",
            "inputs must be an object of input values",
        )),
    }
}

/// The contract's `SimulationRequest`.
#[derive(Debug)]
pub(crate) struct SimulationRequest {
    pub(crate) manifest: String,
    pub(crate) inputs: Map<String, Value>,
}

impl SimulationRequest {
    pub(crate) fn parse(bytes: &Bytes) -> Result<SimulationRequest, ApiError> {
        let body = json_object(bytes)?;
        Ok(SimulationRequest {
            manifest: required_string(&body, "manifest")?,
            inputs: inputs(&body)?,
        })
    }
}

/// The contract's `CreateRunRequest`.
#[derive(Debug)]
pub(crate) struct CreateRunRequest {
    pub(crate) run_id: Option<String>,
    pub(crate) manifest: String,
    pub(crate) inputs: Map<String, Value>,
    pub(crate) tenant_id: Option<String>,
}

impl CreateRunRequest {
    pub(crate) fn parse(bytes: &Bytes) -> Result<CreateRunRequest, ApiError> {
        let body = json_object(bytes)?;
        Ok(CreateRunRequest {
            run_id: optional_string(&body, "runId")?,
            manifest: required_string(&body, "manifest")?,
            inputs: inputs(&body)?,
            tenant_id: optional_string(&body, "tenantId")?,
        })
    }
}

/// The contract's `ApprovalDecisionRequest`.
#[derive(Debug)]
pub(crate) struct ApprovalRequest {
    pub(crate) decision: Decision,
    pub(crate) plan_hash: String,
    pub(crate) actor_id: Option<String>,
    pub(crate) summary: Option<String>,
}

impl ApprovalRequest {
    pub(crate) fn parse(bytes: &Bytes) -> Result<ApprovalRequest, ApiError> {
        let body = json_object(bytes)?;
        let decision = match required_string(&body, "decision")?.as_str() {
            "approved" => Decision::Approved,
            "rejected" => Decision::Rejected,
            "expired" => Decision::Expired,
            other => {
                return Err(ApiError::bad_request(
                    "body.decision",
                    format!(
                        "decision '{}' is unknown, expected approved, rejected or expired",
                        other.chars().take(64).collect::<String>()
                    ),
                ));
            }
        };
        let plan_hash = required_string(&body, "planHash")?;
        if !is_plan_hash(&plan_hash) {
            return Err(ApiError::bad_request(
                "body.planHash",
                "planHash must match ^sha256:[a-f0-9]{64}$",
            ));
        }
        Ok(ApprovalRequest {
            decision,
            plan_hash,
            actor_id: optional_string(&body, "actorId")?,
            summary: optional_string(&body, "summary")?,
        })
    }
}

fn is_plan_hash(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn time(t: Timestamp) -> Value {
    Value::String(t.to_rfc3339())
}

/// `RunStateResponse` plus the extensions `status`, `tenantId` (SPEC §5.2) and, per step,
/// `templateId`, `parentStepId` (rule 8).
pub(crate) fn run_state(view: &RunView) -> Value {
    json!({
        "runId": view.run_id,
        "planHash": view.plan_hash,
        "failurePolicy": {
            "maxAttempts": view.failure_policy.max_attempts,
            "backoffSeconds": view.failure_policy.backoff_seconds,
            "continueOnError": view.failure_policy.continue_on_error,
        },
        "createdAt": time(view.created_at),
        "updatedAt": time(view.updated_at),
        "status": view.status.as_str(),
        "tenantId": view.tenant_id,
        "steps": view.steps.iter().map(step).collect::<Vec<_>>(),
    })
}

fn step(s: &StepView) -> Value {
    let mut o = Map::new();
    o.insert("stepId".into(), json!(s.step_id));
    o.insert("templateId".into(), json!(s.template_id));
    if let Some(parent) = &s.parent_step_id {
        o.insert("parentStepId".into(), json!(parent));
    }
    o.insert("kind".into(), json!(s.kind));
    o.insert("enabled".into(), json!(s.enabled));
    o.insert("continueOnError".into(), json!(s.continue_on_error));
    if let Some(m) = s.max_parallel {
        o.insert("maxParallel".into(), json!(m));
    }
    if let Some(a) = &s.approval_id {
        o.insert("approvalId".into(), json!(a));
    }
    if let Some(m) = &s.gate_message {
        o.insert("gateMessage".into(), json!(m));
    }
    o.insert("status".into(), json!(s.status.as_str()));
    o.insert("attempts".into(), json!(s.attempts));
    if let Some(t) = s.last_transition_at {
        o.insert("lastTransitionAt".into(), time(t));
    }
    if let Some(t) = s.next_attempt_at {
        o.insert("nextAttemptAt".into(), time(t));
    }
    if let Some(r) = &s.status_reason {
        o.insert("statusReason".into(), json!(r));
    }
    Value::Object(o)
}

/// `RunArtifact` plus the extensions `sha256` (bare hex) and `sizeBytes` (SPEC §5.6).
pub(crate) fn artifact(a: &Artifact) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(a.name));
    o.insert("type".into(), json!(a.kind.as_str()));
    let optional = [
        ("sourcePath", &a.source_path),
        ("storedPath", &a.stored_path),
        ("notes", &a.notes),
        ("expressionJson", &a.expression_json),
        ("sha256", &a.sha256),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            o.insert(key.into(), json!(v));
        }
    }
    o.insert("status".into(), json!(a.status.as_str()));
    if let Some(t) = a.captured_at {
        o.insert("capturedAt".into(), time(t));
    }
    if let Some(n) = a.size_bytes {
        o.insert("sizeBytes".into(), json!(n));
    }
    Value::Object(o)
}

/// One entry of the `GET /v1/task-runner/runs` extension (`RunSummary`).
pub(crate) fn run_summary(r: &RunSummary) -> Value {
    json!({
        "runId": r.run_id,
        "tenantId": r.tenant,
        "status": r.status.as_str(),
        "planHash": r.plan_hash,
        "packName": r.pack_name,
        "packVersion": r.pack_version,
        "createdAt": time(r.created_at),
        "updatedAt": time(r.updated_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_hash_pattern() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert!(is_plan_hash(&ok));
        assert!(!is_plan_hash(&format!("sha256:{}", "A".repeat(64))));
        assert!(!is_plan_hash(&format!("sha256:{}", "a".repeat(63))));
        assert!(!is_plan_hash("a".repeat(71).as_str()));
    }

    #[test]
    fn json_content_types() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            h
        };
        assert!(require_json(&with("application/json")).is_ok());
        assert!(require_json(&with("Application/JSON; charset=utf-8")).is_ok());
        assert!(require_json(&with("application/merge-patch+json")).is_ok());
        assert!(require_json(&with("text/plain")).is_err());
        assert!(require_json(&HeaderMap::new()).is_err());
    }

    #[test]
    fn approval_body_errors_name_the_field() {
        let parse = |s: &str| ApprovalRequest::parse(&Bytes::from(s.to_owned())).unwrap_err();
        let path = |e: ApiError| match e {
            ApiError::BadRequest { path, .. } => path,
            other => panic!("{other:?}"),
        };
        assert_eq!(path(parse("[]")).as_deref(), Some("body"));
        assert_eq!(
            path(parse(r#"{"decision":"maybe","planHash":"x"}"#)).as_deref(),
            Some("body.decision")
        );
        assert_eq!(
            path(parse(r#"{"decision":"approved","planHash":"x"}"#)).as_deref(),
            Some("body.planHash")
        );
        assert_eq!(
            path(parse(r#"{"planHash":"x"}"#)).as_deref(),
            Some("body.decision")
        );
    }
}
