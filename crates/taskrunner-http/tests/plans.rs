//! The plan behind a run's hash and the semantic plan diff over HTTP: `GET …/plan` (the exact
//! bytes of `planHash`), `GET …/plan-diff` (baseline or `?against=`), the `planDiff` member of
//! a decision's 409, tenancy and scopes, and no secret value in any of their answers.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use common::*;
use serde_json::{Value, json};
use taskrunner_auth::{Authenticator, NoAuth};
use taskrunner_exec::ExecutorRegistry;
use taskrunner_http::{HttpConfig, router};
use taskrunner_runtime::{RunStatus, Runtime, RuntimeConfig, StaticSecrets, SystemClock};
use taskrunner_store::{MemoryStore, Store};

const RUNS: &str = "/v1/task-runner/runs";
const SECRET: &str = "s3cr3t-value-that-must-never-leak-0123";

struct Env {
    router: axum::Router,
    runtime: Runtime,
    _dir: tempfile::TempDir,
}

async fn env(auth: Arc<dyn Authenticator>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(
        Store::new(MemoryStore::new()),
        ExecutorRegistry::with_builtins(),
        Arc::new(SystemClock),
        Arc::new(StaticSecrets::new().with("token", SECRET)),
        RuntimeConfig::new(dir.path().join("ws")),
    )
    .await
    .unwrap();
    Env {
        router: router(runtime.clone(), HttpConfig::new(auth)),
        runtime,
        _dir: dir,
    }
}

/// A pack with a secret in a step parameter and an approval gate; `message` varies the plan.
fn release(message: &str) -> String {
    format!(
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {{name: release, version: 1.0.0}}\nspec:\n  secrets:\n    - name: token\n  approvals:\n    - id: review\n  steps:\n    - id: build\n      run: {{uses: builtin:echo, with: {{message: \"{message}\", auth: \"Bearer {{{{ secrets.token }}}}\"}}}}\n    - id: gate\n      gate:\n        approval: {{id: review}}\n    - id: deploy\n      run: {{uses: builtin:echo, with: {{message: deployed}}}}\n"
    )
}

async fn wait_status(env: &Env, tenant: &str, run_id: &str, want: RunStatus) {
    for _ in 0..200 {
        let view = env.runtime.wait_settled(tenant, run_id).await.unwrap();
        if view.status == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("run {run_id} never became {want:?}");
}

/// Creates a run and leaves it at its gate; returns its plan hash.
async fn create(env: &Env, run_id: &str, message: &str) -> String {
    let a = post(
        &env.router,
        RUNS,
        &json!({"manifest": release(message), "runId": run_id}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.bytes));
    wait_status(env, "default", run_id, RunStatus::AwaitingApproval).await;
    a.json()["planHash"].as_str().unwrap().to_owned()
}

async fn decide(env: &Env, run_id: &str, decision: &str, hash: &str) -> Answer {
    post(
        &env.router,
        &format!("{RUNS}/{run_id}/approvals/review"),
        &json!({"decision": decision, "planHash": hash, "summary": "ok"}),
    )
    .await
}

/// Every answer body is kept to check that no secret value appears in any of them.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn keep(&mut self, a: &Answer) {
        self.0.push(String::from_utf8_lossy(&a.bytes).into_owned());
    }
    fn assert_no_secret(&self) {
        assert!(self.0.len() >= 5);
        for body in &self.0 {
            assert!(!body.contains(SECRET), "a secret value leaked: {body}");
        }
    }
}

#[tokio::test]
async fn the_plan_is_the_bytes_of_the_hash_with_secrets_by_name() {
    let env = env(Arc::new(NoAuth)).await;
    let hash = create(&env, "p-1", "v1").await;
    let a = get(&env.router, &format!("{RUNS}/p-1/plan")).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.bytes));
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(a.header("etag"), Some(format!("\"{hash}\"").as_str()));
    // Anyone can recompute the hash from the body.
    assert_eq!(taskrunner_plan::hash_bytes(&a.bytes), hash);
    let text = String::from_utf8(a.bytes.clone()).unwrap();
    let plan = taskrunner_plan::Plan::from_canonical_json(&text, Some(&hash)).unwrap();
    assert_eq!(
        plan.canonical_json(),
        text,
        "the body is the canonical form itself"
    );
    assert!(text.contains("secrets.token"), "secrets appear by name");
    assert!(!text.contains(SECRET));
    assert_eq!(a.json()["schema"], "taskrunner.plan/v1");

    assert_error(
        &get(&env.router, &format!("{RUNS}/nope/plan")).await,
        404,
        "not_found",
    );
    assert_error(
        &get(&env.router, &format!("{RUNS}/bad%20id/plan")).await,
        400,
        "bad_request",
    );
}

#[tokio::test]
async fn plan_reads_follow_tenancy_and_scopes() {
    let env = env(Arc::new(TestAuth)).await;
    let token = |t: &str| format!("Bearer {t}");
    let created = send(
        &env.router,
        req("POST", RUNS)
            .header("content-type", "application/json")
            .header("authorization", token("op;taskrunner.operator;acme"))
            .body(Body::from(
                json!({"manifest": release("v1"), "runId": "t-1"}).to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.bytes)
    );
    let read = |path: &str, who: &str| {
        req("GET", path)
            .header("authorization", token(who))
            .body(Body::empty())
            .unwrap()
    };
    for path in [
        format!("{RUNS}/t-1/plan"),
        format!("{RUNS}/t-1/plan-diff?against=t-1"),
    ] {
        let ok = send(&env.router, read(&path, "v;taskrunner.viewer;acme")).await;
        assert_eq!(
            ok.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&ok.bytes)
        );
        // Another tenant does not see the run at all.
        let other = send(&env.router, read(&path, "v;taskrunner.viewer;other")).await;
        assert_error(&other, 404, "not_found");
        // Without a read scope: 403; without a token: 401.
        let no_scope = send(&env.router, read(&path, "v;unrelated.scope;acme")).await;
        assert_error(&no_scope, 403, "forbidden");
        let anonymous = get(&env.router, &path).await;
        assert_error(&anonymous, 401, "unauthorized");
    }
}

#[tokio::test]
async fn plan_diff_against_the_baseline_and_a_named_run() {
    let env = env(Arc::new(NoAuth)).await;
    let mut seen = Seen::default();

    // r-1: approved and succeeded: the baseline of later runs.
    let h1 = create(&env, "r-1", "v1").await;
    seen.keep(&decide(&env, "r-1", "approved", &h1).await);
    wait_status(&env, "default", "r-1", RunStatus::Succeeded).await;
    // r-1 itself has no baseline: 404.
    let a = get(&env.router, &format!("{RUNS}/r-1/plan-diff")).await;
    assert_error(&a, 404, "not_found");
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("baseline")
    );
    seen.keep(&a);

    // r-2: rejected (failed): never a baseline.
    let h2 = create(&env, "r-2", "v2").await;
    seen.keep(&decide(&env, "r-2", "rejected", &h2).await);
    wait_status(&env, "default", "r-2", RunStatus::Failed).await;

    // r-3: pending approval, one parameter changed since r-1.
    let h3 = create(&env, "r-3", "v3").await;
    let a = get(&env.router, &format!("{RUNS}/r-3/plan-diff")).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.bytes));
    seen.keep(&a);
    let body = a.json();
    assert_eq!(body["runId"], "r-3");
    assert_eq!(body["planHash"], h3);
    assert_eq!(
        body["baseline"],
        json!({"runId": "r-1", "planHash": h1, "selectedBy": "baseline", "status": "Succeeded"})
    );
    assert_eq!(body["diff"]["schema"], "taskrunner.plan-diff/v1");
    assert_eq!(body["diff"]["old"]["planHash"], h1);
    assert_eq!(body["diff"]["new"]["planHash"], h3);
    assert_eq!(
        body["text"], "~ step build with.message: \"v1\" → \"v3\"\n",
        "one changed parameter is one line"
    );
    assert_served_schema("PlanDiffResponse", &body);

    // ?against= names the other side; the same plan is "no change".
    let a = get(&env.router, &format!("{RUNS}/r-3/plan-diff?against=r-2")).await;
    assert_eq!(a.status, 200);
    seen.keep(&a);
    assert_eq!(a.json()["baseline"]["runId"], "r-2");
    assert_eq!(a.json()["baseline"]["selectedBy"], "against");
    assert_eq!(
        a.json()["text"],
        "~ step build with.message: \"v2\" → \"v3\"\n"
    );
    let a = get(&env.router, &format!("{RUNS}/r-3/plan-diff?against=r-3")).await;
    assert_eq!(a.json()["text"], "no change\n");
    assert_eq!(a.json()["diff"]["identical"], true);
    seen.keep(&a);
    assert_error(
        &get(&env.router, &format!("{RUNS}/r-3/plan-diff?against=nope")).await,
        404,
        "not_found",
    );
    assert_error(
        &get(&env.router, &format!("{RUNS}/r-3/plan-diff?against=a%20b")).await,
        400,
        "bad_request",
    );
    for id in ["r-1", "r-3"] {
        seen.keep(&get(&env.router, &format!("{RUNS}/{id}/plan")).await);
    }
    seen.assert_no_secret();
}

#[tokio::test]
async fn a_stale_hash_409_carries_the_diff_when_the_sent_plan_is_known() {
    let env = env(Arc::new(NoAuth)).await;
    let mut seen = Seen::default();
    let old = create(&env, "s-1", "v1").await;
    let current = create(&env, "s-2", "v2").await;

    // The approver saw s-1's plan (a known hash of this tenant): the 409 says what changed.
    let a = decide(&env, "s-2", "approved", &old).await;
    assert_error(&a, 409, "plan_hash_mismatch");
    seen.keep(&a);
    let body = a.json();
    let diff = &body["planDiff"];
    assert_eq!(diff["available"], true, "{body}");
    assert_eq!(diff["sentPlanHash"], old);
    assert_eq!(diff["currentPlanHash"], current);
    assert_eq!(diff["sentPlanRunId"], "s-1");
    assert_eq!(diff["diff"]["old"]["planHash"], old);
    assert_eq!(diff["text"], "~ step build with.message: \"v1\" → \"v2\"\n");
    assert_served_schema("ErrorEnvelope", &body);

    // A hash no run of the tenant has: the 409 says the diff is unknown, and why.
    let unknown = format!("sha256:{}", "0".repeat(64));
    let a = decide(&env, "s-2", "approved", &unknown).await;
    assert_error(&a, 409, "plan_hash_mismatch");
    seen.keep(&a);
    let diff = &a.json()["planDiff"];
    assert_eq!(diff["available"], false);
    assert!(
        diff["reason"]
            .as_str()
            .unwrap()
            .contains("no run of this tenant")
    );
    assert!(diff.get("diff").is_none());

    // The right hash still decides.
    let a = decide(&env, "s-2", "approved", &current).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.bytes));
    seen.keep(&a);
    seen.keep(&get(&env.router, &format!("{RUNS}/s-2/plan-diff?against=s-1")).await);
    let value: Value = seen
        .0
        .last()
        .map(|b| serde_json::from_str(b).unwrap())
        .unwrap();
    assert!(value["text"].as_str().unwrap().contains("v1"));
    seen.keep(&get(&env.router, &format!("{RUNS}/s-1/plan")).await);
    seen.assert_no_secret();
}

/// Every golden diff validates against the documented schema `docs/plan-diff.schema.json`,
/// and a document missing a required member does not.
#[test]
fn golden_diffs_follow_the_documented_schema() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/plan-diff.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("fixtures/diff")).unwrap() {
        let path = entry.unwrap().path().join("expected.json");
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        assert_served_schema("PlanDiff", &doc);
        checked += 1;
    }
    assert!(checked >= 20);
    let broken = json!({"schema": "taskrunner.plan-diff/v1", "changes": []});
    assert!(!validator.is_valid(&broken));
}
