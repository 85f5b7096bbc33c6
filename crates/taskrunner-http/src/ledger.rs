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
use crate::handlers::query_pairs;

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
    for (key, value) in query_pairs(query.as_deref()) {
        let value = decode(value);
        match key {
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

/// Undoes the percent-encoding clients apply to RFC 3339 times and names (`%3A`, `%2B`, …).
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let (h, l) = (hex(h).unwrap_or(0), hex(l).unwrap_or(0));
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn percent_encoded_times_decode() {
        assert_eq!(decode("2026-12-08T00%3A00%3A00Z"), "2026-12-08T00:00:00Z");
        assert_eq!(decode("a%2Bb"), "a+b");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
