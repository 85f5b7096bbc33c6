//! [`ApiError`]: the crate's one error type and its one `IntoResponse` (SPEC §6.3).
//!
//! A handler's error becomes a response carrying an [`ErrorParts`] extension; the envelope
//! middleware (`middleware.rs`) renders the final body `{"error": {code, message, traceId}}`
//! with the request's id — and, on the two operations whose 400 is documented as
//! `PlanErrorResponse`, adds `errors: [{path, message}]` so the same body satisfies both schemas.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use taskrunner_runtime::RuntimeError;
use taskrunner_store::StoreError;

/// Why a request failed; each variant is one contract error code.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400 `bad_request`; `path` names the offending part (`body.planHash`, `query.after`, …).
    #[error("{message}")]
    BadRequest {
        message: String,
        path: Option<String>,
    },
    /// 400 with a `PlanErrorResponse` (`errors` = `[{path, message}]`).
    #[error("invalid pack or inputs")]
    Plan(Value),
    /// 401 `unauthorized` (sent with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `forbidden`.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `not_found` (also another tenant's run).
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, the method does not (reported as `bad_request`).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409 `run_exists`.
    #[error("{0}")]
    RunExists(String),
    /// 409 `plan_hash_mismatch`.
    #[error("{0}")]
    PlanHashMismatch(String),
    /// 409 `run_terminal`.
    #[error("{0}")]
    RunTerminal(String),
    /// 409 `approval_already_decided`.
    #[error("{0}")]
    AlreadyDecided(String),
    /// 409 `run_not_finished` (evidence of an active run).
    #[error("{0}")]
    RunNotFinished(String),
    /// 413 `payload_too_large`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415 `unsupported_media_type`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429 `queue_full` (sent with `Retry-After`).
    #[error("{0}")]
    QueueFull(String),
    /// 503 `storage_full` (sent with `Retry-After`): the store is out of space; writes are
    /// refused until space returns, reads keep answering (an extension of SPEC §6.3).
    #[error("{0}")]
    StorageFull(String),
    /// 503 `storage_unavailable` (sent with `Retry-After`): the database cannot be reached or
    /// is restarting (an extension of SPEC §6.3).
    #[error("{0}")]
    StorageUnavailable(String),
    /// 503 `evidence_not_configured`: no evidence signing key.
    #[error("{0}")]
    EvidenceNotConfigured(String),
    /// 503 (`internal_error` code): not ready, shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// 500 `internal_error`. The message is generic: details go to the log, never the body.
    #[error("an unexpected error occurred")]
    Internal,
}

/// Seconds a client should wait after `queue_full`.
pub(crate) const RETRY_AFTER_SECONDS: u32 = 5;
/// Seconds a client should wait after `storage_full` / `storage_unavailable`.
pub(crate) const STORAGE_RETRY_AFTER_SECONDS: u32 = 10;

impl ApiError {
    /// A 400 about the part of the request at `path`.
    pub fn bad_request(path: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            path: Some(path.into()),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::Plan(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RunExists(_)
            | ApiError::PlanHashMismatch(_)
            | ApiError::RunTerminal(_)
            | ApiError::AlreadyDecided(_)
            | ApiError::RunNotFinished(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::QueueFull(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::StorageFull(_)
            | ApiError::StorageUnavailable(_)
            | ApiError::Unavailable(_)
            | ApiError::EvidenceNotConfigured(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The contract's error code (SPEC §6.3).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } | ApiError::Plan(_) | ApiError::MethodNotAllowed(_) => {
                "bad_request"
            }
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::RunExists(_) => "run_exists",
            ApiError::PlanHashMismatch(_) => "plan_hash_mismatch",
            ApiError::RunTerminal(_) => "run_terminal",
            ApiError::AlreadyDecided(_) => "approval_already_decided",
            ApiError::RunNotFinished(_) => "run_not_finished",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::QueueFull(_) => "queue_full",
            ApiError::StorageFull(_) => "storage_full",
            ApiError::StorageUnavailable(_) => "storage_unavailable",
            ApiError::EvidenceNotConfigured(_) => "evidence_not_configured",
            ApiError::Unavailable(_) | ApiError::Internal => "internal_error",
        }
    }

    /// The generic error for a status produced outside our handlers (a layer, the router).
    pub(crate) fn for_status(status: StatusCode) -> ApiError {
        let reason = status.canonical_reason().unwrap_or("error").to_owned();
        match status.as_u16() {
            400 => ApiError::BadRequest {
                message: reason,
                path: None,
            },
            401 => ApiError::Unauthorized(reason),
            403 => ApiError::Forbidden(reason),
            404 => ApiError::NotFound("no such resource".into()),
            405 => ApiError::MethodNotAllowed("method not allowed on this resource".into()),
            413 => ApiError::PayloadTooLarge("the request body is too large".into()),
            415 => ApiError::UnsupportedMediaType(reason),
            429 => ApiError::QueueFull(reason),
            503 => ApiError::Unavailable(reason),
            _ => ApiError::Internal,
        }
    }
}

/// What the envelope middleware needs to render an error body.
#[derive(Debug, Clone)]
pub(crate) struct ErrorParts {
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Where the problem is (for the `PlanErrorResponse` form).
    pub(crate) path: Option<String>,
    /// Plan errors: the `errors` array.
    pub(crate) plan_errors: Option<Value>,
    /// A documented member added beside `error` (the 409 `plan_hash_mismatch` of a decision
    /// carries `planDiff`).
    pub(crate) extra: Option<(&'static str, Value)>,
}

impl ErrorParts {
    /// `{"error": {...}}`, plus `errors` when `plan_shaped` (the 400 of simulate/create).
    pub(crate) fn body(&self, trace_id: &str, plan_shaped: bool) -> Value {
        let mut body = serde_json::json!({
            "error": {"code": self.code, "message": self.message, "traceId": trace_id}
        });
        if let Some(errors) = &self.plan_errors {
            body["errors"] = errors.clone();
        } else if plan_shaped {
            body["errors"] = serde_json::json!([{
                "path": self.path.clone().unwrap_or_else(|| "body".into()),
                "message": self.message,
            }]);
        }
        if let Some((key, value)) = &self.extra {
            body[*key] = value.clone();
        }
        body
    }
}

impl ApiError {
    /// The error response with `value` as the member `key` beside `error`.
    pub(crate) fn into_response_with(self, key: &'static str, value: Value) -> Response {
        let mut response = self.into_response();
        if let Some(parts) = response.extensions_mut().get_mut::<ErrorParts>() {
            parts.extra = Some((key, value));
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let parts = ErrorParts {
            code: self.code(),
            message: self.to_string(),
            path: match &self {
                ApiError::BadRequest { path, .. } => path.clone(),
                _ => None,
            },
            plan_errors: match &self {
                ApiError::Plan(Value::Object(o)) => o.get("errors").cloned(),
                _ => None,
            },
            extra: None,
        };
        // A body without a trace id, in case this response is served without the envelope
        // middleware; the middleware re-renders it with the request's id.
        let body = parts.body("", matches!(self, ApiError::Plan(_)));
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::QueueFull(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            ApiError::StorageFull(_) | ApiError::StorageUnavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(STORAGE_RETRY_AFTER_SECONDS),
                );
            }
            _ => {}
        }
        response.extensions_mut().insert(parts);
        response
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> ApiError {
        match e {
            RuntimeError::Plan(p) => ApiError::Plan(p.to_response()),
            RuntimeError::BadRequest(m) => ApiError::BadRequest {
                message: m,
                path: None,
            },
            RuntimeError::NotFound(m) => ApiError::NotFound(format!("{m} not found")),
            RuntimeError::Forbidden(m) => ApiError::Forbidden(m),
            RuntimeError::RunExists(id) => {
                ApiError::RunExists(format!("run {id} already exists in this tenant"))
            }
            e @ RuntimeError::PlanHashMismatch { .. } => ApiError::PlanHashMismatch(e.to_string()),
            e @ RuntimeError::RunTerminal(_) => ApiError::RunTerminal(e.to_string()),
            e @ RuntimeError::AlreadyDecided(_) => ApiError::AlreadyDecided(e.to_string()),
            e @ RuntimeError::RunNotFinished(_) => ApiError::RunNotFinished(e.to_string()),
            e @ RuntimeError::QueueFull(_) => ApiError::QueueFull(e.to_string()),
            // Out of space or the database away: the details (paths, hosts) go to the log; the
            // client learns what it can do about it.
            RuntimeError::Store(e @ StoreError::Full(_)) => {
                tracing::warn!(error = %e, "request refused: storage is full");
                ApiError::StorageFull(
                    "the server's storage is full: writes are refused until space is freed \
                     (reads still answer)"
                        .into(),
                )
            }
            RuntimeError::Store(e) if e.is_transient() => {
                tracing::warn!(error = %e, "request refused: storage is unavailable");
                ApiError::StorageUnavailable(
                    "the server's storage cannot be reached right now: retry later".into(),
                )
            }
            other => {
                // Storage and internal failures: logged with detail, answered generically.
                tracing::error!(error = %other, "request failed");
                ApiError::Internal
            }
        }
    }
}
