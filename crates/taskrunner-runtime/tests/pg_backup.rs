//! The PostgreSQL backup procedure of `docs/DEPLOYMENT.md` (issue 16, item 2), run for real:
//! `pg_dump -Fc` of a live replica's database, then a copy of the artifact directory, then
//! `pg_restore` into an empty database and a new replica on it. Every run is there with its
//! journal verified, artifacts are byte-identical, and a gate that waited before the backup is
//! decided after the restore with the plan hash it had.
//!
//! Needs `pg_dump`/`pg_restore` and a reachable server (skipped with a notice otherwise, except
//! under `CI=true`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "../../taskrunner-store-postgres/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Map;
use taskrunner_engine::{Decision, RunStatus};
use taskrunner_exec::ExecutorRegistry;
use taskrunner_runtime::{
    CreateRun, DecisionRequest, ReplicaConfig, Runtime, RuntimeConfig, StaticSecrets, SystemClock,
    verified_journal,
};
use taskrunner_store::{RunStore, Store};

const DONE: &str = "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: pgb-done, version: 1.0.0}\nspec:\n  steps:\n    - {id: write, run: {uses: builtin:shell, with: {script: 'mkdir -p out && printf \"report before backup\" > out/r.txt'}}}\n  outputs:\n    - {name: report, type: file, path: out/r.txt}\n";
const GATED: &str = "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: pgb-gated, version: 1.0.0}\nspec:\n  approvals: [{id: go}]\n  steps:\n    - {id: before, run: {uses: builtin:noop}}\n    - {id: gate, gate: {approval: {id: go}}}\n    - {id: after, run: {uses: builtin:echo, with: {message: shipped}}}\n";

async fn replica(store: Store, dir: &Path, owner: &str) -> Runtime {
    Runtime::start(
        store,
        ExecutorRegistry::with_builtins(),
        Arc::new(SystemClock),
        Arc::new(StaticSecrets::new()),
        RuntimeConfig::new(dir.join(format!("ws-{owner}"))).with_replica(ReplicaConfig {
            lease_ttl: Duration::from_secs(2),
            renew_every: Duration::from_millis(400),
            claim_every: Duration::from_millis(200),
            ..ReplicaConfig::new(ReplicaConfig::unique_owner(owner))
        }),
    )
    .await
    .unwrap()
}

async fn wait_status(runs: &dyn RunStore, run_id: &str, status: RunStatus) {
    for _ in 0..3000 {
        let record = runs.get_run("default", run_id).await.unwrap();
        if record.as_ref().is_some_and(|r| r.status == status.as_str()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{run_id} never reached {status:?}");
}

fn tool(name: &str, args: &[&str]) {
    let out = Command::new(name).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_and_pg_restore_with_the_artifact_directory_continue_every_run() {
    if !support::available().await {
        return;
    }
    if Command::new("pg_dump").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "pg_dump is missing and CI=true"
        );
        eprintln!("SKIPPED: pg_dump is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (artifacts, restored_artifacts) = (dir.path().join("a"), dir.path().join("b"));
    let db = support::TestDb::create().await;
    let store = Store::new(db.store(&artifacts).await);
    let rt = replica(store.clone(), dir.path(), "before").await;
    for (id, pack) in [("done", DONE), ("gated", GATED)] {
        rt.create_run(CreateRun {
            tenant: "default".into(),
            run_id: Some(id.into()),
            manifest: pack.into(),
            inputs: Map::new(),
        })
        .await
        .unwrap();
    }
    wait_status(&*store.runs, "done", RunStatus::Succeeded).await;
    wait_status(&*store.runs, "gated", RunStatus::AwaitingApproval).await;
    let hash = store
        .runs
        .get_run("default", "gated")
        .await
        .unwrap()
        .unwrap()
        .plan_hash;

    // The procedure: the database first (online, consistent), then the artifacts.
    let dump = dir.path().join("taskrunner.dump");
    tool(
        "pg_dump",
        &["-Fc", "-d", &db.url, "-f", dump.to_str().unwrap()],
    );
    copy_dir(&artifacts, &restored_artifacts);
    rt.shutdown_gracefully().await;

    let restored = support::TestDb::create().await;
    tool(
        "pg_restore",
        &["--no-owner", "-d", &restored.url, dump.to_str().unwrap()],
    );
    let store = Store::new(restored.store(&restored_artifacts).await);
    let rt = replica(store.clone(), dir.path(), "after").await;
    for id in ["done", "gated"] {
        verified_journal(&*store.runs, "default", id)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
    }
    let artifacts = store
        .artifacts
        .list_artifacts("default", "done")
        .await
        .unwrap();
    let report = artifacts.iter().find(|a| a.name == "report").unwrap();
    let bytes = store
        .artifacts
        .open_blob(report.stored_path.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(bytes, b"report before backup");

    // The gate that waited before the backup is decided after the restore, same plan hash.
    rt.decide(
        "default",
        "gated",
        "go",
        DecisionRequest {
            caller_scopes: None,
            decision: Decision::Approved,
            plan_hash: hash,
            actor: "alice".into(),
            summary: None,
        },
    )
    .await
    .unwrap();
    wait_status(&*store.runs, "gated", RunStatus::Succeeded).await;
    verified_journal(&*store.runs, "default", "gated")
        .await
        .unwrap();
    rt.shutdown_gracefully().await;
}
