//! End-to-end tests of `taskrunner serve` over real TCP: a spawned server process, plain
//! HTTP/1.1 requests, and the contract's behaviour checked from the outside (issue 4, item 8).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

struct Server {
    child: Child,
    addr: SocketAddr,
    data: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "taskrunner-e2e-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Starts `taskrunner serve` on a free loopback port and waits for its "listening" line.
fn serve(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskrunner"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .env_remove("TASKRUNNER_AUTH")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no listening line, got {line:?}"));
    Server {
        child,
        addr,
        data: data.to_owned(),
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// One request with `Connection: close`; chunked bodies are decoded.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        text.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    text.push_str("\r\n");
    text.push_str(&body);
    stream.write_all(text.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

fn ndjson(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const GATE_PACK: &str = "apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: e2e-gate, version: 1.0.0}
spec:
  approvals:
    - {id: release, grants: [packs.approve]}
  outputs:
    - {name: summary, type: object, expression: 'steps.build.outputs'}
  steps:
    - id: build
      run: {uses: builtin:noop, with: {artifact: app-1.2.3}}
    - id: approve
      gate: {approval: {id: release, message: Ship it?}}
    - id: deploy
      run: {uses: builtin:echo, with: {message: deploying}}
";

const SLEEP_PACK: &str = "apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: e2e-sleep, version: 1.0.0}
spec:
  steps:
    - {id: nap, run: {uses: builtin:sleep, with: {seconds: 60}}}
    - {id: after, run: {uses: builtin:noop}}
";

fn wait_for(addr: SocketAddr, tenant: &str, run_id: &str, what: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = request(
            addr,
            "GET",
            &format!("/v1/task-runner/runs/{run_id}"),
            &[("X-StellaOps-Tenant", tenant)],
            None,
        );
        assert_eq!(r.status, 200);
        let state = r.json();
        if what(&state) {
            return state;
        }
        assert!(Instant::now() < deadline, "timed out; last state {state}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn none_auth_is_refused_on_a_public_address() {
    let data = temp_dir("refuse");
    let out = Command::new(env!("CARGO_BIN_EXE_taskrunner"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&data)
        .env_remove("TASKRUNNER_AUTH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(stderr.contains("loopback"), "{stderr}");
}

#[test]
fn create_follow_approve_artifacts_and_cancel() {
    let data = temp_dir("flow");
    let server = serve(&data, &[], &[]);
    let addr = server.addr;

    let created = request(
        addr,
        "POST",
        "/v1/task-runner/runs",
        &[],
        Some(&json!({"runId": "e2e-1", "manifest": GATE_PACK})),
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(
        created.header("location"),
        Some("/v1/task-runner/runs/e2e-1")
    );
    assert!(created.header("x-request-id").is_some());
    let plan_hash = created.json()["planHash"].as_str().unwrap().to_owned();

    // The same id again is a conflict.
    let again = request(
        addr,
        "POST",
        "/v1/task-runner/runs",
        &[],
        Some(&json!({"runId": "e2e-1", "manifest": GATE_PACK})),
    );
    assert_eq!(again.status, 409);
    assert_eq!(again.error_code(), "run_exists");

    wait_for(addr, "default", "e2e-1", |s| {
        s["status"] == "AwaitingApproval"
    });

    // Follow the logs from another connection while the decision is given.
    let follower = std::thread::spawn(move || {
        request(
            addr,
            "GET",
            "/v1/task-runner/runs/e2e-1/logs?follow=true",
            &[],
            None,
        )
    });
    std::thread::sleep(Duration::from_millis(200));

    let wrong = request(
        addr,
        "POST",
        "/v1/task-runner/runs/e2e-1/approvals/release",
        &[],
        Some(&json!({"decision": "approved", "planHash": format!("sha256:{}", "0".repeat(64))})),
    );
    assert_eq!(wrong.status, 409);
    assert_eq!(wrong.error_code(), "plan_hash_mismatch");
    assert!(wrong.json()["error"]["traceId"].is_string());

    let right = request(
        addr,
        "POST",
        "/v1/task-runner/runs/e2e-1/approvals/release",
        &[],
        Some(&json!({"decision": "approved", "planHash": plan_hash, "actorId": "user:alice"})),
    );
    assert_eq!(
        right.status,
        200,
        "{}",
        String::from_utf8_lossy(&right.body)
    );
    assert_eq!(right.json(), json!({"status": "approved", "resumed": true}));

    // The follow stream ends once the run finished, with every entry in sequence.
    let logs = follower.join().unwrap();
    assert_eq!(logs.status, 200);
    assert!(
        logs.header("content-type")
            .unwrap()
            .starts_with("application/x-ndjson"),
        "{:?}",
        logs.headers
    );
    let entries = ndjson(&logs.body);
    let types: Vec<&str> = entries
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    for expected in [
        "run.created",
        "gate.awaiting",
        "gate.approved",
        "run.completed",
    ] {
        assert!(types.contains(&expected), "{types:?}");
    }
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["sequence"], json!(i + 1));
    }
    // after=N resumes.
    let tail = request(
        addr,
        "GET",
        "/v1/task-runner/runs/e2e-1/logs?after=2",
        &[],
        None,
    );
    assert_eq!(ndjson(&tail.body).len(), entries.len() - 2);

    let state = wait_for(addr, "default", "e2e-1", |s| s["status"] == "Succeeded");
    assert_eq!(state["planHash"], json!(plan_hash));

    let artifacts = request(
        addr,
        "GET",
        "/v1/task-runner/runs/e2e-1/artifacts",
        &[],
        None,
    );
    assert_eq!(artifacts.status, 200);
    let list = artifacts.json();
    assert_eq!(list[0]["name"], "summary");
    assert_eq!(list[0]["status"], "captured");
    assert_eq!(list[0]["expressionJson"], r#"{"artifact":"app-1.2.3"}"#);

    // A finished run cannot be cancelled; a running one can.
    let late = request(addr, "POST", "/v1/task-runner/runs/e2e-1/cancel", &[], None);
    assert_eq!(late.status, 409);
    assert_eq!(late.error_code(), "run_terminal");

    let sleeper = request(
        addr,
        "POST",
        "/v1/task-runner/runs",
        &[],
        Some(&json!({"runId": "e2e-2", "manifest": SLEEP_PACK})),
    );
    assert_eq!(sleeper.status, 201);
    wait_for(addr, "default", "e2e-2", |s| {
        s["steps"][0]["status"] == "Running"
    });
    let cancel = request(addr, "POST", "/v1/task-runner/runs/e2e-2/cancel", &[], None);
    assert_eq!(cancel.status, 202);
    assert_eq!(
        cancel.header("location"),
        Some("/v1/task-runner/runs/e2e-2")
    );
    assert_eq!(cancel.json(), json!({"status": "cancelled"}));
    let state = wait_for(addr, "default", "e2e-2", |s| s["status"] == "Cancelled");
    assert_eq!(state["steps"][1]["status"], "Skipped");
    assert_eq!(state["steps"][1]["statusReason"], "cancelled");
}

#[test]
fn tenants_do_not_see_each_other() {
    let data = temp_dir("tenants");
    let server = serve(&data, &[], &[]);
    let addr = server.addr;
    let created = request(
        addr,
        "POST",
        "/v1/task-runner/runs",
        &[("X-StellaOps-Tenant", "team-a")],
        Some(&json!({"runId": "shared-id", "manifest": SLEEP_PACK})),
    );
    assert_eq!(created.status, 201);
    let other = request(
        addr,
        "GET",
        "/v1/task-runner/runs/shared-id",
        &[("X-StellaOps-Tenant", "team-b")],
        None,
    );
    assert_eq!(other.status, 404);
    assert_eq!(other.error_code(), "not_found");
    let cancel = request(
        addr,
        "POST",
        "/v1/task-runner/runs/shared-id/cancel",
        &[("X-StellaOps-Tenant", "team-b")],
        None,
    );
    assert_eq!(cancel.status, 404);
    // The same id is free in the other tenant.
    let b = request(
        addr,
        "POST",
        "/v1/task-runner/runs",
        &[("X-StellaOps-Tenant", "team-b")],
        Some(&json!({"runId": "shared-id", "manifest": GATE_PACK})),
    );
    assert_eq!(b.status, 201);
    let mine = request(
        addr,
        "GET",
        "/v1/task-runner/runs/shared-id",
        &[("X-StellaOps-Tenant", "team-a")],
        None,
    );
    assert_eq!(mine.json()["tenantId"], "team-a");
    // A body tenant that differs from the header is a bad request.
    let mismatch = request(
        addr,
        "POST",
        "/v1/task-runner/runs",
        &[("X-StellaOps-Tenant", "team-a")],
        Some(&json!({"manifest": SLEEP_PACK, "tenantId": "team-b"})),
    );
    assert_eq!(mismatch.status, 400);
}

fn token(claims: Value) -> String {
    let secret = std::fs::read(fixtures().join("auth/hmac-secret")).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.trim_ascii_end()).unwrap(),
    )
    .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn jwt_tokens_are_checked_and_scopes_enforced() {
    let data = temp_dir("jwt");
    let secret = fixtures().join("auth/hmac-secret");
    let server = serve(
        &data,
        &[],
        &[
            ("TASKRUNNER_AUTH", "jwt"),
            ("TASKRUNNER_JWT_ISSUER", "https://idp.test"),
            ("TASKRUNNER_JWT_AUDIENCE", "taskrunner"),
            ("TASKRUNNER_JWT_HMAC_SECRET_FILE", secret.to_str().unwrap()),
        ],
    );
    let addr = server.addr;
    let claims = |scope: &str, extra: Value| {
        let mut c = json!({
            "sub": "user:alice", "iss": "https://idp.test", "aud": "taskrunner",
            "exp": now() + 600, "scope": scope,
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let bearer = |t: &str| format!("Bearer {t}");
    let create = |auth: Option<String>| {
        let headers: Vec<(&str, &str)> = match &auth {
            Some(a) => vec![("Authorization", a.as_str())],
            None => vec![],
        };
        request(
            addr,
            "POST",
            "/v1/task-runner/runs",
            &headers,
            Some(&json!({"manifest": GATE_PACK})),
        )
    };

    let missing = create(None);
    assert_eq!(missing.status, 401);
    assert_eq!(missing.error_code(), "unauthorized");
    assert!(
        missing
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );

    let expired = create(Some(bearer(&token(claims(
        "taskrunner.operator",
        json!({"exp": now() - 3600}),
    )))));
    assert_eq!(expired.status, 401);

    let wrong_aud = create(Some(bearer(&token(claims(
        "taskrunner.operator",
        json!({"aud": "someone-else"}),
    )))));
    assert_eq!(wrong_aud.status, 401);

    // alg: none, hand-built.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims("taskrunner.admin", json!({})).to_string())
    );
    assert_eq!(create(Some(bearer(&none))).status, 401);

    let viewer = create(Some(bearer(&token(claims("taskrunner.viewer", json!({}))))));
    assert_eq!(viewer.status, 403);
    assert_eq!(viewer.error_code(), "forbidden");

    let operator = bearer(&token(claims("taskrunner.operator", json!({}))));
    let created = create(Some(operator.clone()));
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let run = created.json();
    let run_id = run["runId"].as_str().unwrap();
    let hash = run["planHash"].as_str().unwrap();

    // The viewer can read; the operator without the approval's grant cannot approve.
    let viewer_token = bearer(&token(claims("taskrunner.viewer", json!({}))));
    let read = request(
        addr,
        "GET",
        &format!("/v1/task-runner/runs/{run_id}"),
        &[("Authorization", &viewer_token)],
        None,
    );
    assert_eq!(read.status, 200);
    let decide = |auth: &str, body: Value| {
        request(
            addr,
            "POST",
            &format!("/v1/task-runner/runs/{run_id}/approvals/release"),
            &[("Authorization", auth)],
            Some(&body),
        )
    };
    let no_grant = decide(&operator, json!({"decision": "approved", "planHash": hash}));
    assert_eq!(no_grant.status, 403);
    let approver = bearer(&token(claims(
        "taskrunner.operator packs.approve",
        json!({}),
    )));
    // The actor is the token's subject: another actorId is refused.
    let spoof = decide(
        &approver,
        json!({"decision": "approved", "planHash": hash, "actorId": "user:mallory"}),
    );
    assert_eq!(spoof.status, 403);
    let ok = decide(&approver, json!({"decision": "approved", "planHash": hash}));
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));

    // A token bound to a tenant cannot act in another one.
    let bound = bearer(&token(claims(
        "taskrunner.viewer",
        json!({"tenant": "team-a"}),
    )));
    let cross = request(
        addr,
        "GET",
        &format!("/v1/task-runner/runs/{run_id}"),
        &[("Authorization", &bound), ("X-StellaOps-Tenant", "default")],
        None,
    );
    assert_eq!(cross.status, 403);

    // Health and the spec need no token.
    assert_eq!(request(addr, "GET", "/healthz", &[], None).status, 200);
    assert_eq!(
        request(addr, "GET", "/.well-known/openapi", &[], None).status,
        200
    );
}

#[test]
fn sigterm_stops_cleanly_and_runs_resume_after_restart() {
    let data = temp_dir("restart");
    let server = serve(&data, &[], &[]);
    let created = request(
        server.addr,
        "POST",
        "/v1/task-runner/runs",
        &[],
        Some(&json!({"runId": "durable", "manifest": GATE_PACK})),
    );
    assert_eq!(created.status, 201);
    let hash = created.json()["planHash"].as_str().unwrap().to_owned();
    wait_for(server.addr, "default", "durable", |s| {
        s["status"] == "AwaitingApproval"
    });

    let mut server = server;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");

    let restarted = serve(&server.data, &[], &[]);
    let decided = request(
        restarted.addr,
        "POST",
        "/v1/task-runner/runs/durable/approvals/release",
        &[],
        Some(&json!({"decision": "approved", "planHash": hash})),
    );
    assert_eq!(
        decided.status,
        200,
        "{}",
        String::from_utf8_lossy(&decided.body)
    );
    wait_for(restarted.addr, "default", "durable", |s| {
        s["status"] == "Succeeded"
    });
}

/// `serve` with `TASKRUNNER_EVIDENCE_SIGNING_KEY`: the key is served, a finished run's
/// evidence is signed with it; a key file that is not a private key stops the start.
#[test]
fn serve_signs_evidence_with_the_configured_key() {
    let dir = temp_dir("evidence");
    let key = dir.join("ev.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_taskrunner"))
        .arg("keygen")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let key_id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let server = serve(
        &dir.join("data"),
        &[],
        &[("TASKRUNNER_EVIDENCE_SIGNING_KEY", key.to_str().unwrap())],
    );
    let keys = request(
        server.addr,
        "GET",
        "/v1/task-runner/evidence/keys",
        &[],
        None,
    );
    assert_eq!(keys.status, 200);
    assert_eq!(keys.json()["keys"][0]["keyId"], key_id.as_str());
    let manifest = "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: ev, version: 1.0.0}\nspec:\n  steps:\n    - {id: a, run: {uses: builtin:noop}}\n";
    let created = request(
        server.addr,
        "POST",
        "/v1/task-runner/runs",
        &[],
        Some(&serde_json::json!({"manifest": manifest, "runId": "ev-1"})),
    );
    assert_eq!(created.status, 201);
    wait_for(server.addr, "default", "ev-1", |s| {
        s["status"] == "Succeeded"
    });
    // The driver may still be retiring for a moment: 409 until then.
    let deadline = Instant::now() + Duration::from_secs(10);
    let evidence = loop {
        let r = request(
            server.addr,
            "GET",
            "/v1/task-runner/runs/ev-1/evidence",
            &[],
            None,
        );
        if r.status != 409 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(evidence.status, 200, "{}", evidence.error_code());
    assert_eq!(evidence.json()["keyId"], key_id.as_str());
    assert_eq!(
        evidence.json()["provenance"]["signatures"][0]["keyid"],
        key_id.as_str()
    );
    drop(server);

    let out = Command::new(env!("CARGO_BIN_EXE_taskrunner"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .env(
            "TASKRUNNER_EVIDENCE_SIGNING_KEY",
            format!("{}.pub", key.display()),
        )
        .env_remove("TASKRUNNER_AUTH")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("evidence signing key"), "{stderr}");
}
