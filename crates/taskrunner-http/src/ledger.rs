//! `GET /v1/task-runner/approvals` (extension): the approval ledger of the caller's tenant —
//! every gate reached, what it requires and every decision, newest run first, cursor-paged; as
//! JSON, or as NDJSON (one gate per line) when the client accepts `application/x-ndjson`.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use taskrunner_auth::Access;
use taskrunner_runtime::{LedgerQuery, LedgerStatus, Timestamp};

use crate::AppState;
use crate::auth::caller;
use crate::error::ApiError;

/// Gates per page when the client does not say.
const LEDGER_LIMIT_DEFAULT: usize = 100;
/// Most gates per page a client may ask for.
const LEDGER_LIMIT_MAX: usize = 1000;
/// The NDJSON media type.
const NDJSON: &str = "application/x-ndjson";

pub(crate) async fn approvals(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    caller.require(Access::Read)?;
    let mut ledger = LedgerQuery {
        limit: LEDGER_LIMIT_DEFAULT,
        ..LedgerQuery::default()
    };
    // Percent-decoded: clients encode the `:` of RFC 3339 times.
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "status" => {
                ledger.status = Some(LedgerStatus::parse(&value).ok_or_else(|| {
                    ApiError::bad_request("query.status", "status must be `pending` or `decided`")
                })?);
            }
            "pack" => ledger.pack = Some(value),
            "since" => {
                ledger.since = Some(Timestamp::parse_rfc3339(&value).map_err(|_| {
                    ApiError::bad_request(
                        "query.since",
                        format!("since must be an RFC 3339 time (e.g. 2026-12-08T00:00:00Z), got {value:?}"),
                    )
                })?);
            }
            "cursor" => ledger.cursor = Some(value),
            "limit" => {
                ledger.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=LEDGER_LIMIT_MAX).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "query.limit",
                            format!("limit must be an integer from 1 to {LEDGER_LIMIT_MAX}"),
                        )
                    })?;
            }
            _ => {}
        }
    }
    let page = state
        .runtime
        .approval_ledger(&caller.tenant, &ledger)
        .await?;
    let wants_ndjson = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(NDJSON));
    if wants_ndjson {
        let mut body = String::new();
        for entry in &page.approvals {
            body.push_str(&serde_json::to_string(entry).map_err(|_| ApiError::Internal)?);
            body.push('\n');
        }
        let mut response = (
            [(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON))],
            body,
        )
            .into_response();
        if let Some(next) = &page.next_cursor
            && let Ok(value) = HeaderValue::from_str(next)
        {
            response.headers_mut().insert("x-next-cursor", value);
        }
        return Ok(response);
    }
    Ok(axum::Json(json!(page)).into_response())
}
