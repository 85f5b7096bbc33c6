//! The approval ledger over HTTP (`GET /v1/task-runner/approvals`): gates pending and decided
//! across runs with their requirements and decisions, the filters, cursor paging, NDJSON
//! export, tenancy, and refusals of malformed queries.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use axum::body::Body;
use common::*;
use serde_json::{Value, json};
use taskrunner_runtime::RunStatus;

const RUNS: &str = "/v1/task-runner/runs";
const LEDGER: &str = "/v1/task-runner/approvals";

/// A pack named `name` with a two-approver gate that expires after an hour.
fn gated(name: &str) -> String {
    format!(
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {{name: {name}, version: 2.0.0}}\nspec:\n  approvals:\n    - {{id: review, grants: [packs.approve, release.approve], requiredApprovals: 2, expiresAfter: 1h}}\n  steps:\n    - {{id: build, run: {{uses: builtin:noop}}}}\n    - {{id: gate, gate: {{approval: {{id: review, message: ship it?}}}}}}\n    - {{id: deploy, run: {{uses: builtin:noop}}}}\n"
    )
}

async fn create(app: &App, run_id: &str, pack: &str) -> String {
    let a = post(
        &app.router,
        RUNS,
        &json!({"runId": run_id, "manifest": pack}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.bytes));
    let view = app.runtime.wait_settled("default", run_id).await.unwrap();
    assert_eq!(view.status, RunStatus::AwaitingApproval);
    view.plan_hash
}

async fn decide(app: &App, run_id: &str, actor: &str, decision: &str, hash: &str) {
    let a = post(
        &app.router,
        &format!("{RUNS}/{run_id}/approvals/review"),
        &json!({"decision": decision, "planHash": hash, "actorId": actor, "summary": format!("{actor} says {decision}")}),
    )
    .await;
    assert!(
        a.status.is_success(),
        "{}",
        String::from_utf8_lossy(&a.bytes)
    );
}

fn ids(body: &Value) -> Vec<String> {
    body["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["runId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn pending_and_decided_gates_with_their_decisions() {
    let app = app().await;
    let h1 = create(&app, "r1", &gated("release")).await;
    let h2 = create(&app, "r2", &gated("release")).await;
    let h3 = create(&app, "r3", &gated("hotfix")).await;
    // r1: approved by two distinct approvers; r2: one approval of two (still pending);
    // r3: rejected.
    decide(&app, "r1", "alice", "approved", &h1).await;
    decide(&app, "r1", "bob", "approved", &h1).await;
    decide(&app, "r2", "alice", "approved", &h2).await;
    decide(&app, "r3", "carol", "rejected", &h3).await;
    assert_eq!(
        app.runtime
            .wait_settled("default", "r1")
            .await
            .unwrap()
            .status,
        RunStatus::Succeeded
    );
    assert_eq!(
        app.runtime
            .wait_settled("default", "r3")
            .await
            .unwrap()
            .status,
        RunStatus::Failed
    );

    let all = get(&app.router, LEDGER).await;
    assert_eq!(all.status, 200, "{}", String::from_utf8_lossy(&all.bytes));
    let body = all.json();
    assert_served_schema("ApprovalLedger", &body);
    // Newest run first.
    assert_eq!(ids(&body), ["r3", "r2", "r1"]);
    let entry = |id: &str| {
        body["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["runId"] == id)
            .unwrap()
            .clone()
    };
    let r1 = entry("r1");
    assert_eq!(r1["status"], "decided");
    assert_eq!(r1["stepStatus"], "Succeeded");
    assert_eq!(r1["stepId"], "gate");
    assert_eq!(r1["approvalId"], "review");
    assert_eq!(r1["packName"], "release");
    assert_eq!(r1["planHash"], json!(h1));
    assert_eq!(r1["grants"], json!(["packs.approve", "release.approve"]));
    assert_eq!(r1["requiredApprovals"], 2);
    assert_eq!(r1["expiresAfterSeconds"], 3600);
    let decisions = r1["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 2);
    assert_eq!(decisions[0]["actor"], "alice");
    assert_eq!(decisions[1]["actor"], "bob");
    assert_eq!(decisions[1]["decision"], "approved");
    assert_eq!(decisions[1]["summary"], "bob says approved");
    assert_eq!(decisions[1]["planHash"], json!(h1));
    let r2 = entry("r2");
    assert_eq!(r2["status"], "pending");
    assert_eq!(r2["decisions"].as_array().unwrap().len(), 1);
    assert!(r2["expiresAt"].is_string(), "{r2}");
    let r3 = entry("r3");
    assert_eq!(r3["status"], "decided");
    assert_eq!(r3["decisions"][0]["decision"], "rejected");

    // Filters.
    let pending = get(&app.router, &format!("{LEDGER}?status=pending"))
        .await
        .json();
    assert_eq!(ids(&pending), ["r2"]);
    let decided = get(&app.router, &format!("{LEDGER}?status=decided"))
        .await
        .json();
    assert_eq!(ids(&decided), ["r3", "r1"]);
    let hotfix = get(&app.router, &format!("{LEDGER}?pack=hotfix"))
        .await
        .json();
    assert_eq!(ids(&hotfix), ["r3"]);
    let future = get(
        &app.router,
        &format!("{LEDGER}?since=2999-01-01T00%3A00%3A00Z"),
    )
    .await
    .json();
    assert_eq!(ids(&future), Vec::<String>::new());
    let past = get(&app.router, &format!("{LEDGER}?since=2000-01-01T00:00:00Z"))
        .await
        .json();
    assert_eq!(ids(&past).len(), 3);

    // Cursor paging: one run's gates per page, nothing repeated or skipped.
    let mut seen = Vec::new();
    let mut uri = format!("{LEDGER}?limit=1");
    loop {
        let page = get(&app.router, &uri).await.json();
        seen.extend(ids(&page));
        match page["nextCursor"].as_str() {
            Some(next) => uri = format!("{LEDGER}?limit=1&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["r3", "r2", "r1"]);

    // NDJSON export: one gate per line.
    let ndjson = send(
        &app.router,
        req("GET", LEDGER)
            .header("accept", "application/x-ndjson")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(ndjson.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = String::from_utf8(ndjson.bytes.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["runId"], "r3");
}

#[tokio::test]
async fn malformed_queries_are_refused_and_tenants_see_only_their_own() {
    let app = app().await;
    for (query, expected) in [
        ("status=open", "status must be"),
        ("since=yesterday", "since must be an RFC 3339 time"),
        ("limit=0", "limit must be"),
        ("limit=100000", "limit must be"),
    ] {
        let a = get(&app.router, &format!("{LEDGER}?{query}")).await;
        assert_error(&a, 400, "bad_request");
        let message = a.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(expected), "{query}: {message}");
    }
    let bad_cursor = get(&app.router, &format!("{LEDGER}?cursor=nonsense")).await;
    assert_eq!(bad_cursor.status, 400);

    let authed = app_with(Arc::new(TestAuth), |_| {}).await;
    let mut create = json_req(
        "POST",
        RUNS,
        &json!({"runId": "t1", "manifest": gated("release")}),
    );
    create.headers_mut().insert(
        "authorization",
        "Bearer ops;taskrunner.operator;alpha".parse().unwrap(),
    );
    let created = send(&authed.router, create).await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.bytes)
    );
    let _ = authed.runtime.wait_settled("alpha", "t1").await;
    let own = send(
        &authed.router,
        req("GET", LEDGER)
            .header("authorization", "Bearer vic;taskrunner.viewer;alpha")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(own.status, 200);
    assert_eq!(ids(&own.json()), ["t1"]);
    let other = send(
        &authed.router,
        req("GET", LEDGER)
            .header("authorization", "Bearer vic;taskrunner.viewer;beta")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(other.status, 200);
    assert_eq!(ids(&other.json()), Vec::<String>::new());
    let no_token = get(&authed.router, LEDGER).await;
    assert_eq!(no_token.status, 401);
}

#[tokio::test]
async fn no_secret_value_reaches_the_ledger() {
    const SECRET: &str = "ledger-secret-value-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let runtime = taskrunner_runtime::Runtime::start(
        taskrunner_store::Store::new(taskrunner_store::MemoryStore::new()),
        taskrunner_exec::ExecutorRegistry::with_builtins(),
        Arc::new(taskrunner_runtime::SystemClock),
        Arc::new(taskrunner_runtime::StaticSecrets::new().with("token", SECRET)),
        taskrunner_runtime::RuntimeConfig::new(dir.path().join("ws")),
    )
    .await
    .unwrap();
    let router = taskrunner_http::router(
        runtime.clone(),
        taskrunner_http::HttpConfig::new(Arc::new(taskrunner_auth::NoAuth)),
    );
    let pack = "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: secretive, version: 1.0.0}\nspec:\n  secrets: [{name: token}]\n  approvals: [{id: review}]\n  steps:\n    - {id: use, run: {uses: builtin:echo, with: {message: \"{{ secrets.token }}\"}}}\n    - {id: gate, gate: {approval: {id: review}}}\n";
    let created = post(&router, RUNS, &json!({"runId": "s1", "manifest": pack})).await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.bytes)
    );
    let view = runtime.wait_settled("default", "s1").await.unwrap();
    // A decider pastes the secret into the comment: it is masked before it is journaled.
    let decided = post(
        &router,
        &format!("{RUNS}/s1/approvals/review"),
        &json!({"decision": "approved", "planHash": view.plan_hash, "actorId": "eve", "summary": format!("token is {SECRET}")}),
    )
    .await;
    assert!(
        decided.status.is_success(),
        "{}",
        String::from_utf8_lossy(&decided.bytes)
    );
    runtime.wait_settled("default", "s1").await.unwrap();
    for accept in ["application/json", "application/x-ndjson"] {
        let answer = send(
            &router,
            req("GET", LEDGER)
                .header("accept", accept)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        let text = String::from_utf8_lossy(&answer.bytes);
        assert!(text.contains("eve"), "{text}");
        assert!(
            !text.contains(SECRET),
            "{accept}: a secret in the ledger: {text}"
        );
        assert!(
            !text.contains(&SECRET[..12]),
            "{accept}: part of a secret: {text}"
        );
    }
}
