//! Router tests without sockets (`oneshot`): every operation and every error status of the
//! contract and SPEC §4–§6, each body checked against the contract's schema.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::body::Body;
use common::*;
use serde_json::{Value, json};
use taskrunner_engine::RunStatus;

const RUNS: &str = "/v1/task-runner/runs";

async fn wait_status(app: &App, tenant: &str, run_id: &str, want: RunStatus) {
    for _ in 0..200 {
        let view = app.runtime.wait_settled(tenant, run_id).await.unwrap();
        if view.status == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("run {run_id} never became {want:?}");
}

// ---- simulate ------------------------------------------------------------------------------

#[tokio::test]
async fn simulate_answers_the_simulation() {
    let app = app().await;
    let a = post(
        &app.router,
        "/v1/task-runner/simulations",
        &json!({"manifest": gate_pack()}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.bytes));
    let body = a.json();
    assert_schema("SimulationResponse", &body);
    assert_eq!(body["hasPendingApprovals"], true);
    assert_eq!(body["steps"][1]["status"], "RequiresApproval");
    assert!(a.header("x-request-id").is_some());
    // Nothing was stored.
    let list = get(&app.router, RUNS).await.json();
    assert_eq!(list["runs"], json!([]));
}

#[tokio::test]
async fn simulate_plan_errors_are_plan_error_responses() {
    let app = app().await;
    let a = post(
        &app.router,
        "/v1/task-runner/simulations",
        &json!({"manifest": pack("  steps:\n    - id: x\n      bogus: 1\n")}),
    )
    .await;
    assert_eq!(a.status, 400);
    let body = a.json();
    assert_schema("PlanErrorResponse", &body);
    assert_schema("ErrorEnvelope", &body);
    assert!(
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"].as_str().unwrap().starts_with("spec.steps[0]")),
        "{body}"
    );
}

#[tokio::test]
async fn every_400_of_simulate_and_create_is_a_plan_error_response() {
    let app = app().await;
    let cases: Vec<(&str, Body, &str)> = vec![
        (
            "/v1/task-runner/simulations",
            Body::from("{not json"),
            "body",
        ),
        ("/v1/task-runner/simulations", Body::from("[1]"), "body"),
        (
            "/v1/task-runner/simulations",
            Body::from("{}"),
            "body.manifest",
        ),
        (
            "/v1/task-runner/simulations",
            Body::from(r#"{"manifest":"x","inputs":3}"#),
            "body.inputs",
        ),
        (RUNS, Body::from("{\"manifest\": 1}"), "body.manifest"),
        (
            RUNS,
            Body::from(json!({"manifest": echo_pack(), "runId": "bad id!"}).to_string()),
            "body.runId",
        ),
        (
            RUNS,
            Body::from(json!({"manifest": echo_pack(), "tenantId": "other"}).to_string()),
            "body.tenantId",
        ),
    ];
    for (uri, body, path) in cases {
        let a = send(
            &app.router,
            req("POST", uri)
                .header("content-type", "application/json")
                .body(body)
                .unwrap(),
        )
        .await;
        assert_error(&a, 400, "bad_request");
        let body = a.json();
        assert_schema("PlanErrorResponse", &body);
        assert_eq!(body["errors"][0]["path"], path, "{body}");
    }
    // A malformed tenant header, too.
    let a = send(
        &app.router,
        req("POST", RUNS)
            .header("content-type", "application/json")
            .header("x-stellaops-tenant", "Not A Tenant")
            .body(Body::from(json!({"manifest": echo_pack()}).to_string()))
            .unwrap(),
    )
    .await;
    assert_error(&a, 400, "bad_request");
    assert_schema("PlanErrorResponse", &a.json());
}

#[tokio::test]
async fn id_errors_name_the_value_and_the_rule() {
    // Rule 26 is the store's validator; the answer names the value and the pattern.
    let app = app().await;
    let a = get(&app.router, "/v1/task-runner/runs/bad.id").await;
    assert_error(&a, 400, "bad_request");
    assert_eq!(
        a.json()["error"]["message"],
        "run id 'bad.id' must match ^[a-zA-Z0-9_-]{1,128}$"
    );
    let a = send(
        &app.router,
        req("GET", "/v1/task-runner/runs/r-1")
            .header("x-stellaops-tenant", "Not-A-Tenant")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_error(&a, 400, "bad_request");
    assert_eq!(
        a.json()["error"]["message"],
        "tenant 'Not-A-Tenant' must match ^[a-z0-9][a-z0-9._-]{0,62}$"
    );
}

#[tokio::test]
async fn non_json_bodies_are_415() {
    let app = app().await;
    for content_type in [Some("text/plain"), None] {
        let mut r = req("POST", "/v1/task-runner/simulations");
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        let a = send(&app.router, r.body(Body::from("manifest: x")).unwrap()).await;
        assert_error(&a, 415, "unsupported_media_type");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_with_or_without_content_length() {
    let app = app_with(std::sync::Arc::new(taskrunner_auth::NoAuth), |c| {
        c.body_limit_bytes = 1024
    })
    .await;
    let big = json!({"manifest": "x".repeat(4096)}).to_string();
    let a = send(
        &app.router,
        req("POST", RUNS)
            .header("content-type", "application/json")
            .header("content-length", big.len())
            .body(Body::from(big.clone()))
            .unwrap(),
    )
    .await;
    assert_error(&a, 413, "payload_too_large");
    // Chunked: no Content-Length, the body arrives in pieces.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.as_bytes().chunks(256).map(|c| Ok(c.to_vec())).collect();
    let a = send(
        &app.router,
        req("POST", "/v1/task-runner/simulations")
            .header("content-type", "application/json")
            .body(Body::from_stream(futures::stream::iter(chunks)))
            .unwrap(),
    )
    .await;
    assert_error(&a, 413, "payload_too_large");
}

// ---- create / get ----------------------------------------------------------------------------

#[tokio::test]
async fn create_then_get_a_run() {
    let app = app().await;
    let a = post(
        &app.router,
        RUNS,
        &json!({"manifest": echo_pack(), "runId": "r-1", "tenantId": "default"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.bytes));
    assert_eq!(a.header("location"), Some("/v1/task-runner/runs/r-1"));
    let body = a.json();
    assert_schema("RunStateResponse", &body);
    assert_eq!(body["runId"], "r-1");
    assert_eq!(body["tenantId"], "default");

    wait_status(&app, "default", "r-1", RunStatus::Succeeded).await;
    let a = get(&app.router, &format!("{RUNS}/r-1")).await;
    assert_eq!(a.status, 200);
    let body = a.json();
    assert_schema("RunStateResponse", &body);
    assert_served_schema("RunStateResponse", &body);
    assert_eq!(body["status"], "Succeeded");
    assert_eq!(body["steps"][0]["templateId"], "hello");
    assert_eq!(body["steps"][0]["status"], "Succeeded");
    assert_eq!(body["steps"][0]["attempts"], 1);

    // The same id again: 409 run_exists.
    let a = post(
        &app.router,
        RUNS,
        &json!({"manifest": echo_pack(), "runId": "r-1"}),
    )
    .await;
    assert_error(&a, 409, "run_exists");
}

#[tokio::test]
async fn generated_run_ids_and_the_list_extension() {
    let app = app().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let a = post(&app.router, RUNS, &json!({"manifest": echo_pack()})).await;
        assert_eq!(a.status, 201);
        ids.push(a.json()["runId"].as_str().unwrap().to_owned());
    }
    let a = get(&app.router, &format!("{RUNS}?limit=2")).await;
    assert_eq!(a.status, 200);
    let page = a.json();
    assert_served_schema("RunList", &page);
    assert_eq!(page["runs"].as_array().unwrap().len(), 2);
    assert_eq!(page["runs"][0]["runId"], ids[2].as_str(), "newest first");
    let cursor = page["nextCursor"].as_str().unwrap();
    let page2 = get(&app.router, &format!("{RUNS}?limit=2&cursor={cursor}"))
        .await
        .json();
    assert_eq!(page2["runs"].as_array().unwrap().len(), 1);
    assert_eq!(page2["runs"][0]["runId"], ids[0].as_str());
    assert!(page2.get("nextCursor").is_none());

    assert_error(
        &get(&app.router, &format!("{RUNS}?limit=0")).await,
        400,
        "bad_request",
    );
    assert_error(
        &get(&app.router, &format!("{RUNS}?cursor=junk")).await,
        400,
        "bad_request",
    );
}

#[tokio::test]
async fn missing_and_foreign_runs_are_404_and_bad_ids_400() {
    let app = app().await;
    let a = post(
        &app.router,
        RUNS,
        &json!({"manifest": echo_pack(), "runId": "mine"}),
    )
    .await;
    assert_eq!(a.status, 201);
    assert_error(
        &get(&app.router, &format!("{RUNS}/nope")).await,
        404,
        "not_found",
    );
    let foreign = send(
        &app.router,
        req("GET", &format!("{RUNS}/mine"))
            .header("x-stellaops-tenant", "other")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_error(&foreign, 404, "not_found");
    for suffix in ["", "/logs", "/artifacts"] {
        let a = get(&app.router, &format!("{RUNS}/bad.id{suffix}")).await;
        assert_error(&a, 400, "bad_request");
        let a = get(&app.router, &format!("{RUNS}/nope{suffix}")).await;
        assert_error(&a, 404, "not_found");
    }
    let long = "x".repeat(129);
    assert_error(
        &get(&app.router, &format!("{RUNS}/{long}")).await,
        400,
        "bad_request",
    );
}

#[tokio::test]
async fn a_full_queue_is_429_with_retry_after() {
    let app = app().await;
    let manifest = pack(
        "  slo: {maxQueueDepth: 1}\n  steps:\n    - id: hello\n      run: {uses: builtin:echo, with: {message: hi}}\n",
    );
    // One run of this pack waiting to start (written directly: the runtime starts its own at once).
    let plan = taskrunner_plan::plan_yaml(&manifest, &serde_json::Map::new()).unwrap();
    app.store
        .runs
        .create_run(taskrunner_store::NewRun {
            tenant: "default".into(),
            run_id: "queued".into(),
            pack_name: "web".into(),
            pack_version: "1.0.0".into(),
            plan_hash: plan.hash().into(),
            plan_json: plan.canonical_json().into(),
            created_at_ms: 1,
            status: "Pending".into(),
            host_digest: None,
            journal: vec![],
            logs: vec![],
            artifacts: vec![],
        })
        .await
        .unwrap();
    let a = post(&app.router, RUNS, &json!({"manifest": manifest})).await;
    assert_error(&a, 429, "queue_full");
    assert_eq!(a.header("retry-after"), Some("5"));
}

// ---- logs ---------------------------------------------------------------------------------------

#[tokio::test]
async fn logs_are_ndjson_entries_with_sequences() {
    let app = app().await;
    post(
        &app.router,
        RUNS,
        &json!({"manifest": echo_pack(), "runId": "l-1"}),
    )
    .await;
    wait_status(&app, "default", "l-1", RunStatus::Succeeded).await;
    let a = get(&app.router, &format!("{RUNS}/l-1/logs")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/x-ndjson"));
    assert!(a.header("content-encoding").is_none());
    let text = String::from_utf8(a.bytes.clone()).unwrap();
    let entries: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(entries.len() >= 4, "{text}");
    for (i, e) in entries.iter().enumerate() {
        assert_schema("RunLogEntry", e);
        assert_served_schema("RunLogEntry", e);
        assert_eq!(e["sequence"], i as u64 + 1);
    }
    assert_eq!(entries[0]["eventType"], "run.created");
    assert_eq!(entries.last().unwrap()["eventType"], "run.completed");

    let after = get(&app.router, &format!("{RUNS}/l-1/logs?after=2")).await;
    let first: Value = serde_json::from_str(
        String::from_utf8(after.bytes)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["sequence"], 3);

    for bad in ["x", "-1", "9223372036854775808"] {
        assert_error(
            &get(&app.router, &format!("{RUNS}/l-1/logs?after={bad}")).await,
            400,
            "bad_request",
        );
    }
    // The largest sequence is fine: nothing after it.
    let none = get(
        &app.router,
        &format!("{RUNS}/l-1/logs?after=9223372036854775807"),
    )
    .await;
    assert_eq!(none.status, 200);
    assert!(none.bytes.is_empty());
    assert_error(
        &get(&app.router, &format!("{RUNS}/l-1/logs?follow=1")).await,
        400,
        "bad_request",
    );
}

#[tokio::test]
async fn follow_streams_lines_while_the_run_runs_and_ends_with_it() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let app = app().await;
    let manifest = pack(
        "  steps:\n    - id: talk\n      run:\n        uses: builtin:shell\n        with:\n          script: |\n            echo first-line\n            sleep 1\n            echo second-line\n",
    );
    post(
        &app.router,
        RUNS,
        &json!({"manifest": manifest, "runId": "f-1"}),
    )
    .await;
    let response = app
        .router
        .clone()
        .oneshot(
            req("GET", &format!("{RUNS}/f-1/logs?follow=true"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut seen = String::new();
    let mut first_seen_while = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            seen.push_str(std::str::from_utf8(data).unwrap());
        }
        if first_seen_while.is_none() && seen.contains("first-line") {
            let view = app
                .runtime
                .get_run("default", "f-1")
                .await
                .unwrap()
                .unwrap();
            first_seen_while = Some(view.status);
        }
    }
    // The first line arrived while the step was still running (it sleeps before the second).
    assert_eq!(first_seen_while, Some(RunStatus::Running), "{seen}");
    // The stream ended by itself, after the run finished, with every entry exactly once.
    let entries: Vec<Value> = seen
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        entries.last().unwrap()["eventType"],
        "run.completed",
        "{seen}"
    );
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["sequence"], i as u64 + 1);
    }
    assert!(seen.contains("second-line"));
}

#[tokio::test]
async fn follow_sends_keepalives_and_ends_on_shutdown() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let app = app_with(std::sync::Arc::new(taskrunner_auth::NoAuth), |c| {
        c.keepalive_interval = Duration::from_millis(50)
    })
    .await;
    post(
        &app.router,
        RUNS,
        &json!({"manifest": gate_pack(), "runId": "k-1"}),
    )
    .await;
    wait_status(&app, "default", "k-1", RunStatus::AwaitingApproval).await;
    let response = app
        .router
        .clone()
        .oneshot(
            req("GET", &format!("{RUNS}/k-1/logs?follow=true"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        let frame = body.frame().await.unwrap().unwrap();
        seen.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
    }
    assert!(seen.contains("gate.awaiting"), "{seen}");
    app.config.shutdown.cancel();
    // The stream ends (no hang) once the server shuts down.
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the stream did not end on shutdown");
    assert!(rest.is_ok());
    // And /readyz now says no.
    assert_error(&get(&app.router, "/readyz").await, 503, "internal_error");
}

// ---- artifacts ------------------------------------------------------------------------------

#[tokio::test]
async fn artifacts_list_with_extension_fields() {
    let app = app().await;
    let manifest = pack(
        "  steps:\n    - id: write\n      run:\n        uses: builtin:shell\n        with:\n          script: echo report > r.txt\n  outputs:\n    - {name: report, type: file, path: r.txt}\n    - {name: value, type: object, expression: inputs}\n",
    );
    post(
        &app.router,
        RUNS,
        &json!({"manifest": manifest, "runId": "a-1"}),
    )
    .await;
    wait_status(&app, "default", "a-1", RunStatus::Succeeded).await;
    let a = get(&app.router, &format!("{RUNS}/a-1/artifacts")).await;
    assert_eq!(a.status, 200);
    let list = a.json();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    for item in list.as_array().unwrap() {
        assert_schema("RunArtifact", item);
        assert_served_schema("RunArtifact", item);
    }
    assert_eq!(list[0]["status"], "captured");
    assert_eq!(list[0]["sizeBytes"], 7);
    assert_eq!(list[0]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(list[1]["type"], "object");
}

// ---- cancel ---------------------------------------------------------------------------------

#[tokio::test]
async fn cancel_is_202_then_again_202_and_409_for_finished_runs() {
    let app = app().await;
    post(
        &app.router,
        RUNS,
        &json!({"manifest": gate_pack(), "runId": "c-1"}),
    )
    .await;
    let a = post(&app.router, &format!("{RUNS}/c-1/cancel"), &json!({})).await;
    assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.bytes));
    assert_eq!(a.header("location"), Some("/v1/task-runner/runs/c-1"));
    assert_eq!(a.json(), json!({"status": "cancelled"}));
    let again = post(&app.router, &format!("{RUNS}/c-1/cancel"), &json!({})).await;
    assert_eq!(again.status, 202);

    post(
        &app.router,
        RUNS,
        &json!({"manifest": echo_pack(), "runId": "c-2"}),
    )
    .await;
    wait_status(&app, "default", "c-2", RunStatus::Succeeded).await;
    let a = post(&app.router, &format!("{RUNS}/c-2/cancel"), &json!({})).await;
    assert_error(&a, 409, "run_terminal");
    let a = post(&app.router, &format!("{RUNS}/none/cancel"), &json!({})).await;
    assert_error(&a, 404, "not_found");
}

// ---- approvals ------------------------------------------------------------------------------

fn decision(decision: &str, plan_hash: &str) -> Value {
    json!({"decision": decision, "planHash": plan_hash, "summary": "ok"})
}

#[tokio::test]
async fn approvals_follow_rule_16() {
    let app = app().await;
    let created = post(
        &app.router,
        RUNS,
        &json!({"manifest": gate_pack(), "runId": "g-1"}),
    )
    .await;
    let hash = created.json()["planHash"].as_str().unwrap().to_owned();
    wait_status(&app, "default", "g-1", RunStatus::AwaitingApproval).await;
    let url = format!("{RUNS}/g-1/approvals/review");

    // 400: unknown decision, malformed hash, malformed JSON.
    assert_error(
        &post(&app.router, &url, &decision("maybe", &hash)).await,
        400,
        "bad_request",
    );
    assert_error(
        &post(&app.router, &url, &decision("approved", "sha256:x")).await,
        400,
        "bad_request",
    );
    // 404: unknown run, unknown approval.
    let a = post(
        &app.router,
        &format!("{RUNS}/nope/approvals/review"),
        &decision("approved", &hash),
    )
    .await;
    assert_error(&a, 404, "not_found");
    let a = post(
        &app.router,
        &format!("{RUNS}/g-1/approvals/other"),
        &decision("approved", &hash),
    )
    .await;
    assert_error(&a, 404, "not_found");
    // 409 plan_hash_mismatch.
    let wrong = format!("sha256:{}", "0".repeat(64));
    assert_error(
        &post(&app.router, &url, &decision("approved", &wrong)).await,
        409,
        "plan_hash_mismatch",
    );
    // 200, then an identical repeat is 200 with the same answer.
    let a = post(&app.router, &url, &decision("approved", &hash)).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.bytes));
    assert_schema("ApprovalDecisionResponse", &a.json());
    assert_eq!(a.json(), json!({"status": "approved", "resumed": true}));
    wait_status(&app, "default", "g-1", RunStatus::Succeeded).await;
    let again = post(&app.router, &url, &decision("approved", &hash)).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json(), json!({"status": "approved", "resumed": true}));
    // A different decision on a finished run: 409.
    let a = post(&app.router, &url, &decision("rejected", &hash)).await;
    assert_error(&a, 409, "run_terminal");
}

#[tokio::test]
async fn approval_already_decided_is_409() {
    let app = app().await;
    // Two gates, one approval id: rejected at the first, the run fails → run_terminal; so use a
    // continueOnError gate to keep the run going and decide again.
    let manifest = pack(
        "  approvals:\n    - {id: review}\n  steps:\n    - id: gate\n      continueOnError: true\n      gate:\n        approval: {id: review}\n    - id: wait\n      gate:\n        approval: {id: other}\n",
    );
    let manifest = manifest.replace("- {id: review}\n", "- {id: review}\n    - {id: other}\n");
    let created = post(
        &app.router,
        RUNS,
        &json!({"manifest": manifest, "runId": "d-1"}),
    )
    .await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.bytes)
    );
    let hash = created.json()["planHash"].as_str().unwrap().to_owned();
    wait_status(&app, "default", "d-1", RunStatus::AwaitingApproval).await;
    let url = format!("{RUNS}/d-1/approvals/review");
    let a = post(&app.router, &url, &decision("rejected", &hash)).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.bytes));
    assert_eq!(a.json(), json!({"status": "rejected", "resumed": false}));
    let a = post(&app.router, &url, &decision("approved", &hash)).await;
    assert_error(&a, 409, "approval_already_decided");
}

// ---- auth and tenancy -----------------------------------------------------------------------

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn tokens_scopes_and_tenants() {
    let app = authed().await;
    // 401 without or with a bad token, with WWW-Authenticate.
    let a = get(&app.router, RUNS).await;
    assert_error(&a, 401, "unauthorized");
    assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    let a = send(
        &app.router,
        req("GET", RUNS)
            .header("authorization", "Basic x")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_error(&a, 401, "unauthorized");

    let viewer = bearer("vic;taskrunner.viewer");
    let operator = bearer("olga;taskrunner.operator");
    // A viewer may read but not create or simulate.
    let a = send(
        &app.router,
        req("GET", RUNS)
            .header("authorization", &viewer)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    for uri in [RUNS, "/v1/task-runner/simulations"] {
        let mut r = json_req("POST", uri, &json!({"manifest": echo_pack()}));
        r.headers_mut()
            .insert("authorization", viewer.parse().unwrap());
        assert_error(&send(&app.router, r).await, 403, "forbidden");
    }
    // An operator creates in the tenant of its token claim; a differing header is 403.
    let claimed = bearer("olga;taskrunner.operator;acme");
    let mut r = json_req(
        "POST",
        RUNS,
        &json!({"manifest": echo_pack(), "runId": "t-1"}),
    );
    r.headers_mut()
        .insert("authorization", claimed.parse().unwrap());
    let a = send(&app.router, r).await;
    assert_eq!(a.status, 201);
    assert_eq!(a.json()["tenantId"], "acme");
    let mut r = json_req("POST", RUNS, &json!({"manifest": echo_pack()}));
    r.headers_mut()
        .insert("authorization", claimed.parse().unwrap());
    r.headers_mut()
        .insert("x-stellaops-tenant", "other".parse().unwrap());
    assert_error(&send(&app.router, r).await, 403, "forbidden");
    // The run is invisible from the default tenant.
    let a = send(
        &app.router,
        req("GET", &format!("{RUNS}/t-1"))
            .header("authorization", &operator)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_error(&a, 404, "not_found");
    // The open endpoints need no token.
    for uri in [
        "/healthz",
        "/readyz",
        "/openapi",
        "/openapi.json",
        "/.well-known/openapi",
    ] {
        assert_eq!(get(&app.router, uri).await.status, 200, "{uri}");
    }
}

#[tokio::test]
async fn approval_grants_and_actor_with_auth() {
    let app = authed().await;
    let operator = bearer("olga;taskrunner.operator");
    let approver = bearer("alice;taskrunner.operator,packs.approve");
    let viewer = bearer("vic;taskrunner.viewer,packs.approve");
    let mut r = json_req(
        "POST",
        RUNS,
        &json!({"manifest": gate_pack(), "runId": "ga-1"}),
    );
    r.headers_mut()
        .insert("authorization", operator.parse().unwrap());
    let created = send(&app.router, r).await;
    let hash = created.json()["planHash"].as_str().unwrap().to_owned();
    wait_status(&app, "default", "ga-1", RunStatus::AwaitingApproval).await;
    let url = format!("{RUNS}/ga-1/approvals/review");
    let call = |token: &str, body: Value, uri: &str| {
        let mut r = json_req("POST", uri, &body);
        r.headers_mut()
            .insert("authorization", token.parse().unwrap());
        send(&app.router, r)
    };
    // Missing grant, missing scope, differing actor: 403.
    assert_error(
        &call(&operator, decision("approved", &hash), &url).await,
        403,
        "forbidden",
    );
    assert_error(
        &call(&viewer, decision("approved", &hash), &url).await,
        403,
        "forbidden",
    );
    let mut as_bob = decision("approved", &hash);
    as_bob["actorId"] = json!("bob");
    assert_error(&call(&approver, as_bob, &url).await, 403, "forbidden");
    // 404 comes before 403, and 403 before the hash check.
    let other = format!("{RUNS}/ga-1/approvals/none");
    assert_error(
        &call(&viewer, decision("approved", &hash), &other).await,
        404,
        "not_found",
    );
    let wrong = format!("sha256:{}", "0".repeat(64));
    assert_error(
        &call(&operator, decision("approved", &wrong), &url).await,
        403,
        "forbidden",
    );
    // The approver (actorId equal to the subject is fine) passes the gate.
    let mut as_alice = decision("approved", &hash);
    as_alice["actorId"] = json!("alice");
    let a = call(&approver, as_alice, &url).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.bytes));
    assert_eq!(a.json()["resumed"], true);
}

// ---- cross-cutting --------------------------------------------------------------------------

#[tokio::test]
async fn request_ids_and_traceparent() {
    let app = app().await;
    let a = get(&app.router, "/healthz").await;
    assert_eq!(a.json(), json!({"status": "ok"}));
    let id = a.header("x-request-id").unwrap().to_owned();
    assert_eq!(id.len(), 32);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let a = send(
        &app.router,
        req("GET", &format!("{RUNS}/nope"))
            .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_error(&a, 404, "not_found");
    assert_eq!(a.json()["error"]["traceId"], trace);
}

#[tokio::test]
async fn unknown_paths_and_methods_get_the_envelope() {
    let app = app().await;
    assert_error(&get(&app.router, "/nowhere").await, 404, "not_found");
    let a = send(
        &app.router,
        req("DELETE", RUNS).body(Body::empty()).unwrap(),
    )
    .await;
    assert_error(&a, 405, "bad_request");
    let a = get(&app.router, "/metrics").await;
    assert_error(&a, 404, "not_found");
}

#[tokio::test]
async fn metrics_come_from_the_hook() {
    let app = app_with(std::sync::Arc::new(taskrunner_auth::NoAuth), |c| {
        c.metrics_render = Some(std::sync::Arc::new(|| "# TYPE x counter\nx 1\n".to_owned()));
    })
    .await;
    let a = get(&app.router, "/metrics").await;
    assert_eq!(a.status, 200);
    assert!(a.header("content-type").unwrap().starts_with("text/plain"));
    assert_eq!(
        String::from_utf8(a.bytes).unwrap(),
        "# TYPE x counter\nx 1\n"
    );
}

#[tokio::test]
async fn a_follower_that_does_not_read_never_slows_the_run_and_misses_nothing() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let app = app().await;
    // Far more lines than the live broadcast holds: the follower lags and must catch up from
    // the store.
    let manifest = pack(
        "  steps:\n    - id: chatty\n      run:\n        uses: builtin:shell\n        with:\n          script: |\n            sleep 0.3\n            i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done\n",
    );
    post(
        &app.router,
        RUNS,
        &json!({"manifest": manifest, "runId": "slow-1"}),
    )
    .await;
    let response = app
        .router
        .clone()
        .oneshot(
            req("GET", &format!("{RUNS}/slow-1/logs?follow=true"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    // Nobody reads the body while the run goes on; it still finishes.
    wait_status(&app, "default", "slow-1", RunStatus::Succeeded).await;
    let bytes = tokio::time::timeout(Duration::from_secs(30), response.into_body().collect())
        .await
        .expect("the stream did not end")
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let entries: Vec<Value> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["sequence"], i as u64 + 1, "gap or duplicate at {i}");
    }
    let outputs = entries
        .iter()
        .filter(|e| e["eventType"] == "step.output")
        .filter(|e| e["message"].as_str().unwrap().starts_with("line-"))
        .count();
    // (The sandbox adds one step.output line of its own, saying how the step is confined.)
    assert_eq!(outputs, 3000);
    assert_eq!(entries.last().unwrap()["eventType"], "run.completed");
}
