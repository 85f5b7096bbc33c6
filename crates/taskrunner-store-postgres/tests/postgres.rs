//! PostgreSQL-specific behaviour: migrations under concurrent start, schema versions, several
//! replicas sharing one database (leases, fencing, wake-ups, no deadlocks), connection errors.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures::StreamExt;
use support::TestDb;
use taskrunner_store::conformance::{entries, new_run, next};
use taskrunner_store::{BlobSource, Release, Store, StoreError, Transition};
use taskrunner_store_postgres::{PostgresConfig, PostgresStore, SCHEMA_VERSION};

const T: &str = "acme";
const TTL: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_at_once_migrate_exactly_once() {
    if !support::available().await {
        return;
    }
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut starts = Vec::new();
    for _ in 0..6 {
        let config = PostgresConfig::new(db.url.clone(), dir.path());
        starts.push(tokio::spawn(PostgresStore::connect(config)));
    }
    let mut stores = Vec::new();
    for s in starts {
        stores.push(s.await.unwrap().expect("every replica starts"));
    }
    for s in &stores {
        assert_eq!(s.schema_version().await.unwrap(), SCHEMA_VERSION);
    }
    let rows = db
        .connect()
        .await
        .query(
            "SELECT version FROM taskrunner_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let want: Vec<i32> = (1..=SCHEMA_VERSION as i32).collect();
    assert_eq!(versions, want, "each migration recorded once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_newer_than_the_code_is_refused() {
    if !support::available().await {
        return;
    }
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    drop(db.store(dir.path()).await);
    db.connect()
        .await
        .execute(
            "INSERT INTO taskrunner_schema_migrations (version, name) VALUES ($1, 'future')",
            &[&(SCHEMA_VERSION as i32 + 1)],
        )
        .await
        .unwrap();
    let err = PostgresStore::connect(PostgresConfig::new(db.url.clone(), dir.path()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Backend(m) if m.contains("newer than this build")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_malformed_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = PostgresStore::connect(PostgresConfig::new(
        "postgres://postgres@127.0.0.1:1/nope?connect_timeout=2",
        dir.path(),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::Backend(m) if m.contains("cannot connect")),
        "{err:?}"
    );
    let err = PostgresStore::connect(PostgresConfig::new("postgres://[::1", dir.path()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
}

/// Two replicas on one database and one artifact directory behave like one store: a run
/// created by one is claimable by the other, a stalled holder is fenced off, and wake-ups and
/// blobs cross replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_runs_leases_wakeups_and_blobs() {
    if !support::available().await {
        return;
    }
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Store::new(db.store(dir.path()).await);
    let b = Store::new(db.store(dir.path()).await);
    let (la, lb) = (a.leases.clone().unwrap(), b.leases.clone().unwrap());

    // B hears A's creations (the listener may need a moment to connect).
    let mut wake_b = lb.wakeups();
    let mut created = 0;
    loop {
        a.runs
            .create_run(new_run(T, &format!("r{created}"), 1))
            .await
            .unwrap();
        created += 1;
        if let Ok(Some(w)) = tokio::time::timeout(Duration::from_millis(500), wake_b.next()).await {
            assert_eq!(w.tenant, T);
            break;
        }
        assert!(created < 20, "replica B never heard of A's runs");
    }

    // A claims every run with a short lease and stalls; B takes them over.
    let held_a = la
        .claim("replica-a", 100, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(held_a.len(), created);
    assert!(lb.claim("replica-b", 100, TTL).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held_b = lb.claim("replica-b", 100, TTL).await.unwrap();
    assert_eq!(held_b.len(), created, "expired leases are taken over");
    let old = &held_a[0];
    let t = next(&a, &old.tenant, &old.run_id, 1, 1).await;
    assert!(matches!(
        la.commit_fenced(old, t).await,
        Err(StoreError::StaleFencingToken { .. })
    ));
    assert!(la.renew("replica-a", TTL).await.unwrap().is_empty());
    let new = held_b.iter().find(|l| l.run_id == old.run_id).unwrap();
    let t = next(&b, &new.tenant, &new.run_id, 1, 1).await;
    lb.commit_fenced(new, t).await.unwrap();

    // A blob stored by one replica is read by the other.
    let blob = a
        .artifacts
        .put_file(T, "r0", "report", BlobSource::Bytes(b"shared".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        b.artifacts.open_blob(&blob.stored_path).await.unwrap(),
        b"shared"
    );

    // A hand-off by B wakes A.
    let mut wake_a = la.wakeups();
    tokio::time::sleep(Duration::from_millis(200)).await;
    lb.release(new, Release::Handoff).await.unwrap();
    let w = tokio::time::timeout(Duration::from_secs(10), wake_a.next())
        .await
        .expect("a wake-up")
        .expect("stream open");
    assert_eq!(w.run_id, new.run_id);
    let again = la.claim("replica-a", 100, TTL).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].fencing_token > new.fencing_token);
}

/// Two replicas group-committing to the same runs in opposite orders never deadlock: every
/// transition is applied exactly once (conflicts retried), none fails with a backend error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_committing_to_the_same_runs_do_not_deadlock() {
    if !support::available().await {
        return;
    }
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Store::new(db.store(dir.path()).await);
    let b = Store::new(db.store(dir.path()).await);
    let ids: Vec<String> = (0..6).map(|i| format!("x{i}")).collect();
    for id in &ids {
        a.runs.create_run(new_run(T, id, 1)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for (n, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        let mut order = ids.clone();
        if n % 2 == 1 {
            order.reverse();
        }
        tasks.push(tokio::spawn(async move {
            let mut applied = 0;
            for _ in 0..15 {
                let mut batch: Vec<Transition> = Vec::new();
                for id in &order {
                    batch.push(next(&store, T, id, 1, 1).await);
                }
                for r in store.runs.commit_many(batch).await.expect("batch") {
                    match r {
                        Ok(_) => applied += 1,
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            }
            applied
        }));
    }
    let mut applied = 0;
    for t in tasks {
        applied += t.await.unwrap();
    }
    let mut total = 0;
    for id in &ids {
        let run = a.runs.get_run(T, id).await.unwrap().unwrap();
        let journal = b.runs.load_journal(T, id, 0).await.unwrap();
        assert_eq!(journal.len() as u64, run.journal_len);
        total += run.journal_len - 1;
    }
    assert_eq!(
        total, applied,
        "every acknowledged transition is stored once"
    );
    assert!(applied > 0);
}

/// A commit whose run another replica deleted underneath (or never had) is `NotFound`, and a
/// stale chain is refused even when it would fit the length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_chain_is_refused_across_replicas() {
    if !support::available().await {
        return;
    }
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Store::new(db.store(dir.path()).await);
    let b = Store::new(db.store(dir.path()).await);
    a.runs.create_run(new_run(T, "r", 1)).await.unwrap();
    let from_a = next(&a, T, "r", 1, 0).await;
    let mut from_b = next(&b, T, "r", 1, 0).await;
    from_b.journal = entries(1, "forged-head", 1);
    assert!(matches!(
        b.runs.commit(from_b).await,
        Err(StoreError::Invalid(_))
    ));
    a.runs.commit(from_a).await.unwrap();
    assert_eq!(
        b.runs.get_run(T, "r").await.unwrap().unwrap().journal_len,
        2
    );
}
