//! SQLite-specific behaviour: reopening, durability of acknowledged commits, group commit,
//! migrations, and corrupt rows reported as `Corrupt`.
#![allow(clippy::unwrap_used)]

use rusqlite::Connection;
use taskrunner_store::conformance::{new_run, next};
use taskrunner_store::{
    ArtifactRecord, BlobSource, ListQuery, Snapshot, Store, StoreError, artifact, status,
};
use taskrunner_store_sqlite::{
    DB_FILE_NAME, SCHEMA_VERSION, SqliteConfig, SqliteStore, Synchronous, bench_support,
};

const T: &str = "acme";

fn open(dir: &std::path::Path) -> Store {
    Store::new(SqliteStore::open(dir, SqliteConfig::default()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_written_is_there_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let blob;
    {
        let store = open(dir.path());
        store.runs.create_run(new_run(T, "r1", 10)).await.unwrap();
        store.runs.create_run(new_run(T, "r2", 20)).await.unwrap();
        let mut t = next(&store, T, "r1", 3, 2).await;
        t.status = Some(status::RUNNING.to_owned());
        t.next_wake_at_ms = Some(Some(500));
        t.snapshot = Some(Snapshot {
            seq: 4,
            state_json: r#"{"x":1}"#.to_owned(),
        });
        store.runs.commit(t).await.unwrap();
        store
            .logs
            .append_logs(
                T,
                "r1",
                vec![taskrunner_store::conformance::log("step.output", "hi")],
            )
            .await
            .unwrap();
        blob = store
            .artifacts
            .put_file(T, "r1", "report", BlobSource::Bytes(b"content".to_vec()))
            .await
            .unwrap();
        let captured = ArtifactRecord {
            stored_path: Some(blob.stored_path.clone()),
            sha256: Some(blob.sha256.clone()),
            size_bytes: Some(blob.size_bytes),
            status: artifact::STATUS_CAPTURED.to_owned(),
            captured_at_ms: Some(99),
            ..taskrunner_store::conformance::pending_artifact("report", artifact::KIND_FILE)
        };
        store
            .artifacts
            .upsert_artifact(T, "r1", captured)
            .await
            .unwrap();
    }
    let store = open(dir.path());
    let run = store.runs.get_run(T, "r1").await.unwrap().unwrap();
    assert_eq!(run.journal_len, 4);
    assert_eq!(run.status, status::RUNNING);
    assert_eq!(run.next_wake_at_ms, Some(500));
    assert_eq!(run.snapshot.unwrap().seq, 4);
    assert_eq!(store.runs.load_journal(T, "r1", 0).await.unwrap().len(), 4);
    let logs = store.logs.logs(T, "r1", 0, 100).await.unwrap();
    assert_eq!(
        logs.iter().map(|l| l.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let arts = store.artifacts.list_artifacts(T, "r1").await.unwrap();
    assert_eq!(arts[0].status, artifact::STATUS_CAPTURED);
    assert_eq!(arts.len(), 2);
    assert_eq!(
        store.artifacts.open_blob(&blob.stored_path).await.unwrap(),
        b"content"
    );
    let page = store
        .runs
        .list_runs(
            T,
            ListQuery {
                cursor: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.runs
            .iter()
            .map(|r| r.run_id.as_str())
            .collect::<Vec<_>>(),
        vec!["r2", "r1"]
    );
    assert_eq!(store.runs.due_runs(1_000).await.unwrap().len(), 1);
    // Sequences continue after reopening.
    let t = next(&store, T, "r1", 1, 1).await;
    assert_eq!(store.runs.commit(t).await.unwrap(), vec![5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_commit_is_on_disk_without_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
    let ports = Store::new(store.clone());
    ports.runs.create_run(new_run(T, "r", 1)).await.unwrap();
    let t = next(&ports, T, "r", 1, 1).await;
    ports.runs.commit(t).await.unwrap();
    // While the store is still open, a separate connection (another process, in effect) already
    // sees the acknowledged commit: nothing lives only in memory.
    let raw = Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
    let len: i64 = raw
        .query_row(
            "SELECT journal_len FROM runs WHERE tenant = 'acme' AND run_id = 'r'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(len, 2);
    let logs: i64 = raw
        .query_row("SELECT COUNT(*) FROM logs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(logs, 2);
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_are_grouped() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
    let result = bench_support::group_commit_throughput(&store, 32, 10)
        .await
        .unwrap();
    assert_eq!(result.transitions, 320);
    let stats = store.stats();
    assert_eq!(stats.transitions, 320);
    assert_eq!(stats.failed_batches, 0);
    assert!(
        result.batches < 320,
        "32 concurrent writers should share commits: {result:?}"
    );
    assert!(stats.max_batch > 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_synchronous_mode_works() {
    let dir = tempfile::tempdir().unwrap();
    let config = SqliteConfig {
        synchronous: Synchronous::Normal,
        max_batch: 1,
        ..Default::default()
    };
    let store = Store::new(SqliteStore::open(dir.path(), config).unwrap());
    store.runs.create_run(new_run(T, "r", 1)).await.unwrap();
    let t = next(&store, T, "r", 1, 0).await;
    store.runs.commit(t).await.unwrap();
    assert_eq!(
        store
            .runs
            .get_run(T, "r")
            .await
            .unwrap()
            .unwrap()
            .journal_len,
        2
    );
}

#[test]
fn a_database_newer_than_the_code_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap());
    let raw = Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
    let version: u32 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(raw);
    let err = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Backend(m) if m.contains("newer")),
        "{err:?}"
    );
}

#[test]
fn migrations_are_idempotent_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        drop(SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap());
    }
}

/// Runs `sql` against the database behind the store's back, then expects `Corrupt` from `read`.
async fn corrupt_with(sql: &str) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.runs.create_run(new_run(T, "r", 1)).await.unwrap();
    let t = next(&store, T, "r", 2, 1).await;
    store.runs.commit(t).await.unwrap();
    let raw = Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
    raw.execute_batch(sql).unwrap();
    (dir, store)
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::Corrupt(_))),
        "expected Corrupt, got {result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_reported_not_panicked_on() {
    let (_d, s) = corrupt_with("UPDATE runs SET journal_len = -1").await;
    assert_corrupt(s.runs.get_run(T, "r").await);
    let (_d, s) = corrupt_with("UPDATE runs SET status = 'Sleeping'").await;
    assert_corrupt(s.runs.get_run(T, "r").await);
    assert_corrupt(
        s.runs
            .list_runs(
                T,
                ListQuery {
                    cursor: None,
                    limit: 5,
                },
            )
            .await,
    );
    let (_d, s) = corrupt_with("UPDATE runs SET created_at_ms = 'yesterday'").await;
    assert_corrupt(s.runs.get_run(T, "r").await);
    let (_d, s) = corrupt_with("UPDATE runs SET journal_head = NULL").await;
    assert_corrupt(s.runs.get_run(T, "r").await);
    let (_d, s) = corrupt_with("UPDATE runs SET snapshot_seq = 1").await;
    assert_corrupt(s.runs.get_run(T, "r").await);
    let (_d, s) = corrupt_with("DELETE FROM journal WHERE seq = 2").await;
    assert_corrupt(s.runs.load_journal(T, "r", 0).await);
    let (_d, s) = corrupt_with("UPDATE journal SET prev_hash = 'forged' WHERE seq = 3").await;
    assert_corrupt(s.runs.load_journal(T, "r", 0).await);
    let (_d, s) = corrupt_with("DELETE FROM journal WHERE seq = 3").await;
    assert_corrupt(s.runs.load_journal(T, "r", 0).await);
    let (_d, s) = corrupt_with("DELETE FROM logs WHERE sequence = 1").await;
    assert_corrupt(s.logs.logs(T, "r", 0, 10).await);
    let (_d, s) = corrupt_with("UPDATE logs SET metadata_json = 'x'").await;
    assert_corrupt(s.logs.logs(T, "r", 0, 10).await);
    let (_d, s) = corrupt_with("UPDATE artifacts SET kind = 'dir'").await;
    assert_corrupt(s.artifacts.list_artifacts(T, "r").await);
    let (_d, s) = corrupt_with("UPDATE artifacts SET size_bytes = -5").await;
    assert_corrupt(s.artifacts.list_artifacts(T, "r").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_blob_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.runs.create_run(new_run(T, "r", 1)).await.unwrap();
    let blob = store
        .artifacts
        .put_file(T, "r", "x", BlobSource::Bytes(b"original".to_vec()))
        .await
        .unwrap();
    let path = dir.path().join(&blob.stored_path);
    assert!(path.is_file());
    std::fs::write(&path, b"tampered").unwrap();
    assert_corrupt(store.artifacts.open_blob(&blob.stored_path).await);
    // No temp files are left behind.
    let tmp = dir.path().join("artifacts/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[test]
fn raw_baseline_runs() {
    let dir = tempfile::tempdir().unwrap();
    let elapsed = bench_support::raw_single_row_commits(dir.path(), 20, Synchronous::Full).unwrap();
    assert!(elapsed.as_nanos() > 0);
}
