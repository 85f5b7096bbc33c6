//! The plan behind a run's hash and the semantic plan diff (extensions, docs/PLAN_DIFF.md):
//! `GET …/runs/{runId}/plan`, `GET …/runs/{runId}/plan-diff`, and the `planDiff` member of a
//! decision's 409 `plan_hash_mismatch`.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use taskrunner_auth::Access;
use taskrunner_plan::Plan;

use crate::AppState;
use crate::auth::{caller, check_run_id};
use crate::error::ApiError;
use crate::handlers::query_pairs;

/// `GET …/runs/{runId}/plan`: the exact canonical bytes whose SHA-256 is the run's `planHash`
/// (secrets by name only); the hash is also the `ETag`.
pub(crate) async fn run_plan(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    caller.require(Access::Read)?;
    check_run_id(&run_id, "path.runId")?;
    let stored = state
        .runtime
        .run_plan(&caller.tenant, &run_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {run_id} not found")))?;
    let etag = HeaderValue::from_str(&format!("\"{}\"", stored.plan_hash))
        .map_err(|_| ApiError::Internal)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag),
        ],
        stored.canonical,
    )
        .into_response())
}

/// `GET …/runs/{runId}/plan-diff[?against={runId}]`: the diff from the baseline (or the named
/// run) to this run's plan.
pub(crate) async fn plan_diff(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    caller.require(Access::Read)?;
    check_run_id(&run_id, "path.runId")?;
    let mut against = None;
    for (key, value) in query_pairs(query.as_deref()) {
        if key == "against" {
            check_run_id(value, "query.against")?;
            against = Some(value.to_owned());
        }
    }
    let tenant = &caller.tenant;
    let (current, plan) = state
        .runtime
        .run_plan_decoded(tenant, &run_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {run_id} not found")))?;
    let (base_id, selected_by) =
        match against {
            Some(id) => (id, "against"),
            None => {
                let base = state.runtime.baseline(tenant, &run_id).await?.ok_or_else(|| {
                ApiError::NotFound(format!(
                    "run {run_id} has no baseline: no earlier run of pack '{}' in this tenant \
                     succeeded with all its approval gates approved (name one with ?against=)",
                    current.pack_name
                ))
            })?;
                (base.run_id, "baseline")
            }
        };
    let (base, base_plan) = state
        .runtime
        .run_plan_decoded(tenant, &base_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {base_id} not found")))?;
    let d = taskrunner_plan::diff(&base_plan, &plan);
    Ok(axum::Json(json!({
        "runId": current.run_id,
        "planHash": current.plan_hash,
        "baseline": {
            "runId": base.run_id,
            "planHash": base.plan_hash,
            "selectedBy": selected_by,
            "status": base.status.as_str(),
        },
        "diff": d.to_json(),
        "text": d.to_text(),
    }))
    .into_response())
}

/// The `planDiff` member of a decision's 409: the diff from the plan the approver sent (when a
/// run of the tenant has that plan) to the run's current plan; otherwise why there is none.
pub(crate) async fn stale_hash_diff(
    state: &AppState,
    tenant: &str,
    run_id: &str,
    sent: &str,
    current_hash: &str,
) -> Value {
    let mut out = json!({"sentPlanHash": sent, "currentPlanHash": current_hash});
    let current: Option<Plan> = match state.runtime.run_plan_decoded(tenant, run_id).await {
        Ok(found) => found.map(|(_, plan)| plan),
        Err(e) => {
            tracing::warn!(error = %e, "plan diff for a stale hash: the run's plan is unreadable");
            None
        }
    };
    let sent_plan = match state.runtime.plan_by_hash(tenant, sent).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "plan diff for a stale hash: the runs cannot be scanned");
            None
        }
    };
    match (current, sent_plan) {
        (Some(current), Some((from_run, sent_plan))) => {
            let d = taskrunner_plan::diff(&sent_plan, &current);
            out["available"] = json!(true);
            out["sentPlanRunId"] = json!(from_run);
            out["diff"] = d.to_json();
            out["text"] = json!(d.to_text());
        }
        (None, _) => {
            out["available"] = json!(false);
            out["reason"] = json!("the run's current plan could not be read");
        }
        (Some(_), None) => {
            out["available"] = json!(false);
            out["reason"] = json!(format!(
                "no run of this tenant has the plan {}, so what it contained is unknown",
                sent.chars().take(80).collect::<String>()
            ));
        }
    }
    out
}
