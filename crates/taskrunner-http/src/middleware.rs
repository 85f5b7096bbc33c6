//! Cross-cutting layers: request ids (`X-Request-Id`, W3C `traceparent`), the error envelope
//! on every non-2xx response (whoever produced it: a handler, axum's router, the body limit, a
//! caught panic), HTTP metrics by route template, and request tracing.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, ErrorParts};
use crate::paths;

/// `X-Request-Id`.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: the `traceId` of error bodies and the `X-Request-Id` response header.
#[derive(Debug, Clone)]
pub(crate) struct TraceId(pub(crate) String);

/// The trace-id of a valid W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, ids not all
/// zero, lowercase), else a fresh id.
pub(crate) fn trace_id_of(headers: &HeaderMap) -> String {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent)
        .unwrap_or_else(fresh_id)
}

fn parse_traceparent(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.trim().split('-').collect();
    let [version, trace, parent, flags] = parts.as_slice() else {
        // Future versions may append fields; version 00 has exactly four.
        return None;
    };
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    (hex(version, 2)
        && *version != "ff"
        && hex(trace, 32)
        && nonzero(trace)
        && hex(parent, 16)
        && nonzero(parent)
        && hex(flags, 2))
    .then(|| (*trace).to_owned())
}

/// 32 lowercase hex digits, unique per process (time, pid and a counter, hashed).
fn fresh_id() -> String {
    // 128 bits, unique per process (a counter) and across processes (start time and pid): a
    // request id needs uniqueness, not secrecy, and this runs on every request.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let high = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!("{high:016x}{n:016x}")
}

pub(crate) async fn envelope(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let trace_id = trace_id_of(request.headers());
    request.extensions_mut().insert(TraceId(trace_id.clone()));
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().clone();
    let plan_shaped =
        method == Method::POST && (route == paths::SIMULATIONS || route == paths::RUNS);

    let mut response = next.run(request).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        response = render_error(response, &trace_id, plan_shaped);
    }
    if let Ok(value) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    let labels = [
        ("route", route),
        ("method", method.as_str().to_owned()),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("taskrunner_http_requests_total", &labels).increment(1);
    metrics::histogram!("taskrunner_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Replaces the body of an error response by the envelope, keeping status and headers such as
/// `WWW-Authenticate`, `Retry-After` and `Allow`.
fn render_error(response: Response, trace_id: &str, plan_shaped: bool) -> Response {
    let status = response.status();
    let (mut parts, _) = response.into_parts();
    let error = parts.extensions.remove::<ErrorParts>().unwrap_or_else(|| {
        let api = ApiError::for_status(status);
        ErrorParts {
            code: api.code(),
            message: api.to_string(),
            path: None,
            plan_errors: None,
            extra: None,
        }
    });
    let plan_shaped = plan_shaped && status == StatusCode::BAD_REQUEST;
    let bytes = serde_json::to_vec(&error.body(trace_id, plan_shaped)).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(bytes))
}

/// A panicking handler answers 500 `internal_error`; the panic message goes to the log only.
pub(crate) fn panic_response(payload: Box<dyn Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "a request handler panicked");
    ApiError::Internal.into_response()
}

/// Request spans carrying the request id and route.
pub(crate) fn trace_layer()
-> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, impl Fn(&Request) -> tracing::Span + Clone>
{
    TraceLayer::new_for_http().make_span_with(|request: &Request| {
        let trace_id = request
            .extensions()
            .get::<TraceId>()
            .map_or("", |t| t.0.as_str());
        tracing::info_span!(
            "http",
            method = %request.method(),
            uri = %request.uri().path(),
            trace_id = %trace_id,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_validation() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(ok).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_panic_answers_500_without_its_message() {
        use http_body_util::BodyExt;
        let response = panic_response(Box::new(String::from("secret-token leaked")));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("internal_error"), "{text}");
    }

    #[test]
    fn fresh_ids_are_distinct_hex() {
        let (a, b) = (fresh_id(), fresh_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
