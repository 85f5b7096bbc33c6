//! Admission (SPEC §5.1) from the plan: unknown executors are reported once per manifest step
//! at its manifest path, whatever nests them; secrets the host cannot supply are reported by
//! their place in `spec.secrets`; ids follow the store's rule 26 validators.
//!
//! Virtual time: the runtime runs on a `ManualClock` with tokio's clock paused.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use serde_json::Map;
use taskrunner_exec::ExecutorRegistry;
use taskrunner_runtime::{
    CreateRun, Runtime, RuntimeConfig, RuntimeError, StaticSecrets, check_run_id, check_tenant,
    codes,
};
use taskrunner_store::{MemoryStore, Store};
use taskrunner_testkit::ManualClock;

async fn start(dir: &std::path::Path, secrets: StaticSecrets) -> Runtime {
    Runtime::start(
        Store::new(MemoryStore::new()),
        ExecutorRegistry::with_builtins(),
        ManualClock::new().shared(),
        Arc::new(secrets),
        RuntimeConfig::new(dir.join("workspaces")),
    )
    .await
    .unwrap()
}

fn create(manifest: &str, run_id: &str) -> CreateRun {
    CreateRun {
        tenant: "default".into(),
        run_id: Some(run_id.into()),
        manifest: manifest.into(),
        inputs: Map::new(),
    }
}

/// `(code, path)` of each problem of a refused creation.
async fn problems(rt: &Runtime, manifest: &str, run_id: &str) -> Vec<(String, String)> {
    let err = rt.create_run(create(manifest, run_id)).await.unwrap_err();
    let RuntimeError::Plan(plan) = err else {
        panic!("{err:?}")
    };
    assert!(rt.get_run("default", run_id).await.unwrap().is_none());
    plan.diagnostics()
        .iter()
        .map(|d| (d.code.to_owned(), d.path.clone()))
        .collect()
}

const NESTED: &str = r#"apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: nested, version: 1.0.0}
spec:
  inputs:
    - {name: mode, type: string, default: full}
    - {name: services, type: array, default: [api, web]}
  policies:
    - {id: signed, rule: "steps.verify.outputs.signed"}
  steps:
    - id: everything
      parallel:
        steps:
          - {id: side-task, run: {uses: "x:side"}}
          - id: pick
            conditional:
              branches:
                - when: inputs.mode == 'full'
                  steps:
                    - id: per-service
                      map:
                        items: inputs.services
                        step:
                          id: retry-loop
                          loop:
                            items: {range: {start: 0, end: 3}}
                            iterator: attempt
                            steps:
                              - {id: leaf, run: {uses: "x:leaf"}}
                              - {id: known, run: {uses: "builtin:noop"}}
                              - {id: leaf-two, run: {uses: "x:leaf-two"}}
              else:
                - {id: quick, run: {uses: "x:quick"}}
    - {id: verify, run: {uses: "x:verify"}}
    - id: gate
      gate:
        policy:
          policy: signed
          failureAction: branch
          onFailure:
            - {id: fine, run: {uses: "builtin:noop"}}
            - {id: alert, run: {uses: "x:alert"}}
"#;

#[tokio::test(start_paused = true)]
async fn unknown_executors_are_reported_once_per_manifest_step_at_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start(dir.path(), StaticSecrets::new()).await;
    let found = problems(&rt, NESTED, "nested-1").await;
    let body = "spec.steps[0].parallel.steps[1].conditional.branches[0].steps[0].map.step";
    let expected: Vec<(String, String)> = [
        "spec.steps[0].parallel.steps[0].run.uses".to_owned(),
        format!("{body}.loop.steps[0].run.uses"),
        format!("{body}.loop.steps[2].run.uses"),
        // The branch not taken is still checked: its steps are in the plan, disabled.
        "spec.steps[0].parallel.steps[1].conditional.else[0].run.uses".to_owned(),
        "spec.steps[1].run.uses".to_owned(),
        "spec.steps[2].gate.policy.onFailure[1].run.uses".to_owned(),
    ]
    .into_iter()
    .map(|path| (codes::UNKNOWN_EXECUTOR.to_owned(), path))
    .collect();
    assert_eq!(found, expected);
}

#[tokio::test(start_paused = true)]
async fn secrets_the_host_cannot_supply_are_reported_by_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = StaticSecrets::new()
        .with("short", "abc")
        .with("fine", "long-enough");
    let rt = start(dir.path(), secrets).await;
    let pack = "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: s, version: 1.0.0}\nspec:\n  secrets:\n    - {name: fine}\n    - {name: optional, required: false}\n    - {name: short, required: false}\n    - {name: absent}\n  steps: [{id: a, run: {uses: builtin:noop}}]\n";
    assert_eq!(
        problems(&rt, pack, "secrets-1").await,
        [
            // Too short is refused even when optional: it could not be masked.
            (
                codes::SECRET_TOO_SHORT.to_owned(),
                "spec.secrets[2].name".to_owned()
            ),
            (
                codes::MISSING_SECRET.to_owned(),
                "spec.secrets[3].name".to_owned()
            ),
        ]
    );
    // An optional secret the host lacks does not stop a run.
    let ok = "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: s, version: 1.0.0}\nspec:\n  secrets: [{name: fine}, {name: optional, required: false}]\n  steps: [{id: a, run: {uses: builtin:noop}}]\n";
    rt.create_run(create(ok, "secrets-2")).await.unwrap();
    assert!(
        rt.missing_secrets("default", "secrets-2")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        rt.missing_secrets("default", "no-such-run").await,
        Err(RuntimeError::NotFound(_))
    ));
}

#[test]
fn ids_follow_the_store_rule_and_name_it() {
    assert!(check_tenant("acme.prod_1-a").is_ok());
    assert!(check_run_id("Run_1-a").is_ok());
    for bad in ["", "Acme", "-acme", &"a".repeat(64), "a b"] {
        let Err(RuntimeError::BadRequest(why)) = check_tenant(bad) else {
            panic!("tenant {bad:?} was accepted")
        };
        assert!(why.contains("^[a-z0-9][a-z0-9._-]{0,62}$"), "{why}");
    }
    for bad in ["", "a.b", "a/b", &"a".repeat(129)] {
        let Err(RuntimeError::BadRequest(why)) = check_run_id(bad) else {
            panic!("run id {bad:?} was accepted")
        };
        assert!(why.contains("^[a-zA-Z0-9_-]{1,128}$"), "{why}");
    }
}
