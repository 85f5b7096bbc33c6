//! The HTTP facade (SPEC §4–§6): [`router`] builds an `axum::Router` over a
//! [`taskrunner_runtime::Runtime`] that speaks the StellaOps TaskRunner contract
//! (`taskrunner-openapi.yaml`) plus the documented extensions.
//!
//! Owns: routes and their wire DTOs (converted by hand at the boundary), tenancy and scope
//! checks against the [`taskrunner_auth::Authenticator`] port, the one [`ApiError`] envelope,
//! request ids, body limits, the NDJSON log stream, the served OpenAPI document and HTTP
//! metrics. Does not bind sockets, read configuration, install a metrics recorder or set
//! header/idle timeouts: the binary does (a `follow=true` log stream must be exempt from them).

mod auth;
mod dto;
mod error;
mod handlers;
mod ledger;
mod logs;
mod middleware;
mod plans;
mod spec;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use taskrunner_auth::Authenticator;
use taskrunner_runtime::Runtime;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use spec::{CONTRACT_YAML, EXTENSIONS_YAML, ServedSpec};

/// Default request body limit: 2 MiB (SPEC §6.3).
pub const BODY_LIMIT_BYTES_DEFAULT: usize = 2 * 1024 * 1024;
/// A `follow=true` log stream writes a blank line this often (SPEC rule 24).
pub const KEEPALIVE_INTERVAL_DEFAULT: Duration = Duration::from_secs(15);

/// Renders the Prometheus text exposition for `/metrics` (the binary installs the recorder).
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Settings of the router. Build with [`HttpConfig::new`] and change fields as needed (new
/// fields may be added, always with a default in `new`).
#[derive(Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Checks callers' credentials (`NoAuth` for `none` mode, a JWT adapter otherwise).
    pub authenticator: Arc<dyn Authenticator>,
    /// The tenant of requests without a token `tenant` claim and without `X-StellaOps-Tenant`.
    pub default_tenant: String,
    /// Largest accepted request body, with or without `Content-Length` (413 beyond).
    pub body_limit_bytes: usize,
    /// The server's version, reported as `buildVersion` by `/.well-known/openapi`.
    pub build_version: String,
    /// Ed25519 seed: when set, the served spec is signed (`ed25519:<base64>`), else its
    /// signature is `sha256:<hex>` of the served bytes.
    pub spec_signing_key: Option<[u8; 32]>,
    /// Renders `/metrics`; `None` answers 404 there.
    pub metrics_render: Option<MetricsRender>,
    /// Cancelled when the server shuts down: `follow=true` log streams end cleanly and
    /// `/readyz` answers 503.
    pub shutdown: CancellationToken,
    /// Keep-alive period of `follow=true` log streams (default 15 s).
    pub keepalive_interval: Duration,
    /// Signs run evidence (`GET …/runs/{runId}/evidence`); `None` answers 503
    /// `evidence_not_configured` there and lists no key at `GET …/evidence/keys`.
    pub evidence: Option<EvidenceConfig>,
}

/// How run evidence is signed (docs/EVIDENCE.md).
#[derive(Debug, Clone)]
pub struct EvidenceConfig {
    /// The signing key (its public half is served at `GET …/evidence/keys`).
    pub signer: Arc<dyn taskrunner_evidence::EvidenceSigner>,
    /// `runDetails.builder.id` of the provenance.
    pub builder_id: String,
}

impl HttpConfig {
    /// Defaults: tenant `default`, 2 MiB bodies, build version of this crate, no signing key,
    /// no metrics, a fresh shutdown token, 15 s keep-alive.
    pub fn new(authenticator: Arc<dyn Authenticator>) -> HttpConfig {
        HttpConfig {
            authenticator,
            default_tenant: "default".into(),
            body_limit_bytes: BODY_LIMIT_BYTES_DEFAULT,
            build_version: env!("CARGO_PKG_VERSION").into(),
            spec_signing_key: None,
            metrics_render: None,
            shutdown: CancellationToken::new(),
            keepalive_interval: KEEPALIVE_INTERVAL_DEFAULT,
            evidence: None,
        }
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signing key is a secret: only whether there is one.
        f.debug_struct("HttpConfig")
            .field("authenticator", &self.authenticator)
            .field("default_tenant", &self.default_tenant)
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("build_version", &self.build_version)
            .field("spec_signing_key", &self.spec_signing_key.is_some())
            .field("metrics_render", &self.metrics_render.is_some())
            .field("keepalive_interval", &self.keepalive_interval)
            .field("evidence", &self.evidence)
            .finish_non_exhaustive()
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) runtime: Runtime,
    pub(crate) config: Arc<HttpConfig>,
    pub(crate) spec: Arc<Result<ServedSpec, String>>,
}

/// Route templates (also the `route` label of HTTP metrics).
pub(crate) mod paths {
    pub(crate) const SIMULATIONS: &str = "/v1/task-runner/simulations";
    pub(crate) const RUNS: &str = "/v1/task-runner/runs";
    pub(crate) const RUN: &str = "/v1/task-runner/runs/{runId}";
    pub(crate) const LOGS: &str = "/v1/task-runner/runs/{runId}/logs";
    pub(crate) const ARTIFACTS: &str = "/v1/task-runner/runs/{runId}/artifacts";
    pub(crate) const PLAN: &str = "/v1/task-runner/runs/{runId}/plan";
    pub(crate) const PLAN_DIFF: &str = "/v1/task-runner/runs/{runId}/plan-diff";
    pub(crate) const APPROVAL: &str = "/v1/task-runner/runs/{runId}/approvals/{approvalId}";
    pub(crate) const CANCEL: &str = "/v1/task-runner/runs/{runId}/cancel";
    pub(crate) const EVIDENCE: &str = "/v1/task-runner/runs/{runId}/evidence";
    pub(crate) const EVIDENCE_KEYS: &str = "/v1/task-runner/evidence/keys";
    pub(crate) const APPROVALS: &str = "/v1/task-runner/approvals";
    pub(crate) const WELL_KNOWN: &str = "/.well-known/openapi";
    pub(crate) const OPENAPI_YAML: &str = "/openapi";
    pub(crate) const OPENAPI_JSON: &str = "/openapi.json";
    pub(crate) const HEALTHZ: &str = "/healthz";
    pub(crate) const READYZ: &str = "/readyz";
    pub(crate) const METRICS: &str = "/metrics";
}

/// The router of the whole API. Serve it with any hyper-based server; the caller owns the
/// listener, timeouts (exempting `GET …/logs?follow=true`) and graceful shutdown (cancel
/// `config.shutdown` so log streams end). Do not wrap it in a compression layer that would
/// buffer `application/x-ndjson`: followed log lines must reach the client as they are written.
pub fn router(runtime: Runtime, config: HttpConfig) -> Router {
    let spec = ServedSpec::build(&config.build_version, config.spec_signing_key.as_ref());
    if let Err(e) = &spec {
        tracing::error!(error = %e, "the embedded OpenAPI document could not be built");
    }
    let limit = config.body_limit_bytes;
    let state = AppState {
        runtime,
        config: Arc::new(config),
        spec: Arc::new(spec),
    };
    use handlers as h;
    Router::new()
        .route(paths::SIMULATIONS, post(h::simulate))
        .route(paths::RUNS, post(h::create_run).get(h::list_runs))
        .route(paths::RUN, get(h::get_run))
        .route(paths::LOGS, get(logs::logs))
        .route(paths::ARTIFACTS, get(h::artifacts))
        .route(paths::PLAN, get(plans::run_plan))
        .route(paths::PLAN_DIFF, get(plans::plan_diff))
        .route(paths::APPROVAL, post(h::decide))
        .route(paths::CANCEL, post(h::cancel))
        .route(paths::EVIDENCE, get(h::evidence))
        .route(paths::EVIDENCE_KEYS, get(h::evidence_keys))
        .route(paths::APPROVALS, get(ledger::approvals))
        .route(paths::WELL_KNOWN, get(h::well_known))
        .route(paths::OPENAPI_YAML, get(h::openapi_yaml))
        .route(paths::OPENAPI_JSON, get(h::openapi_json))
        .route(paths::HEALTHZ, get(h::healthz))
        .route(paths::READYZ, get(h::readyz))
        .route(paths::METRICS, get(h::metrics))
        .fallback(h::not_found)
        .layer(DefaultBodyLimit::disable())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limit))
        .layer(middleware::trace_layer())
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            middleware::panic_response,
        ))
        .layer(axum::middleware::from_fn(middleware::envelope))
        .with_state(state)
}
