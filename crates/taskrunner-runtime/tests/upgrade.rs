//! Upgrades keep waiting runs waiting (issue 16, item 3): every data directory under
//! `fixtures/upgrade/<version>/`, written by a released taskrunner (see `generate.sh` there), is
//! opened by this build: migrated forward, every run read with its stored plan and hash (never
//! re-planned), every journal verified to its head, and the runs that were waiting finished —
//! the gate decided with the plan hash it had before the upgrade, the retry whose backoff fell
//! due while the old version was gone run once. A store from a newer build is refused.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use taskrunner_engine::{Decision, RunStatus, Timestamp};
use taskrunner_exec::ExecutorRegistry;
use taskrunner_runtime::{
    Clock, DecisionRequest, Runtime, RuntimeConfig, StaticSecrets, SystemClock,
};
use taskrunner_store::{ArtifactStore, RunStore, Store};
use taskrunner_store_sqlite::{DB_FILE_NAME, SqliteConfig, SqliteStore};
use taskrunner_testkit::ManualClock;

/// Every released version's data directory.
fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/upgrade");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("store").join(DB_FILE_NAME).is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no fixtures under {}", root.display());
    dirs
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

async fn verify_journal(store: &SqliteStore, run_id: &str) {
    taskrunner_runtime::verified_journal(store, "default", run_id)
        .await
        .unwrap_or_else(|e| panic!("{run_id}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_written_by_every_released_version_continue_on_this_one() {
    for fixture in fixtures() {
        let version = fixture.file_name().unwrap().to_string_lossy().into_owned();
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixture, dir.path());
        let store = SqliteStore::open(dir.path().join("store"), SqliteConfig::default()).unwrap();
        // Stored plans and hashes, as the old version wrote them.
        let mut stored = Vec::new();
        for id in ["succeeded", "failed", "cancelled", "gated", "backoff"] {
            let record = store.get_run("default", id).await.unwrap();
            let record = record.unwrap_or_else(|| panic!("{version}: run {id} missing"));
            stored.push((id, record.plan_hash, record.plan_json));
            verify_journal(&store, id).await;
        }

        // A day later: the retry's hour-long backoff is overdue.
        let clock = ManualClock::starting_at(Timestamp(SystemClock.now().millis() + 86_400_000));
        let rt = Runtime::start(
            Store::new(store.clone()),
            ExecutorRegistry::with_builtins(),
            clock.shared(),
            Arc::new(StaticSecrets::new()),
            RuntimeConfig::new(dir.path().join("workspaces")),
        )
        .await
        .unwrap();
        let status = async |id: &str| rt.get_run("default", id).await.unwrap().unwrap();
        assert_eq!(
            status("succeeded").await.status,
            RunStatus::Succeeded,
            "{version}"
        );
        assert_eq!(
            status("failed").await.status,
            RunStatus::Failed,
            "{version}"
        );
        assert_eq!(
            status("cancelled").await.status,
            RunStatus::Cancelled,
            "{version}"
        );
        let gated = status("gated").await;
        assert_eq!(gated.status, RunStatus::AwaitingApproval, "{version}");

        // The gate is decided with the plan hash it had before the upgrade.
        let (_, hash, _) = stored.iter().find(|(id, ..)| *id == "gated").unwrap();
        assert_eq!(&gated.plan_hash, hash, "{version}: the plan was re-planned");
        rt.decide(
            "default",
            "gated",
            "release",
            DecisionRequest {
                caller_scopes: None,
                decision: Decision::Approved,
                plan_hash: hash.clone(),
                actor: "alice".into(),
                summary: Some("after the upgrade".into()),
            },
        )
        .await
        .unwrap();
        let done =
            tokio::time::timeout(Duration::from_secs(30), rt.wait_settled("default", "gated"))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(done.status, RunStatus::Succeeded, "{version}: {done:#?}");

        let retried = tokio::time::timeout(
            Duration::from_secs(30),
            rt.wait_settled("default", "backoff"),
        )
        .await
        .unwrap_or_else(|_| panic!("{version}: the overdue retry never ran"))
        .unwrap();
        assert_eq!(
            retried.status,
            RunStatus::Succeeded,
            "{version}: {retried:#?}"
        );
        assert_eq!(retried.steps[0].attempts, 2, "{version}: {retried:#?}");

        // Artifacts and logs written by the old version are readable.
        let artifacts = store.list_artifacts("default", "succeeded").await.unwrap();
        let report = artifacts.iter().find(|a| a.name == "report").unwrap();
        let blob = store
            .open_blob(report.stored_path.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(blob, b"report for v1\n", "{version}");
        let logs = rt.logs("default", "succeeded", 0, 1000).await.unwrap();
        assert!(
            logs.iter().any(|l| l.message.contains("building v1")),
            "{version}: {logs:#?}"
        );
        rt.shutdown_gracefully().await;

        // Nothing was re-planned; every journal still verifies after the new version's writes.
        for (id, hash, plan_json) in &stored {
            let record = store.get_run("default", id).await.unwrap().unwrap();
            assert_eq!(&record.plan_hash, hash, "{version}: {id}");
            assert_eq!(&record.plan_json, plan_json, "{version}: {id}");
            verify_journal(&store, id).await;
        }
    }
}

#[test]
fn a_store_from_a_newer_build_is_refused_and_left_untouched() {
    let fixture = fixtures().pop().unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, dir.path());
    // Opened once by this build: migrated, and it records itself as the store's last writer.
    drop(SqliteStore::open(dir.path().join("store"), SqliteConfig::default()).unwrap());
    let db = dir.path().join("store").join(DB_FILE_NAME);
    // The schema version (SQLite's `user_version`) lives at byte 60 of the header.
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[60..64].copy_from_slice(&999_u32.to_be_bytes());
    std::fs::write(&db, &bytes).unwrap();
    let err = SqliteStore::open(dir.path().join("store"), SqliteConfig::default()).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "schema version 999, last written by taskrunner {}, is newer than this build",
            env!("CARGO_PKG_VERSION")
        )),
        "{err}"
    );
    assert!(
        std::fs::read(&db).unwrap() == bytes,
        "a refused store was modified"
    );
    let files: Vec<_> = std::fs::read_dir(dir.path().join("store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !files.iter().any(|f| f.ends_with("-wal")),
        "a refused store got a WAL: {files:?}"
    );
}
