//! Helpers of the router tests: a runtime on the in-memory store with the real built-in
//! executors, a test authenticator, requests through `oneshot`, and schema checks against the
//! contract the crate embeds (`openapi/contract.yaml`, [`taskrunner_http::CONTRACT_YAML`]).

#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use taskrunner_auth::{AuthError, AuthMode, Authenticator, NoAuth, Principal};
use taskrunner_exec::ExecutorRegistry;
use taskrunner_http::{HttpConfig, router};
use taskrunner_runtime::{Runtime, RuntimeConfig, StaticSecrets, SystemClock};
use taskrunner_store::{MemoryStore, Store};
use tower::ServiceExt;

/// `Bearer <subject>;<scope,scope,…>[;<tenant>]`; anything else is invalid.
#[derive(Debug)]
pub struct TestAuth;

impl Authenticator for TestAuth {
    fn mode(&self) -> AuthMode {
        AuthMode::Jwt
    }
    fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let token = authorization
            .ok_or(AuthError::Missing)?
            .strip_prefix("Bearer ")
            .ok_or_else(|| AuthError::Invalid("not a bearer token".into()))?;
        let parts: Vec<&str> = token.split(';').collect();
        if parts.len() < 2 || parts[0].is_empty() {
            return Err(AuthError::Invalid("malformed test token".into()));
        }
        Ok(Principal {
            subject: Some(parts[0].to_owned()),
            scopes: parts[1]
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<BTreeSet<_>>(),
            tenant: parts.get(2).map(|t| (*t).to_owned()),
            unrestricted: false,
        })
    }
}

pub struct App {
    pub router: Router,
    pub runtime: Runtime,
    pub store: Store,
    pub config: HttpConfig,
    _dir: tempfile::TempDir,
}

pub async fn app_with(auth: Arc<dyn Authenticator>, tweak: impl FnOnce(&mut HttpConfig)) -> App {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(MemoryStore::new());
    let runtime = Runtime::start(
        store.clone(),
        ExecutorRegistry::with_builtins(),
        Arc::new(SystemClock),
        Arc::new(StaticSecrets::new()),
        RuntimeConfig::new(dir.path().join("ws")),
    )
    .await
    .unwrap();
    let mut config = HttpConfig::new(auth);
    tweak(&mut config);
    App {
        router: router(runtime.clone(), config.clone()),
        runtime,
        store,
        config,
        _dir: dir,
    }
}

pub async fn app() -> App {
    app_with(Arc::new(NoAuth), |_| {}).await
}

pub async fn authed() -> App {
    app_with(Arc::new(TestAuth), |_| {}).await
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.bytes)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

pub async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response: Response<Body> = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        headers,
        bytes,
    }
}

pub fn req(method: &str, uri: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(uri)
}

pub fn json_req(method: &str, uri: &str, body: &Value) -> Request<Body> {
    req(method, uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub async fn get(router: &Router, uri: &str) -> Answer {
    send(router, req("GET", uri).body(Body::empty()).unwrap()).await
}

pub async fn post(router: &Router, uri: &str, body: &Value) -> Answer {
    send(router, json_req("POST", uri, body)).await
}

/// The contract, parsed from the copy the crate embeds and serves.
pub fn contract() -> &'static Value {
    static CONTRACT: OnceLock<Value> = OnceLock::new();
    CONTRACT.get_or_init(|| {
        serde_saphyr::from_str(taskrunner_http::CONTRACT_YAML)
            .expect("the embedded contract is valid YAML")
    })
}

fn validate_in(root: &Value, schema: &str, instance: &Value) {
    let mut doc = root.clone();
    doc["$ref"] = Value::String(format!("#/components/schemas/{schema}"));
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&doc)
        .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{instance} does not validate against {schema}: {errors:?}"
    );
}

/// Asserts `instance` validates against the contract's `#/components/schemas/<schema>`.
pub fn assert_schema(schema: &str, instance: &Value) {
    validate_in(contract(), schema, instance);
}

/// The same against the served document (for the extensions' own schemas).
pub fn assert_served_schema(schema: &str, instance: &Value) {
    let served = taskrunner_http::ServedSpec::build("test", None).unwrap();
    validate_in(&served.document, schema, instance);
}

/// An error response: the envelope with the expected code and the request id as traceId.
pub fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(
        answer.status.as_u16(),
        status,
        "{}",
        String::from_utf8_lossy(&answer.bytes)
    );
    let body = answer.json();
    assert_schema("ErrorEnvelope", &body);
    assert_eq!(body["error"]["code"], code, "{body}");
    let request_id = answer.header("x-request-id").unwrap();
    assert_eq!(body["error"]["traceId"], request_id);
}

pub const HEADER: &str =
    "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: web, version: 1.0.0}\n";

pub fn pack(spec: &str) -> String {
    format!("{HEADER}spec:\n{spec}")
}

pub fn echo_pack() -> String {
    pack("  steps:\n    - id: hello\n      run: {uses: builtin:echo, with: {message: hi}}\n")
}

pub fn gate_pack() -> String {
    pack(
        "  approvals:\n    - id: review\n      grants: [packs.approve]\n  steps:\n    - id: build\n      run: {uses: builtin:echo, with: {message: built}}\n    - id: gate\n      gate:\n        approval: {id: review, message: please}\n    - id: deploy\n      run: {uses: builtin:echo, with: {message: deployed}}\n",
    )
}
