//! `builtin:http` (SPEC §7): one outbound HTTP request per attempt, in-process, under the
//! pack's egress allowlist.
//!
//! Parameters (`with`): `url` (required, `http` or `https`), `method` (default `GET`),
//! `headers` (object of strings), `body` (a string is sent as text, any other JSON value as
//! JSON; `null`/absent = no body), `timeoutSeconds` (default 30, at most 3600; the step's
//! timeout also applies). Outputs: `status` (number), `headers` (object, lower-case names;
//! repeated headers joined with `, `), `body` (parsed JSON when the response is JSON, else
//! text).
//!
//! Every hop (the request and each redirect) is checked by [`EgressPolicy`] after DNS
//! resolution, and the connection is pinned to the checked addresses (the client's own
//! resolver refuses every name, and proxies from the environment are ignored), so a name that
//! resolves to a non-allowed address is refused. A refusal fails the attempt with reason
//! `egress-blocked` and writes the reason to the step's log. At most [`REDIRECTS_MAX`]
//! redirects are followed; credentials headers are dropped when a redirect changes the
//! origin. Responses larger than [`HttpConfig::body_bytes_max`] fail the attempt. A status of
//! 400 or more fails the attempt with reason `http-status` (outputs are still reported).
//!
//! This crate owns outbound HTTP only; serving HTTP is `taskrunner-http`'s.

mod egress;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use taskrunner_exec::{
    ExecOutcome, ExecRequest, Executor, Masker, OutputLine, OutputStream, reason,
};
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;
use url::Url;

pub use crate::egress::EgressPolicy;

/// Most redirects followed.
pub const REDIRECTS_MAX: usize = 5;
/// Longest `timeoutSeconds`.
pub const TIMEOUT_SECONDS_MAX: f64 = 3600.0;
/// Largest request body.
pub const REQUEST_BODY_BYTES_MAX: usize = 10 * 1024 * 1024;
/// Failure reason for a response status of 400 or more.
pub const HTTP_STATUS: &str = "http-status";

/// Why a request could not be made. Turned into an `ExecOutcome::Failed` with
/// [`Error::reason`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `with` parameters are malformed.
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// The egress allowlist refuses the destination.
    #[error("egress blocked: {0}")]
    EgressBlocked(String),
    /// The request failed (connection, TLS, timeout, body too large, too many redirects).
    #[error("request failed: {0}")]
    Request(String),
    /// The attempt ran longer than its timeout.
    #[error("request exceeded its timeout of {0} s")]
    Timeout(f64),
}

impl Error {
    /// The failure reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidParameters(_) => reason::INVALID_PARAMETERS,
            Error::EgressBlocked(_) => reason::EGRESS_BLOCKED,
            Error::Request(_) => reason::EXECUTOR_ERROR,
            Error::Timeout(_) => reason::TIMEOUT,
        }
    }
}

/// Host settings of `builtin:http`.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest response body read; a larger one fails the attempt.
    pub body_bytes_max: usize,
    /// Timeout when neither `with.timeoutSeconds` nor the step gives one.
    pub default_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            body_bytes_max: 10 * 1024 * 1024,
            default_timeout: Duration::from_secs(30),
        }
    }
}

/// `builtin:http`.
#[derive(Debug, Clone, Default)]
pub struct HttpExecutor {
    config: Arc<HttpConfig>,
}

impl HttpExecutor {
    /// An executor with these settings.
    pub fn new(config: HttpConfig) -> HttpExecutor {
        HttpExecutor {
            config: Arc::new(config),
        }
    }
}

/// The parsed `with`.
#[derive(Debug)]
struct Params {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

const KNOWN: &[&str] = &["method", "url", "headers", "body", "timeoutSeconds"];

fn params(with: &Value) -> Result<Params, Error> {
    let invalid = |m: String| Error::InvalidParameters(m);
    let Value::Object(map) = with else {
        return Err(invalid("builtin:http: `with` must be an object".into()));
    };
    let unknown: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !KNOWN.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(invalid(format!(
            "builtin:http: unknown parameter(s) {} (expected {})",
            unknown.join(", "),
            KNOWN.join(", ")
        )));
    }
    let Some(Value::String(url)) = map.get("url") else {
        return Err(invalid(
            "builtin:http requires `with.url` (a string)".into(),
        ));
    };
    let url = Url::parse(url).map_err(|e| invalid(format!("`with.url` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "`with.url` must be http or https, not {}",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "`with.url` must not carry credentials; use `with.headers.Authorization`".into(),
        ));
    }
    let method = match map.get("method") {
        None => Method::GET,
        Some(Value::String(m)) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| invalid(format!("`with.method` {m:?} is not an HTTP method")))?,
        Some(_) => return Err(invalid("`with.method` must be a string".into())),
    };
    let mut headers = HeaderMap::new();
    match map.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (name, value) in h {
                let Value::String(value) = value else {
                    return Err(invalid(format!("`with.headers.{name}` must be a string")));
                };
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| invalid(format!("`with.headers` has an invalid name {name:?}")))?;
                let value = HeaderValue::from_str(value)
                    .map_err(|_| invalid(format!("`with.headers.{name}` has an invalid value")))?;
                headers.append(name, value);
            }
        }
        Some(_) => {
            return Err(invalid(
                "`with.headers` must be an object of strings".into(),
            ));
        }
    }
    let body = match map.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => {
            headers
                .entry(reqwest::header::CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("text/plain; charset=utf-8"));
            Some(text.clone().into_bytes())
        }
        Some(json) => {
            headers
                .entry(reqwest::header::CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("application/json"));
            Some(json.to_string().into_bytes())
        }
    };
    if body
        .as_ref()
        .is_some_and(|b| b.len() > REQUEST_BODY_BYTES_MAX)
    {
        return Err(invalid(format!(
            "`with.body` is larger than {REQUEST_BODY_BYTES_MAX} bytes"
        )));
    }
    let timeout = match map.get("timeoutSeconds") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(s) if s > 0.0 && s <= TIMEOUT_SECONDS_MAX => Some(Duration::from_secs_f64(s)),
            _ => {
                return Err(invalid(format!(
                    "`with.timeoutSeconds` must be a number in (0, {TIMEOUT_SECONDS_MAX}], got {v}"
                )));
            }
        },
    };
    Ok(Params {
        method,
        url,
        headers,
        body,
        timeout,
    })
}

impl Executor for HttpExecutor {
    fn execute(
        &self,
        request: ExecRequest,
        output: Sender<OutputLine>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, ExecOutcome> {
        let config = Arc::clone(&self.config);
        Box::pin(async move {
            let masker = Masker::new(&request.secrets);
            let fail = |error: Error| {
                ExecOutcome::failed(error.reason(), masker.mask_str(&error.to_string()))
            };
            let params = match params(&request.with) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            let policy =
                match EgressPolicy::new(request.sandbox.network, &request.sandbox.egress_allowlist)
                {
                    Ok(p) => p,
                    Err(m) => return fail(Error::InvalidParameters(m)),
                };
            let limit = [params.timeout, request.timeout]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(config.default_timeout);
            let work = perform(&config, &policy, params, &masker, &output);
            let result = tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    return ExecOutcome::failed(reason::CANCELLED, "request cancelled");
                }
                result = tokio::time::timeout(limit, work) => result,
            };
            match result {
                Err(_) => fail(Error::Timeout(limit.as_secs_f64())),
                Ok(Err(error)) => {
                    let line = masker.mask_str(&error.to_string());
                    let _ = output
                        .send(OutputLine::new(OutputStream::Stderr, line))
                        .await;
                    fail(error)
                }
                Ok(Ok((status, outputs))) => {
                    let outputs = masker.mask_map(outputs);
                    if status.as_u16() >= 400 {
                        ExecOutcome::Failed {
                            reason: HTTP_STATUS.to_owned(),
                            message: format!("the server answered {status}"),
                            outputs,
                        }
                    } else {
                        ExecOutcome::succeeded(outputs)
                    }
                }
            }
        })
    }
}

/// Makes the request, following allowed redirects; returns the final status and outputs.
async fn perform(
    config: &HttpConfig,
    policy: &EgressPolicy,
    params: Params,
    masker: &Masker,
    output: &Sender<OutputLine>,
) -> Result<(StatusCode, Map<String, Value>), Error> {
    let Params {
        mut method,
        mut url,
        mut headers,
        mut body,
        ..
    } = params;
    let mut redirects = 0;
    loop {
        let host = url
            .host()
            .ok_or_else(|| Error::InvalidParameters(format!("{url} has no host")))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| Error::InvalidParameters(format!("{url} has no port")))?;
        let target = policy
            .admit(&host, port)
            .await
            .map_err(Error::EgressBlocked)?;
        let client = client(&target)?;
        let mut builder = client
            .request(method.clone(), url.clone())
            .headers(headers.clone());
        if let Some(body) = &body {
            builder = builder.body(body.clone());
        }
        let mut response = builder
            .send()
            .await
            .map_err(|e| Error::Request(describe(&e)))?;
        let status = response.status();
        let _ = output
            .send(OutputLine::new(
                OutputStream::Stdout,
                masker.mask_str(&format!("{method} {url} -> {status}")),
            ))
            .await;
        if status.is_redirection()
            && let Some(location) = response.headers().get(reqwest::header::LOCATION)
        {
            redirects += 1;
            if redirects > REDIRECTS_MAX {
                return Err(Error::Request(format!(
                    "more than {REDIRECTS_MAX} redirects"
                )));
            }
            let location = location
                .to_str()
                .map_err(|_| Error::Request("a redirect Location that is not text".into()))?;
            let next = url
                .join(location)
                .map_err(|e| Error::Request(format!("a redirect to an invalid URL: {e}")))?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(Error::EgressBlocked(format!(
                    "a redirect to the {} scheme",
                    next.scheme()
                )));
            }
            if next.origin() != url.origin() {
                for name in [
                    reqwest::header::AUTHORIZATION,
                    reqwest::header::COOKIE,
                    reqwest::header::PROXY_AUTHORIZATION,
                ] {
                    headers.remove(name);
                }
            }
            // 303 (and 301/302 after a POST, as browsers do) turn into a GET without body.
            if status == StatusCode::SEE_OTHER
                || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                    && method == Method::POST)
            {
                method = Method::GET;
                body = None;
                headers.remove(reqwest::header::CONTENT_TYPE);
                headers.remove(reqwest::header::CONTENT_LENGTH);
            }
            url = next;
            continue;
        }
        // Read the body under the cap.
        let mut bytes: Vec<u8> = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Error::Request(describe(&e)))?
        {
            if bytes.len() + chunk.len() > config.body_bytes_max {
                return Err(Error::Request(format!(
                    "the response body is larger than {} bytes",
                    config.body_bytes_max
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let mut header_map = Map::new();
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match header_map.get_mut(name.as_str()) {
                Some(Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(&value);
                }
                _ => {
                    header_map.insert(name.as_str().to_owned(), Value::String(value));
                }
            }
        }
        let is_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|ct| ct == "application/json" || ct.ends_with("+json"));
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = if is_json {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        } else {
            Value::String(text)
        };
        let mut outputs = Map::new();
        outputs.insert("status".into(), Value::from(status.as_u16()));
        outputs.insert("headers".into(), Value::Object(header_map));
        outputs.insert("body".into(), body);
        return Ok((status, outputs));
    }
}

/// A client that can only reach `target`'s checked addresses.
fn client(target: &egress::Target) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(RefuseAll));
    if let Some(name) = &target.name {
        builder = builder.resolve_to_addrs(name, &target.addrs);
    }
    builder
        .build()
        .map_err(|e| Error::Request(format!("building the HTTP client: {e}")))
}

/// A resolver that resolves nothing: every name must have been pinned after the checks.
#[derive(Debug)]
struct RefuseAll;

impl reqwest::dns::Resolve for RefuseAll {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_owned();
        Box::pin(async move {
            Err(format!("{name} was not checked against the egress allowlist").into())
        })
    }
}

/// The error and its sources, one line.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
