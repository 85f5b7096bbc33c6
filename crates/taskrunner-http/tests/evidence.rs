//! `GET …/runs/{runId}/evidence` and `GET …/evidence/keys` (issue 12 item 4): 409 while the
//! run is active, 404 across tenants, 503 without a key, and evidence that verifies with the
//! served key.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use common::*;
use serde_json::json;
use taskrunner_auth::NoAuth;
use taskrunner_engine::RunStatus;
use taskrunner_evidence::{Ed25519Signer, PublicKey, verify_envelope};
use taskrunner_http::EvidenceConfig;

const RUNS: &str = "/v1/task-runner/runs";
const KEYS: &str = "/v1/task-runner/evidence/keys";

async fn wait_status(app: &App, run_id: &str, want: RunStatus) {
    for _ in 0..200 {
        let view = app.runtime.wait_settled("default", run_id).await.unwrap();
        if view.status == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("run {run_id} never became {want:?}");
}

async fn signing_app() -> App {
    app_with(Arc::new(NoAuth), |c| {
        c.evidence = Some(EvidenceConfig {
            signer: Arc::new(Ed25519Signer::from_seed([9; 32])),
            builder_id: "https://builder.example/test".into(),
        });
    })
    .await
}

#[tokio::test]
async fn evidence_of_a_finished_run_verifies_with_the_served_key() {
    let app = signing_app().await;
    let created = post(
        &app.router,
        RUNS,
        &json!({"manifest": gate_pack(), "runId": "e-1"}),
    )
    .await;
    assert_eq!(created.status, 201);
    let hash = created.json()["planHash"].as_str().unwrap().to_owned();
    wait_status(&app, "e-1", RunStatus::AwaitingApproval).await;

    // Active: 409; another tenant: 404; an unknown run: 404; a bad id: 400.
    let url = format!("{RUNS}/e-1/evidence");
    assert_error(&get(&app.router, &url).await, 409, "run_not_finished");
    let foreign = send(
        &app.router,
        req("GET", &url)
            .header("x-stellaops-tenant", "other")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_error(&foreign, 404, "not_found");
    assert_error(
        &get(&app.router, &format!("{RUNS}/nope/evidence")).await,
        404,
        "not_found",
    );
    assert_error(
        &get(&app.router, &format!("{RUNS}/bad.id/evidence")).await,
        400,
        "bad_request",
    );

    let decided = post(
        &app.router,
        &format!("{RUNS}/e-1/approvals/review"),
        &json!({"decision": "approved", "planHash": hash, "actorId": "alice"}),
    )
    .await;
    assert!(decided.status.is_success(), "{}", decided.json());
    wait_status(&app, "e-1", RunStatus::Succeeded).await;

    let keys = get(&app.router, KEYS).await;
    assert_eq!(keys.status, 200);
    assert_served_schema("EvidenceKeys", &keys.json());
    let served = &keys.json()["keys"][0];
    let key = PublicKey::from_pem(served["publicKeyPem"].as_str().unwrap()).unwrap();
    assert_eq!(served["keyId"], key.key_id());

    let answer = get(&app.router, &url).await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let body = answer.json();
    assert_served_schema("RunEvidence", &body);
    assert_eq!(body["keyId"], key.key_id());
    let provenance = verify_envelope(
        "provenance",
        body["provenance"].to_string().as_bytes(),
        &key,
    )
    .unwrap();
    assert_eq!(
        provenance["predicate"]["buildDefinition"]["externalParameters"]["planHash"],
        hash.as_str()
    );
    assert_eq!(
        provenance["predicate"]["runDetails"]["builder"]["id"],
        "https://builder.example/test"
    );
    let gates = verify_envelope("gates", body["gates"].to_string().as_bytes(), &key).unwrap();
    let gate = &gates["predicate"]["gates"][0];
    assert_eq!(gate["approvalId"], "review");
    assert_eq!(gate["decisions"][0]["actor"], "alice");
    assert_eq!(gate["decisions"][0]["planHash"], hash.as_str());
    // The Sigstore bundle carries the same envelope.
    let bundle = verify_envelope(
        "bundle",
        body["bundles"]["provenance"].to_string().as_bytes(),
        &key,
    )
    .unwrap();
    assert_eq!(bundle, provenance);
}

#[tokio::test]
async fn without_a_key_evidence_is_503_and_no_key_is_listed() {
    let app = app().await;
    post(
        &app.router,
        RUNS,
        &json!({"manifest": echo_pack(), "runId": "n-1"}),
    )
    .await;
    wait_status(&app, "n-1", RunStatus::Succeeded).await;
    assert_error(
        &get(&app.router, &format!("{RUNS}/n-1/evidence")).await,
        503,
        "evidence_not_configured",
    );
    let keys = get(&app.router, KEYS).await;
    assert_eq!(keys.status, 200);
    assert_eq!(keys.json(), json!({"keys": []}));
}
