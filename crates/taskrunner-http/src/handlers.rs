//! The operations of the contract and the extensions (SPEC §4–§6), except the log stream
//! (`logs.rs`). Each handler: authenticate and settle the tenant, check the scope, parse and
//! check the request, call the runtime, render the contract's shape.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use taskrunner_auth::Access;
use taskrunner_runtime::{CreateRun, DecisionRequest, RuntimeError};
use taskrunner_store::ListQuery;

use crate::AppState;
use crate::auth::{Caller, caller, check_run_id};
use crate::dto::{self, ApprovalRequest, CreateRunRequest, SimulationRequest};
use crate::error::ApiError;
use crate::paths;

/// Page size of `GET /v1/task-runner/runs` without `limit`.
const LIST_LIMIT_DEFAULT: usize = 50;

/// Reads the whole body; 413 when the body limit layer cut it off (chunked bodies too).
pub(crate) async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, usize::MAX).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return ApiError::PayloadTooLarge("the request body is too large".into());
            }
            source = err.source();
        }
        ApiError::bad_request("body", "the request body could not be read")
    })
}

/// Authenticates a JSON request and reads its body.
async fn json_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    access: Option<Access>,
) -> Result<(Caller, Bytes), ApiError> {
    let caller = caller(state, headers)?;
    if let Some(access) = access {
        caller.require(access)?;
    }
    dto::require_json(headers)?;
    let bytes = read_body(body).await?;
    Ok((caller, bytes))
}

fn location(run_id: &str) -> (header::HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&format!("{}/{run_id}", paths::RUNS))
        .unwrap_or_else(|_| HeaderValue::from_static(paths::RUNS));
    (header::LOCATION, value)
}

/// `POST /v1/task-runner/simulations`: plans and simulates; nothing is stored or executed.
pub(crate) async fn simulate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (_, bytes) = json_request(&state, &headers, body, Some(Access::Operate)).await?;
    let request = SimulationRequest::parse(&bytes)?;
    let plan = taskrunner_plan::plan_yaml(&request.manifest, &request.inputs)
        .map_err(|e| ApiError::Plan(e.to_response()))?;
    let response = taskrunner_plan::simulate(&plan);
    let value = serde_json::to_value(&response).map_err(|e| {
        tracing::error!(error = %e, "simulation response could not be serialised");
        ApiError::Internal
    })?;
    Ok(Json(value).into_response())
}

/// `POST /v1/task-runner/runs`: 201 + `Location` + the initial run state.
pub(crate) async fn create_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (caller, bytes) = json_request(&state, &headers, body, Some(Access::Operate)).await?;
    let request = CreateRunRequest::parse(&bytes)?;
    if let Some(tenant_id) = &request.tenant_id
        && *tenant_id != caller.tenant
    {
        return Err(ApiError::bad_request(
            "body.tenantId",
            format!(
                "tenantId '{}' differs from the request's tenant '{}'",
                tenant_id.chars().take(64).collect::<String>(),
                caller.tenant
            ),
        ));
    }
    if let Some(run_id) = &request.run_id {
        check_run_id(run_id, "body.runId")?;
    }
    let view = state
        .runtime
        .create_run(CreateRun {
            tenant: caller.tenant,
            run_id: request.run_id,
            manifest: request.manifest,
            inputs: request.inputs,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        [location(&view.run_id)],
        Json(dto::run_state(&view)),
    )
        .into_response())
}

/// `GET /v1/task-runner/runs/{runId}`.
pub(crate) async fn get_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    caller.require(Access::Read)?;
    check_run_id(&run_id, "path.runId")?;
    let view = state
        .runtime
        .get_run(&caller.tenant, &run_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {run_id} not found")))?;
    Ok(Json(dto::run_state(&view)).into_response())
}

/// `GET …/artifacts`.
pub(crate) async fn artifacts(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    caller.require(Access::Read)?;
    check_run_id(&run_id, "path.runId")?;
    let records = state.runtime.artifacts(&caller.tenant, &run_id).await?;
    let list: Vec<_> = records.iter().map(dto::artifact).collect();
    Ok(Json(list).into_response())
}

/// `GET …/runs/{runId}/evidence`: the signed evidence of a finished run (docs/EVIDENCE.md);
/// 404 for a run of another tenant, 409 `run_not_finished` while it is active.
pub(crate) async fn evidence(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    caller.require(Access::Read)?;
    check_run_id(&run_id, "path.runId")?;
    let source = state
        .runtime
        .evidence_source(&caller.tenant, &run_id)
        .await?;
    let config = state.config.evidence.as_ref().ok_or_else(|| {
        ApiError::EvidenceNotConfigured(
            "this server has no evidence signing key ([evidence] signing_key)".into(),
        )
    })?;
    let evidence = taskrunner_evidence::sign_evidence(
        &source.material,
        &config.builder_id,
        &source.secrets,
        config.signer.as_ref(),
    )
    .map_err(|e| {
        tracing::error!(error = %e, run_id, "evidence could not be built");
        ApiError::Internal
    })?;
    Ok(Json(evidence.to_json(&config.signer.public_key())).into_response())
}

/// `GET /v1/task-runner/evidence/keys`: the public keys evidence is signed with.
pub(crate) async fn evidence_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    caller.require(Access::Read)?;
    let keys: Vec<_> = state
        .config
        .evidence
        .iter()
        .map(|c| {
            let key = c.signer.public_key();
            json!({
                "keyId": key.key_id(),
                "algorithm": key.algorithm(),
                "publicKeyPem": key.to_pem(),
            })
        })
        .collect();
    Ok(Json(json!({ "keys": keys })).into_response())
}

/// `POST …/approvals/{approvalId}` in rule 16 order: 400 → 404 → 403 → 409.
pub(crate) async fn decide(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((run_id, approval_id)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let (caller, bytes) = json_request(&state, &headers, body, None).await?;
    let request = ApprovalRequest::parse(&bytes)?;
    check_run_id(&run_id, "path.runId")?;
    // With authentication the actor is the token's subject; in `none` mode the body's actorId.
    let (actor, actor_problem) = match &caller.principal.subject {
        Some(subject) => {
            let differs = request.actor_id.as_ref().is_some_and(|a| a != subject);
            (
                subject.clone(),
                differs.then(|| "actorId differs from the authenticated subject".to_owned()),
            )
        }
        None => (
            request
                .actor_id
                .clone()
                .unwrap_or_else(|| "anonymous".into()),
            None,
        ),
    };
    let scope_problem = caller.require(Access::Operate).err();
    if scope_problem.is_some() || actor_problem.is_some() {
        // 404 comes before 403: a caller learns nothing about runs it could not see anyway.
        let view = state
            .runtime
            .get_run(&caller.tenant, &run_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("run {run_id} not found")))?;
        if !view
            .steps
            .iter()
            .any(|s| s.approval_id.as_deref() == Some(approval_id.as_str()))
        {
            return Err(ApiError::NotFound(format!(
                "approval {approval_id} not found in run {run_id}"
            )));
        }
        return Err(
            scope_problem.unwrap_or_else(|| ApiError::Forbidden(actor_problem.unwrap_or_default()))
        );
    }
    let sent_hash = request.plan_hash.clone();
    let outcome = match state
        .runtime
        .decide(
            &caller.tenant,
            &run_id,
            &approval_id,
            DecisionRequest {
                decision: request.decision,
                plan_hash: request.plan_hash,
                actor,
                summary: request.summary,
                caller_scopes: caller.grant_scopes(),
            },
        )
        .await
    {
        Ok(outcome) => outcome,
        // A stale hash: say what changed since the plan the approver saw, when it is known.
        Err(RuntimeError::PlanHashMismatch { expected }) => {
            let diff = crate::plans::stale_hash_diff(
                &state,
                &caller.tenant,
                &run_id,
                &sent_hash,
                &expected,
            )
            .await;
            let error = ApiError::from(RuntimeError::PlanHashMismatch { expected });
            return Ok(error.into_response_with("planDiff", diff));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(
        Json(json!({"status": outcome.status.as_str(), "resumed": outcome.resumed}))
            .into_response(),
    )
}

/// `POST …/cancel`: 202 `{status: cancelled}` + `Location`.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    caller.require(Access::Operate)?;
    check_run_id(&run_id, "path.runId")?;
    let actor = caller
        .principal
        .subject
        .clone()
        .unwrap_or_else(|| "anonymous".into());
    state
        .runtime
        .cancel(&caller.tenant, &run_id, Some(actor))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        [location(&run_id)],
        Json(json!({"status": "cancelled"})),
    )
        .into_response())
}

/// `GET /v1/task-runner/runs` (extension): the tenant's runs, newest first, cursor paging.
pub(crate) async fn list_runs(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    caller.require(Access::Read)?;
    let mut list = ListQuery {
        cursor: None,
        limit: LIST_LIMIT_DEFAULT,
    };
    for (key, value) in query_pairs(query.as_deref()) {
        match key {
            "cursor" => list.cursor = Some(value.to_owned()),
            "limit" => {
                list.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=taskrunner_store::LIST_LIMIT_MAX).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "query.limit",
                            format!(
                                "limit must be an integer from 1 to {}",
                                taskrunner_store::LIST_LIMIT_MAX
                            ),
                        )
                    })?;
            }
            _ => {}
        }
    }
    let page = state.runtime.list_runs(&caller.tenant, list).await?;
    let mut body = json!({"runs": page.runs.iter().map(dto::run_summary).collect::<Vec<_>>()});
    if let Some(next) = page.next_cursor {
        body["nextCursor"] = json!(next);
    }
    Ok(Json(body).into_response())
}

/// `key=value` pairs of a query string (no percent-decoding: every value we accept is plain).
pub(crate) fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

fn spec(state: &AppState) -> Result<&crate::ServedSpec, ApiError> {
    state.spec.as_ref().as_ref().map_err(|_| ApiError::Internal)
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

fn document(
    headers: &HeaderMap,
    bytes: &Bytes,
    etag: &str,
    content_type: &'static str,
) -> Response {
    let etag_header =
        HeaderValue::from_str(etag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
    if if_none_match(headers, etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::ETAG, etag_header),
        ],
        bytes.clone(),
    )
        .into_response()
}

/// `GET /openapi`: the served spec as YAML.
pub(crate) async fn openapi_yaml(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let spec = spec(&state)?;
    Ok(document(
        &headers,
        &spec.yaml,
        &spec.yaml_etag,
        "application/yaml",
    ))
}

/// `GET /openapi.json`: the served spec as JSON.
pub(crate) async fn openapi_json(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let spec = spec(&state)?;
    Ok(document(
        &headers,
        &spec.json,
        &spec.json_etag,
        "application/json",
    ))
}

/// `GET /.well-known/openapi` (SPEC §6.4): metadata of `/openapi` with `ETag` and
/// `X-Signature`.
pub(crate) async fn well_known(State(state): State<AppState>) -> Result<Response, ApiError> {
    let spec = spec(&state)?;
    let body = json!({
        "specUrl": paths::OPENAPI_YAML,
        "version": spec.version,
        "buildVersion": state.config.build_version,
        "etag": spec.yaml_etag,
        "signature": spec.signature,
    });
    let etag = HeaderValue::from_str(&spec.yaml_etag).map_err(|_| ApiError::Internal)?;
    let signature = HeaderValue::from_str(&spec.signature).map_err(|_| ApiError::Internal)?;
    Ok((
        [
            (header::ETAG, etag),
            (header::HeaderName::from_static("x-signature"), signature),
        ],
        Json(body),
    )
        .into_response())
}

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: the store answers and the server is not shutting down (503 otherwise).
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    if state.config.shutdown.is_cancelled() {
        return Err(ApiError::Unavailable("the server is shutting down".into()));
    }
    let probe = ListQuery {
        cursor: None,
        limit: 1,
    };
    match state
        .runtime
        .list_runs(&state.config.default_tenant, probe)
        .await
    {
        Ok(_) => Ok(Json(json!({"status": "ready"})).into_response()),
        Err(e) => {
            tracing::warn!(error = %e, "readiness probe: the store does not answer");
            Err(ApiError::Unavailable("the store does not answer".into()))
        }
    }
}

/// `GET /metrics`: Prometheus text from the configured hook (no token needed, see
/// docs/DECISIONS.md); 404 when no hook is configured.
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let render = state
        .config
        .metrics_render
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("metrics are not enabled on this server".into()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        render(),
    )
        .into_response())
}

/// Any other path.
pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no resource at {}",
        uri.path().chars().take(200).collect::<String>()
    ))
}
