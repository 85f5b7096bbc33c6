//! The adapter conformance suite: the same behavioural tests run against every adapter
//! (memory, SQLite, …), in the spirit of rustls' provider tests.
//!
//! Each case is a `pub async fn` taking a factory that builds a fresh, empty [`Store`]. The
//! [`conformance_tests!`](crate::conformance_tests) macro expands to one `#[tokio::test]` per
//! case; the caller needs `tokio` (with `macros` and `rt-multi-thread`) as a dev-dependency.
//!
//! The cases panic (`assert!`/`expect`) on failure: this module is test code.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::lease::{Lease, LeaseStore, Release, Wakeup};
use crate::ports::Store;
use crate::records::{
    ArtifactRecord, BlobSource, JournalEntry, ListQuery, LogRecord, NewLog, NewRun, Snapshot,
    Transition, artifact, status,
};
use crate::{StoreError, sha256_hex};

/// Expands to one `#[tokio::test]` per conformance case, each calling
/// `taskrunner_store::conformance::<case>(factory)`.
///
/// ```ignore
/// taskrunner_store::conformance_tests!(|| async { Store::new(MemoryStore::new()) });
/// // An adapter needing a service: each case first awaits `available()` and returns early
/// // (after the adapter printed why) when it answers false.
/// taskrunner_store::conformance_tests!(available: || async { db_reachable().await }, factory);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(available: || async { true }, $factory);
    };
    (available: $available:expr, $factory:expr) => {
        $crate::conformance_tests!(@cases $available, $factory;
            create_and_get,
            create_existing_is_run_exists,
            invalid_records_are_refused_and_nothing_is_written,
            tenant_isolation,
            list_paging_newest_first,
            list_paging_stable_under_inserts,
            commit_applies_every_field,
            commit_conflict_writes_nothing,
            commit_refuses_broken_chain,
            commit_unknown_run_is_not_found,
            log_sequences_gap_free_across_commit_and_append,
            logs_paging,
            load_journal_after_seq,
            active_due_and_queued,
            artifacts_put_dedup_list_upsert,
            commit_many_isolates_a_conflict,
            concurrent_commits_to_different_runs,
            concurrent_commits_to_one_run_exactly_one_wins,
            concurrent_appends_and_commits_keep_logs_gap_free,
            lease_claim_is_exclusive,
            lease_concurrent_claims_are_disjoint,
            lease_expired_is_taken_over_and_stale_writes_refused,
            lease_renew_extends,
            lease_expired_is_not_renewed,
            lease_claim_skips_terminal_and_parked_until_due,
            lease_claim_run_targets_one_run,
            lease_invalid_arguments_are_refused,
            lease_wakeups_on_create_handoff_and_foreign_commit
        );
    };
    (@cases $available:expr, $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                if !($available)().await {
                    return;
                }
                $crate::conformance::$case($factory).await;
            }
        )*
    };
}

const T: &str = "acme";
const PACK: &str = "deploy";

fn chain_hash(prev: &str, seq: u64, payload: &str) -> String {
    sha256_hex(format!("{prev}|{seq}|{payload}").as_bytes())
}

/// A journal entry with seq `seq` linked to `prev`.
pub fn entry(seq: u64, prev: &str) -> JournalEntry {
    let payload_json = format!(r#"{{"event":"e{seq}"}}"#);
    JournalEntry {
        seq,
        at_ms: 1_000 + seq as i64,
        hash: chain_hash(prev, seq, &payload_json),
        prev_hash: prev.to_owned(),
        payload_json,
    }
}

/// `count` entries continuing a journal of length `after` whose head is `head`.
pub fn entries(after: u64, head: &str, count: u64) -> Vec<JournalEntry> {
    let mut out = Vec::new();
    let mut prev = head.to_owned();
    for seq in after + 1..=after + count {
        let e = entry(seq, &prev);
        prev = e.hash.clone();
        out.push(e);
    }
    out
}

/// A log entry.
pub fn log(event_type: &str, message: &str) -> NewLog {
    NewLog {
        timestamp_ms: 5_000,
        level: "info".to_owned(),
        event_type: event_type.to_owned(),
        message: message.to_owned(),
        step_id: Some("build".to_owned()),
        metadata_json: r#"{"attempt":"1"}"#.to_owned(),
    }
}

/// A pending artifact declaration.
pub fn pending_artifact(name: &str, kind: &str) -> ArtifactRecord {
    ArtifactRecord {
        name: name.to_owned(),
        kind: kind.to_owned(),
        source_path: (kind == artifact::KIND_FILE).then(|| format!("out/{name}.txt")),
        stored_path: None,
        status: artifact::STATUS_PENDING.to_owned(),
        notes: None,
        captured_at_ms: None,
        expression_json: None,
        sha256: None,
        size_bytes: None,
    }
}

/// A valid new run with one journal entry, one log and two declared artifacts.
pub fn new_run(tenant: &str, run_id: &str, created_at_ms: i64) -> NewRun {
    let plan_hash = format!("sha256:{}", sha256_hex(run_id.as_bytes()));
    NewRun {
        tenant: tenant.to_owned(),
        run_id: run_id.to_owned(),
        pack_name: PACK.to_owned(),
        pack_version: "1.0.0".to_owned(),
        journal: entries(0, &plan_hash, 1),
        plan_hash,
        plan_json: r#"{"steps":[]}"#.to_owned(),
        created_at_ms,
        status: status::PENDING.to_owned(),
        host_digest: Some("host-1".to_owned()),
        logs: vec![log("run.created", "run created")],
        artifacts: vec![
            pending_artifact("report", artifact::KIND_FILE),
            pending_artifact("summary", artifact::KIND_OBJECT),
        ],
    }
}

async fn fresh<F, Fut>(factory: &F) -> Store
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    factory().await
}

/// A transition that appends `journal` entries and `logs` log lines to the run's current state.
pub async fn next(
    store: &Store,
    tenant: &str,
    run_id: &str,
    journal: u64,
    logs: usize,
) -> Transition {
    let run = store
        .runs
        .get_run(tenant, run_id)
        .await
        .expect("get_run")
        .expect("run exists");
    let head = run.journal_head.clone().unwrap_or_default();
    let mut t = Transition::new(tenant, run_id, run.journal_len, run.updated_at_ms + 1);
    t.journal = entries(run.journal_len, &head, journal);
    t.logs = (0..logs)
        .map(|i| log("step.output", &format!("line {i}")))
        .collect();
    t
}

/// Commits one journal entry + `logs` log lines, retrying on conflict; returns log sequences.
async fn commit_retrying(store: &Store, tenant: &str, run_id: &str, logs: usize) -> Vec<u64> {
    for _ in 0..10_000 {
        let t = next(store, tenant, run_id, 1, logs).await;
        match store.runs.commit(t).await {
            Ok(seqs) => return seqs,
            Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
            Err(e) => panic!("commit failed: {e}"),
        }
    }
    panic!("commit kept conflicting");
}

async fn all_logs(store: &Store, tenant: &str, run_id: &str) -> Vec<LogRecord> {
    let mut out = Vec::new();
    loop {
        let after = out.last().map_or(0, |l: &LogRecord| l.sequence);
        let page = store
            .logs
            .logs(tenant, run_id, after, 100)
            .await
            .expect("logs");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

fn assert_gap_free(logs: &[LogRecord]) {
    for (i, l) in logs.iter().enumerate() {
        assert_eq!(
            l.sequence,
            i as u64 + 1,
            "log sequences must be gap-free from 1"
        );
    }
}

/// Create, then read back every part of the run.
pub async fn create_and_get<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    let run = new_run(T, "run-1", 10_000);
    store.runs.create_run(run.clone()).await.expect("create");

    let got = store
        .runs
        .get_run(T, "run-1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.tenant, T);
    assert_eq!(got.run_id, "run-1");
    assert_eq!(got.pack_name, run.pack_name);
    assert_eq!(got.pack_version, run.pack_version);
    assert_eq!(got.plan_hash, run.plan_hash);
    assert_eq!(got.plan_json, run.plan_json);
    assert_eq!(got.created_at_ms, 10_000);
    assert_eq!(got.updated_at_ms, 10_000);
    assert_eq!(got.status, status::PENDING);
    assert_eq!(got.next_wake_at_ms, None);
    assert_eq!(got.journal_len, 1);
    assert_eq!(
        got.journal_head.as_deref(),
        Some(run.journal[0].hash.as_str())
    );
    assert_eq!(got.host_digest.as_deref(), Some("host-1"));
    assert_eq!(got.snapshot, None);

    let journal = store
        .runs
        .load_journal(T, "run-1", 0)
        .await
        .expect("journal");
    assert_eq!(journal, run.journal);
    let logs = store.logs.logs(T, "run-1", 0, 100).await.expect("logs");
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0], LogRecord::from_new(1, run.logs[0].clone()));
    let arts = store
        .artifacts
        .list_artifacts(T, "run-1")
        .await
        .expect("artifacts");
    assert_eq!(arts, run.artifacts);

    assert_eq!(store.runs.get_run(T, "run-2").await.expect("get"), None);
}

/// A second create with the same id fails with `RunExists` and changes nothing.
pub async fn create_existing_is_run_exists<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    store
        .runs
        .create_run(new_run(T, "dup", 1))
        .await
        .expect("create");
    let mut again = new_run(T, "dup", 2);
    again.pack_name = "other".to_owned();
    assert_eq!(
        store.runs.create_run(again).await,
        Err(StoreError::RunExists)
    );
    let got = store
        .runs
        .get_run(T, "dup")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.pack_name, PACK);
    assert_eq!(got.created_at_ms, 1);
    assert_eq!(
        store.logs.logs(T, "dup", 0, 100).await.expect("logs").len(),
        1
    );
    assert_eq!(
        store
            .artifacts
            .list_artifacts(T, "dup")
            .await
            .expect("artifacts")
            .len(),
        2
    );
}

/// Records breaking an invariant are refused with `Invalid` before anything is written.
pub async fn invalid_records_are_refused_and_nothing_is_written<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    type Breaker = fn(&mut NewRun);
    let breakers: Vec<(&str, Breaker)> = vec![
        ("bad tenant", |r| r.tenant = "Not Valid".to_owned()),
        ("bad run id", |r| r.run_id = "a/b".to_owned()),
        ("unknown status", |r| r.status = "Sleeping".to_owned()),
        ("empty plan hash", |r| r.plan_hash.clear()),
        ("plan not json", |r| r.plan_json = "{".to_owned()),
        ("journal starts at 2", |r| r.journal[0].seq = 2),
        ("empty hash", |r| r.journal[0].hash.clear()),
        ("empty prev hash", |r| r.journal[0].prev_hash.clear()),
        ("payload not json", |r| {
            r.journal[0].payload_json = "nope".to_owned()
        }),
        ("broken link", |r| {
            let mut e = entry(2, "not-the-head");
            e.at_ms = 1;
            r.journal.push(e);
        }),
        ("metadata not an object", |r| {
            r.logs[0].metadata_json = "[]".to_owned()
        }),
        ("empty event type", |r| r.logs[0].event_type.clear()),
        ("duplicate artifact", |r| {
            let dup = r.artifacts[0].clone();
            r.artifacts.push(dup);
        }),
        ("unknown artifact kind", |r| {
            r.artifacts[0].kind = "dir".to_owned()
        }),
        ("captured file without digest", |r| {
            r.artifacts[0].status = artifact::STATUS_CAPTURED.to_owned();
        }),
        ("sha256 not hex", |r| {
            r.artifacts[0].sha256 = Some("XYZ".to_owned())
        }),
    ];
    for (what, breaker) in breakers {
        let mut run = new_run(T, "bad", 1);
        breaker(&mut run);
        let result = store.runs.create_run(run).await;
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "{what}: expected Invalid, got {result:?}"
        );
    }
    assert_eq!(store.runs.get_run(T, "bad").await.expect("get"), None);
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
        .expect("list");
    assert!(page.runs.is_empty());

    // Transitions and logs are checked too.
    store
        .runs
        .create_run(new_run(T, "ok", 1))
        .await
        .expect("create");
    let mut t = next(&store, T, "ok", 1, 1).await;
    t.status = Some("Sleeping".to_owned());
    assert!(matches!(
        store.runs.commit(t).await,
        Err(StoreError::Invalid(_))
    ));
    let mut t = next(&store, T, "ok", 1, 0).await;
    t.snapshot = Some(Snapshot {
        seq: 5,
        state_json: "{}".to_owned(),
    });
    assert!(matches!(
        store.runs.commit(t).await,
        Err(StoreError::Invalid(_))
    ));
    let mut bad_log = log("step.output", "x");
    bad_log.metadata_json = "1".to_owned();
    assert!(matches!(
        store.logs.append_logs(T, "ok", vec![bad_log]).await,
        Err(StoreError::Invalid(_))
    ));
    let mut bad_art = pending_artifact("report", artifact::KIND_FILE);
    bad_art.status = "lost".to_owned();
    assert!(matches!(
        store.artifacts.upsert_artifact(T, "ok", bad_art).await,
        Err(StoreError::Invalid(_))
    ));
    let run = store
        .runs
        .get_run(T, "ok")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(run.journal_len, 1);
    assert_eq!(run.status, status::PENDING);
    assert_eq!(
        store.logs.logs(T, "ok", 0, 100).await.expect("logs").len(),
        1
    );
    assert_eq!(
        store
            .artifacts
            .list_artifacts(T, "ok")
            .await
            .expect("artifacts")[0]
            .status,
        artifact::STATUS_PENDING
    );
}

/// Another tenant's run is invisible: reads give `None`/`NotFound`, the id is free there.
pub async fn tenant_isolation<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    store
        .runs
        .create_run(new_run("tenant-a", "r1", 1))
        .await
        .expect("create");
    let b = "tenant-b";
    assert_eq!(store.runs.get_run(b, "r1").await.expect("get"), None);
    assert_eq!(
        store.runs.load_journal(b, "r1", 0).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        store.logs.logs(b, "r1", 0, 10).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        store
            .logs
            .append_logs(b, "r1", vec![log("step.output", "x")])
            .await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        store.artifacts.list_artifacts(b, "r1").await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        store
            .artifacts
            .upsert_artifact(b, "r1", pending_artifact("x", artifact::KIND_OBJECT))
            .await,
        Err(StoreError::NotFound)
    );
    let page = store
        .runs
        .list_runs(
            b,
            ListQuery {
                cursor: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert!(page.runs.is_empty());
    let mut t = Transition::new(b, "r1", 1, 2);
    t.status = Some(status::RUNNING.to_owned());
    assert_eq!(store.runs.commit(t).await, Err(StoreError::NotFound));
    assert_eq!(store.runs.queued_count(b, PACK).await.expect("queued"), 0);

    // The same id in another tenant is a different run.
    store
        .runs
        .create_run(new_run(b, "r1", 2))
        .await
        .expect("create in b");
    let a = store
        .runs
        .get_run("tenant-a", "r1")
        .await
        .expect("get")
        .expect("a");
    let bb = store.runs.get_run(b, "r1").await.expect("get").expect("b");
    assert_eq!((a.created_at_ms, bb.created_at_ms), (1, 2));
}

async fn collect_pages(store: &Store, tenant: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = None;
    for _ in 0..1000 {
        let page = store
            .runs
            .list_runs(tenant, ListQuery { cursor, limit })
            .await
            .expect("list");
        assert!(page.runs.len() <= limit);
        ids.extend(page.runs.iter().map(|r| r.run_id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return ids,
        }
    }
    panic!("paging does not end");
}

/// Pages are newest first by `created_at_ms` then `run_id`, and the cursor walks them all.
pub async fn list_paging_newest_first<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    let mut expected = Vec::new();
    for i in 0..23 {
        // Several runs share a creation time, so the run id breaks ties.
        let created = 1_000 + (i / 3) as i64;
        let id = format!("run-{:02}", (i * 7) % 23);
        store
            .runs
            .create_run(new_run(T, &id, created))
            .await
            .expect("create");
        expected.push((created, id));
    }
    store
        .runs
        .create_run(new_run("other", "run-99", 5_000))
        .await
        .expect("create");
    expected.sort();
    expected.reverse();
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

    for limit in [1, 4, 7, 23, 100] {
        assert_eq!(
            collect_pages(&store, T, limit).await,
            expected,
            "limit {limit}"
        );
    }
    let first = store
        .runs
        .list_runs(
            T,
            ListQuery {
                cursor: None,
                limit: 23,
            },
        )
        .await
        .expect("list");
    assert_eq!(
        first.next_cursor, None,
        "an exactly full last page has no cursor"
    );

    assert!(matches!(
        store
            .runs
            .list_runs(
                T,
                ListQuery {
                    cursor: Some("garbage".to_owned()),
                    limit: 5
                }
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store
            .runs
            .list_runs(
                T,
                ListQuery {
                    cursor: None,
                    limit: 0
                }
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
}

/// Runs inserted between pages never make an existing run repeat or go missing.
pub async fn list_paging_stable_under_inserts<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    let mut original = BTreeSet::new();
    for i in 0..20 {
        let id = format!("r{i:02}");
        store
            .runs
            .create_run(new_run(T, &id, 100 + i))
            .await
            .expect("create");
        original.insert(id);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut inserted = 0;
    loop {
        let page = store
            .runs
            .list_runs(T, ListQuery { cursor, limit: 6 })
            .await
            .expect("list");
        seen.extend(page.runs.iter().map(|r| r.run_id.clone()));
        // Insert one newer run, one older run and one with a creation time equal to a seen one.
        for created in [1_000, 0, 105] {
            let id = format!("new{inserted:02}");
            inserted += 1;
            store
                .runs
                .create_run(new_run(T, &id, created))
                .await
                .expect("insert");
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a run was listed twice: {seen:?}");
    for id in &original {
        assert!(seen.contains(id), "{id} went missing: {seen:?}");
    }
}

/// A commit appends the journal and logs and updates status, wake time, snapshot and times.
pub async fn commit_applies_every_field<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    store
        .runs
        .create_run(new_run(T, "r", 1))
        .await
        .expect("create");

    let mut t = next(&store, T, "r", 2, 3).await;
    t.status = Some(status::RUNNING.to_owned());
    t.updated_at_ms = 50;
    t.next_wake_at_ms = Some(Some(900));
    t.snapshot = Some(Snapshot {
        seq: 3,
        state_json: r#"{"s":1}"#.to_owned(),
    });
    let head = t.journal[1].hash.clone();
    let seqs = store.runs.commit(t).await.expect("commit");
    assert_eq!(seqs, vec![2, 3, 4]);
    let run = store.runs.get_run(T, "r").await.expect("get").expect("run");
    assert_eq!(run.status, status::RUNNING);
    assert_eq!(run.updated_at_ms, 50);
    assert_eq!(run.next_wake_at_ms, Some(900));
    assert_eq!(run.journal_len, 3);
    assert_eq!(run.journal_head.as_deref(), Some(head.as_str()));
    assert_eq!(
        run.snapshot,
        Some(Snapshot {
            seq: 3,
            state_json: r#"{"s":1}"#.to_owned()
        })
    );

    // `None` keeps status, wake time and snapshot.
    let t = next(&store, T, "r", 0, 0).await;
    assert_eq!(
        store.runs.commit(t).await.expect("commit"),
        Vec::<u64>::new()
    );
    let run = store.runs.get_run(T, "r").await.expect("get").expect("run");
    assert_eq!(run.status, status::RUNNING);
    assert_eq!(run.next_wake_at_ms, Some(900));
    assert_eq!(run.journal_len, 3);
    assert!(run.snapshot.is_some());

    // `Some(None)` clears the wake time.
    let mut t = next(&store, T, "r", 1, 0).await;
    t.next_wake_at_ms = Some(None);
    t.status = Some(status::SUCCEEDED.to_owned());
    store.runs.commit(t).await.expect("commit");
    let run = store.runs.get_run(T, "r").await.expect("get").expect("run");
    assert_eq!(run.next_wake_at_ms, None);
    assert_eq!(run.status, status::SUCCEEDED);
    assert_eq!(run.journal_len, 4);
    let journal = store.runs.load_journal(T, "r", 0).await.expect("journal");
    assert_eq!(journal.len(), 4);
    for pair in journal.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
}

/// A stale `expected_journal_len` gives `Conflict` and writes nothing at all.
pub async fn commit_conflict_writes_nothing<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    store
        .runs
        .create_run(new_run(T, "r", 1))
        .await
        .expect("create");
    let stale = next(&store, T, "r", 1, 2).await;
    let first = next(&store, T, "r", 1, 1).await;
    store.runs.commit(first).await.expect("commit");
    let before = store.runs.get_run(T, "r").await.expect("get");

    let mut stale = stale;
    stale.status = Some(status::FAILED.to_owned());
    stale.next_wake_at_ms = Some(Some(1));
    assert_eq!(
        store.runs.commit(stale).await,
        Err(StoreError::Conflict {
            expected: 1,
            actual: 2
        })
    );
    assert_eq!(store.runs.get_run(T, "r").await.expect("get"), before);
    assert_eq!(
        store
            .runs
            .load_journal(T, "r", 0)
            .await
            .expect("journal")
            .len(),
        2
    );
    assert_eq!(
        store.logs.logs(T, "r", 0, 100).await.expect("logs").len(),
        2
    );

    let mut ahead = next(&store, T, "r", 1, 0).await;
    ahead.expected_journal_len = 7;
    ahead.journal = entries(7, "x", 1);
    assert_eq!(
        store.runs.commit(ahead).await,
        Err(StoreError::Conflict {
            expected: 7,
            actual: 2
        })
    );
}

/// Entries that do not chain onto the stored head are refused; nothing is written.
pub async fn commit_refuses_broken_chain<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    store
        .runs
        .create_run(new_run(T, "r", 1))
        .await
        .expect("create");
    let mut t = next(&store, T, "r", 1, 1).await;
    t.journal = entries(1, "not-the-head", 1);
    assert!(matches!(
        store.runs.commit(t).await,
        Err(StoreError::Invalid(_))
    ));
    let mut t = next(&store, T, "r", 2, 1).await;
    t.journal[1].seq = 4;
    assert!(matches!(
        store.runs.commit(t).await,
        Err(StoreError::Invalid(_))
    ));
    let run = store.runs.get_run(T, "r").await.expect("get").expect("run");
    assert_eq!(run.journal_len, 1);
    assert_eq!(
        store.logs.logs(T, "r", 0, 100).await.expect("logs").len(),
        1
    );
}

/// Committing to a run that does not exist gives `NotFound`.
pub async fn commit_unknown_run_is_not_found<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    let mut t = Transition::new(T, "ghost", 0, 1);
    t.journal = entries(0, "root", 1);
    assert_eq!(store.runs.commit(t).await, Err(StoreError::NotFound));
    let results = store
        .runs
        .commit_many(vec![Transition::new(T, "ghost", 0, 1)])
        .await
        .expect("commit_many");
    assert_eq!(results, vec![Err(StoreError::NotFound)]);
}

/// Commits and `append_logs` share one gap-free per-run sequence.
pub async fn log_sequences_gap_free_across_commit_and_append<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    store
        .runs
        .create_run(new_run(T, "a", 1))
        .await
        .expect("create");
    store
        .runs
        .create_run(new_run(T, "b", 2))
        .await
        .expect("create");
    let mut expected_a = 1;
    for round in 0..5 {
        let seqs = commit_retrying(&store, T, "a", round).await;
        let want: Vec<u64> = (expected_a + 1..=expected_a + round as u64).collect();
        assert_eq!(seqs, want);
        expected_a += round as u64;
        let lines = vec![log("step.output", "o1"), log("step.output", "o2")];
        let seqs = store.logs.append_logs(T, "a", lines).await.expect("append");
        assert_eq!(seqs, vec![expected_a + 1, expected_a + 2]);
        expected_a += 2;
        // Another run's sequence is independent.
        let seqs = store
            .logs
            .append_logs(T, "b", vec![log("step.output", "b")])
            .await
            .expect("b");
        assert_eq!(seqs, vec![2 + round as u64]);
    }
    assert_eq!(
        store
            .logs
            .append_logs(T, "a", Vec::new())
            .await
            .expect("empty append"),
        Vec::<u64>::new()
    );
    let logs = all_logs(&store, T, "a").await;
    assert_eq!(logs.len() as u64, expected_a);
    assert_gap_free(&logs);
    assert_gap_free(&all_logs(&store, T, "b").await);
}

/// `logs` honours `after_sequence` and `limit`.
pub async fn logs_paging<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    store
        .runs
        .create_run(new_run(T, "r", 1))
        .await
        .expect("create");
    let lines = (0..9)
        .map(|i| log("step.output", &format!("l{i}")))
        .collect();
    store.logs.append_logs(T, "r", lines).await.expect("append");
    let page = store.logs.logs(T, "r", 3, 4).await.expect("logs");
    assert_eq!(
        page.iter().map(|l| l.sequence).collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
    assert_eq!(page[0].message, "l2");
    assert!(
        store
            .logs
            .logs(T, "r", 10, 4)
            .await
            .expect("logs")
            .is_empty()
    );
    assert!(
        store
            .logs
            .logs(T, "r", 99, 4)
            .await
            .expect("logs")
            .is_empty()
    );
    assert_eq!(
        store
            .logs
            .logs(T, "r", 0, usize::MAX)
            .await
            .expect("logs")
            .len(),
        10
    );
    assert_eq!(store.logs.logs(T, "r", 0, 0).await.expect("logs").len(), 0);
}

/// `load_journal` returns exactly the entries after the given seq.
pub async fn load_journal_after_seq<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    store
        .runs
        .create_run(new_run(T, "r", 1))
        .await
        .expect("create");
    let t = next(&store, T, "r", 5, 0).await;
    store.runs.commit(t).await.expect("commit");
    let all = store.runs.load_journal(T, "r", 0).await.expect("journal");
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    let tail = store.runs.load_journal(T, "r", 4).await.expect("journal");
    assert_eq!(tail, all[4..].to_vec());
    assert!(
        store
            .runs
            .load_journal(T, "r", 6)
            .await
            .expect("journal")
            .is_empty()
    );
    assert!(
        store
            .runs
            .load_journal(T, "r", 60)
            .await
            .expect("journal")
            .is_empty()
    );
    assert_eq!(
        store.runs.load_journal(T, "nope", 0).await,
        Err(StoreError::NotFound)
    );
}

/// Active runs, due runs and queue counts follow status and wake times.
pub async fn active_due_and_queued<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    let cases = [
        ("p1", status::PENDING, None),
        ("p2", status::PENDING, Some(300)),
        ("r1", status::RUNNING, Some(100)),
        ("w1", status::AWAITING_APPROVAL, Some(200)),
        ("s1", status::SUCCEEDED, Some(50)),
        ("f1", status::FAILED, None),
        ("c1", status::CANCELLED, None),
    ];
    for (id, st, wake) in cases {
        store
            .runs
            .create_run(new_run(T, id, 1))
            .await
            .expect("create");
        let mut t = next(&store, T, id, 1, 0).await;
        t.status = Some(st.to_owned());
        t.next_wake_at_ms = Some(wake);
        store.runs.commit(t).await.expect("commit");
    }
    let mut other = new_run("other", "x1", 1);
    other.pack_name = "other-pack".to_owned();
    store.runs.create_run(other).await.expect("create");

    let active = store.runs.active_runs().await.expect("active");
    let active: BTreeSet<(String, String)> = active.into_iter().collect();
    let want: BTreeSet<(String, String)> =
        [(T, "p1"), (T, "p2"), (T, "r1"), (T, "w1"), ("other", "x1")]
            .iter()
            .map(|(t, r)| (t.to_string(), r.to_string()))
            .collect();
    assert_eq!(active, want);

    let due = store.runs.due_runs(200).await.expect("due");
    assert_eq!(
        due,
        vec![
            (T.to_owned(), "r1".to_owned(), 100),
            (T.to_owned(), "w1".to_owned(), 200)
        ]
    );
    assert!(store.runs.due_runs(99).await.expect("due").is_empty());
    assert_eq!(store.runs.due_runs(i64::MAX).await.expect("due").len(), 3);

    assert_eq!(store.runs.queued_count(T, PACK).await.expect("queued"), 2);
    assert_eq!(
        store
            .runs
            .queued_count(T, "other-pack")
            .await
            .expect("queued"),
        0
    );
    assert_eq!(
        store
            .runs
            .queued_count("other", "other-pack")
            .await
            .expect("queued"),
        1
    );
}

/// Blobs are content-addressed and deduplicated; records keep their declared order.
pub async fn artifacts_put_dedup_list_upsert<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    store
        .runs
        .create_run(new_run(T, "r", 1))
        .await
        .expect("create");
    let bytes = b"hello artifact\n".to_vec();
    let digest = sha256_hex(&bytes);
    let a = store
        .artifacts
        .put_file(T, "r", "report", BlobSource::Bytes(bytes.clone()))
        .await
        .expect("put");
    assert_eq!(a.sha256, digest);
    assert_eq!(a.size_bytes, bytes.len() as u64);
    assert_eq!(
        a.stored_path,
        format!("artifacts/sha256/{}/{}", &digest[..2], digest)
    );

    let dir = std::env::temp_dir().join(format!(
        "tr-conf-{}-{}",
        std::process::id(),
        sha256_hex(format!("{:?}", std::time::SystemTime::now()).as_bytes())
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("report.txt");
    std::fs::write(&file, &bytes).expect("write");
    let b = store
        .artifacts
        .put_file(T, "r", "copy", BlobSource::File(file.clone()))
        .await
        .expect("put file");
    assert_eq!(b, a, "same content, same blob");
    assert!(
        store
            .artifacts
            .put_file(T, "r", "dir", BlobSource::File(dir.clone()))
            .await
            .is_err(),
        "a directory is not a file artifact"
    );
    assert!(
        store
            .artifacts
            .put_file(T, "r", "missing", BlobSource::File(dir.join("nope")))
            .await
            .is_err()
    );
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(
        store
            .artifacts
            .open_blob(&a.stored_path)
            .await
            .expect("open"),
        bytes
    );
    let empty = store
        .artifacts
        .put_file(T, "r", "empty", BlobSource::Bytes(Vec::new()))
        .await
        .expect("put empty");
    assert_eq!(empty.size_bytes, 0);
    assert!(
        store
            .artifacts
            .open_blob(&empty.stored_path)
            .await
            .expect("open")
            .is_empty()
    );
    assert!(matches!(
        store
            .artifacts
            .open_blob("artifacts/sha256/../../etc/passwd")
            .await,
        Err(StoreError::Invalid(_))
    ));
    let absent = crate::stored_path_for(&sha256_hex(b"never stored"));
    assert_eq!(
        store.artifacts.open_blob(&absent).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        store
            .artifacts
            .put_file(T, "ghost", "x", BlobSource::Bytes(vec![1]))
            .await,
        Err(StoreError::NotFound)
    );

    let captured = ArtifactRecord {
        stored_path: Some(a.stored_path.clone()),
        status: artifact::STATUS_CAPTURED.to_owned(),
        captured_at_ms: Some(77),
        sha256: Some(a.sha256.clone()),
        size_bytes: Some(a.size_bytes),
        ..pending_artifact("report", artifact::KIND_FILE)
    };
    store
        .artifacts
        .upsert_artifact(T, "r", captured.clone())
        .await
        .expect("upsert");
    let object = ArtifactRecord {
        status: artifact::STATUS_CAPTURED.to_owned(),
        expression_json: Some(r#"{"a":1}"#.to_owned()),
        ..pending_artifact("summary", artifact::KIND_OBJECT)
    };
    store
        .artifacts
        .upsert_artifact(T, "r", object.clone())
        .await
        .expect("upsert");
    let extra = ArtifactRecord {
        status: artifact::STATUS_FAILED.to_owned(),
        notes: Some("path escapes the workspace".to_owned()),
        ..pending_artifact("extra", artifact::KIND_FILE)
    };
    store
        .artifacts
        .upsert_artifact(T, "r", extra.clone())
        .await
        .expect("upsert");
    let listed = store.artifacts.list_artifacts(T, "r").await.expect("list");
    assert_eq!(listed, vec![captured, object, extra]);

    let mut wrong = pending_artifact("report", artifact::KIND_FILE);
    wrong.stored_path = Some(a.stored_path.clone());
    wrong.sha256 = Some(sha256_hex(b"other"));
    assert!(matches!(
        store.artifacts.upsert_artifact(T, "r", wrong).await,
        Err(StoreError::Invalid(_))
    ));
}

/// In a group commit, a conflicting transition fails alone; the others are applied in order.
pub async fn commit_many_isolates_a_conflict<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    for id in ["a", "b", "c"] {
        store
            .runs
            .create_run(new_run(T, id, 1))
            .await
            .expect("create");
    }
    let a1 = next(&store, T, "a", 1, 1).await;
    let mut a2 = a1.clone();
    a2.expected_journal_len = 2;
    a2.journal = entries(2, &a1.journal[0].hash, 1);
    a2.logs = vec![log("step.output", "a2")];
    let mut b_bad = next(&store, T, "b", 1, 1).await;
    b_bad.expected_journal_len = 0;
    b_bad.journal = entries(0, "root", 1);
    let mut c1 = next(&store, T, "c", 2, 2).await;
    c1.status = Some(status::RUNNING.to_owned());
    let mut invalid = next(&store, T, "c", 1, 0).await;
    invalid.status = Some("Bogus".to_owned());

    let results = store
        .runs
        .commit_many(vec![a1, b_bad, c1, a2, invalid])
        .await
        .expect("commit_many");
    assert_eq!(results.len(), 5);
    assert_eq!(results[0], Ok(vec![2]));
    assert_eq!(
        results[1],
        Err(StoreError::Conflict {
            expected: 0,
            actual: 1
        })
    );
    assert_eq!(results[2], Ok(vec![2, 3]));
    assert_eq!(results[3], Ok(vec![3]));
    assert!(matches!(results[4], Err(StoreError::Invalid(_))));

    let a = store.runs.get_run(T, "a").await.expect("get").expect("a");
    assert_eq!(a.journal_len, 3);
    let b = store.runs.get_run(T, "b").await.expect("get").expect("b");
    assert_eq!(b.journal_len, 1);
    assert_eq!(
        store.logs.logs(T, "b", 0, 100).await.expect("logs").len(),
        1
    );
    let c = store.runs.get_run(T, "c").await.expect("get").expect("c");
    assert_eq!((c.journal_len, c.status.as_str()), (3, status::RUNNING));
    assert!(
        store
            .runs
            .commit_many(Vec::new())
            .await
            .expect("empty")
            .is_empty()
    );
}

/// Many tasks committing to different runs at once: every commit lands exactly once.
pub async fn concurrent_commits_to_different_runs<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    let runs = 16;
    let per_run = 20;
    for i in 0..runs {
        store
            .runs
            .create_run(new_run(T, &format!("c{i}"), i))
            .await
            .expect("create");
    }
    let mut tasks = Vec::new();
    for i in 0..runs {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("c{i}");
            for _ in 0..per_run {
                let t = next(&store, T, &id, 1, 1).await;
                store
                    .runs
                    .commit(t)
                    .await
                    .expect("no conflict: one writer per run");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    for i in 0..runs {
        let id = format!("c{i}");
        let run = store.runs.get_run(T, &id).await.expect("get").expect("run");
        assert_eq!(run.journal_len, 1 + per_run);
        let journal = store.runs.load_journal(T, &id, 0).await.expect("journal");
        assert_eq!(journal.len() as u64, 1 + per_run);
        let logs = all_logs(&store, T, &id).await;
        assert_eq!(logs.len() as u64, 1 + per_run);
        assert_gap_free(&logs);
    }
}

/// Racing commits with the same expected length: exactly one succeeds, the rest conflict.
pub async fn concurrent_commits_to_one_run_exactly_one_wins<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    store
        .runs
        .create_run(new_run(T, "hot", 1))
        .await
        .expect("create");
    let base = next(&store, T, "hot", 1, 1).await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = store.clone();
        let mut t = base.clone();
        t.journal[0].payload_json = format!(r#"{{"writer":{i}}}"#);
        tasks.push(tokio::spawn(async move { store.runs.commit(t).await }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict {
                expected: 1,
                actual: 2,
            }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins, 1);
    let run = store
        .runs
        .get_run(T, "hot")
        .await
        .expect("get")
        .expect("run");
    assert_eq!(run.journal_len, 2);
    assert_eq!(all_logs(&store, T, "hot").await.len(), 2);
}

/// Concurrent appends and commits on one run: sequences stay unique and gap-free.
pub async fn concurrent_appends_and_commits_keep_logs_gap_free<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    store
        .runs
        .create_run(new_run(T, "mix", 1))
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for _ in 0..10 {
                if i % 2 == 0 {
                    let lines = vec![log("step.output", "x"), log("step.output", "y")];
                    seqs.extend(
                        store
                            .logs
                            .append_logs(T, "mix", lines)
                            .await
                            .expect("append"),
                    );
                } else {
                    seqs.extend(commit_retrying(&store, T, "mix", 2).await);
                }
            }
            seqs
        }));
    }
    let mut all = vec![1];
    for task in tasks {
        let seqs = task.await.expect("task");
        for pair in seqs.windows(2) {
            assert!(pair[0] < pair[1], "a task's sequences increase");
        }
        all.extend(seqs);
    }
    all.sort_unstable();
    let want: Vec<u64> = (1..=161).collect();
    assert_eq!(all, want, "every sequence assigned once, none skipped");
    let logs = all_logs(&store, T, "mix").await;
    assert_eq!(logs.len(), 161);
    assert_gap_free(&logs);
}

fn leases(store: &Store) -> Arc<dyn LeaseStore> {
    store
        .leases
        .clone()
        .expect("the adapter bundles a LeaseStore (Store::new)")
}

const TTL: Duration = Duration::from_secs(10);

fn keys(leases: &[Lease]) -> BTreeSet<(String, String)> {
    leases
        .iter()
        .map(|l| (l.tenant.clone(), l.run_id.clone()))
        .collect()
}

fn key_set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(t, r)| (t.to_string(), r.to_string()))
        .collect()
}

/// A claimed run belongs to one owner while its lease is live; the claim respects `limit`.
pub async fn lease_claim_is_exclusive<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    let leases = leases(&store);
    for id in ["a", "b", "c"] {
        store
            .runs
            .create_run(new_run(T, id, 1))
            .await
            .expect("create");
    }
    store
        .runs
        .create_run(new_run("other", "d", 1))
        .await
        .expect("create");
    let first = leases.claim("replica-1", 3, TTL).await.expect("claim");
    assert_eq!(first.len(), 3, "limit is honoured");
    for l in &first {
        assert_eq!(l.owner, "replica-1");
        assert!(l.fencing_token >= 1);
    }
    let second = leases.claim("replica-2", 10, TTL).await.expect("claim");
    assert_eq!(second.len(), 1, "only the unclaimed run is left");
    assert!(keys(&first).is_disjoint(&keys(&second)));
    let mut all = keys(&first);
    all.extend(keys(&second));
    assert_eq!(
        all,
        key_set(&[(T, "a"), (T, "b"), (T, "c"), ("other", "d")])
    );
    assert!(
        leases
            .claim("replica-1", 10, TTL)
            .await
            .expect("claim")
            .is_empty(),
        "every run is held"
    );
    assert!(
        leases
            .claim("replica-3", 0, TTL)
            .await
            .expect("claim")
            .is_empty()
    );
    // A holder's fenced commit goes through and does not disturb the lease.
    let held = first[0].clone();
    let t = next(&store, &held.tenant, &held.run_id, 1, 1).await;
    assert_eq!(
        leases.commit_fenced(&held, t).await.expect("fenced commit"),
        vec![2]
    );
    // Optimistic concurrency still applies to fenced commits.
    let mut stale = next(&store, &held.tenant, &held.run_id, 1, 0).await;
    stale.expected_journal_len = 1;
    stale.journal = entries(1, "x", 1);
    assert_eq!(
        leases.commit_fenced(&held, stale).await,
        Err(StoreError::Conflict {
            expected: 1,
            actual: 2
        })
    );
    // The other owner cannot write with a lease it does not hold.
    let forged = Lease {
        owner: "replica-2".to_owned(),
        ..held.clone()
    };
    let t = next(&store, &held.tenant, &held.run_id, 1, 0).await;
    assert!(matches!(
        leases.commit_fenced(&forged, t).await,
        Err(StoreError::StaleFencingToken { .. })
    ));
    // A lease presented with another run's transition is a caller bug.
    let other = first[1].clone();
    let t = next(&store, &other.tenant, &other.run_id, 1, 0).await;
    assert!(matches!(
        leases.commit_fenced(&held, t).await,
        Err(StoreError::Invalid(_))
    ));
}

/// Owners claiming at the same time never get the same run.
pub async fn lease_concurrent_claims_are_disjoint<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    let runs = 40;
    for i in 0..runs {
        store
            .runs
            .create_run(new_run(T, &format!("r{i:02}"), i))
            .await
            .expect("create");
    }
    let mut tasks = Vec::new();
    for owner in 0..6 {
        let leases = leases(&store);
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..10 {
                got.extend(
                    leases
                        .claim(&format!("replica-{owner}"), 3, TTL)
                        .await
                        .expect("claim"),
                );
            }
            got
        }));
    }
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for task in tasks {
        for l in task.await.expect("task") {
            total += 1;
            assert!(
                seen.insert((l.tenant, l.run_id)),
                "a run was claimed twice while its lease was live"
            );
        }
    }
    assert_eq!(total, runs as usize, "every run claimed exactly once");
}

/// An expired lease is taken over with a greater token; the old holder's writes are refused
/// and write nothing; its renew no longer returns the run.
pub async fn lease_expired_is_taken_over_and_stale_writes_refused<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    let leases = leases(&store);
    store
        .runs
        .create_run(new_run(T, "r", 1))
        .await
        .expect("create");
    let old = leases
        .claim("replica-1", 1, Duration::from_millis(100))
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    // A stalled holder: its lease runs out.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new = leases
        .claim("replica-2", 1, TTL)
        .await
        .expect("claim")
        .pop()
        .expect("an expired lease is taken over");
    assert_eq!((new.tenant.as_str(), new.run_id.as_str()), (T, "r"));
    assert!(new.fencing_token > old.fencing_token);

    let before = store.runs.get_run(T, "r").await.expect("get");
    let mut t = next(&store, T, "r", 1, 1).await;
    t.status = Some(status::FAILED.to_owned());
    assert_eq!(
        leases.commit_fenced(&old, t).await,
        Err(StoreError::StaleFencingToken {
            presented: old.fencing_token,
            current: new.fencing_token
        })
    );
    assert!(matches!(
        leases
            .append_logs_fenced(&old, vec![log("step.output", "late")])
            .await,
        Err(StoreError::StaleFencingToken { .. })
    ));
    let mut art = pending_artifact("report", artifact::KIND_FILE);
    art.notes = Some("late".to_owned());
    assert!(matches!(
        leases.upsert_artifact_fenced(&old, art).await,
        Err(StoreError::StaleFencingToken { .. })
    ));
    assert!(matches!(
        leases.release(&old, Release::Handoff).await,
        Err(StoreError::StaleFencingToken { .. })
    ));
    assert_eq!(store.runs.get_run(T, "r").await.expect("get"), before);
    assert_eq!(
        store.logs.logs(T, "r", 0, 100).await.expect("logs").len(),
        1,
        "the refused writes left no log"
    );
    assert_eq!(
        store
            .artifacts
            .list_artifacts(T, "r")
            .await
            .expect("artifacts")[0]
            .notes,
        None
    );
    assert!(
        leases
            .renew("replica-1", TTL)
            .await
            .expect("renew")
            .is_empty(),
        "the old holder learns it lost the run"
    );

    // The new holder writes normally.
    let t = next(&store, T, "r", 1, 0).await;
    leases.commit_fenced(&new, t).await.expect("new holder");
    assert_eq!(
        leases
            .append_logs_fenced(&new, vec![log("step.output", "x")])
            .await
            .expect("logs"),
        vec![2]
    );
    leases
        .upsert_artifact_fenced(&new, pending_artifact("extra", artifact::KIND_OBJECT))
        .await
        .expect("upsert");
    leases
        .release(&new, Release::Handoff)
        .await
        .expect("release");
    // After its release, the new holder's lease is stale too.
    let t = next(&store, T, "r", 1, 0).await;
    assert!(matches!(
        leases.commit_fenced(&new, t).await,
        Err(StoreError::StaleFencingToken { .. })
    ));
    let again = leases
        .claim("replica-1", 5, TTL)
        .await
        .expect("claim")
        .pop()
        .expect("a handed-off run is claimable at once");
    assert!(again.fencing_token > new.fencing_token);
}

/// Renewing extends a lease past its first expiry: nobody can take the run meanwhile.
pub async fn lease_renew_extends<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    let leases = leases(&store);
    for id in ["a", "b"] {
        store
            .runs
            .create_run(new_run(T, id, 1))
            .await
            .expect("create");
    }
    let held = leases
        .claim("replica-1", 2, Duration::from_millis(600))
        .await
        .expect("claim");
    assert_eq!(held.len(), 2);
    let renewed = leases.renew("replica-1", TTL).await.expect("renew");
    assert_eq!(keys(&renewed), keys(&held));
    for r in &renewed {
        let before = held
            .iter()
            .find(|h| h.run_id == r.run_id)
            .expect("same runs");
        assert_eq!(
            r.fencing_token, before.fencing_token,
            "renew keeps the token"
        );
        assert!(r.expires_at_ms > before.expires_at_ms, "renew extends");
    }
    assert!(
        leases
            .renew("replica-2", TTL)
            .await
            .expect("renew")
            .is_empty(),
        "renew returns only the owner's leases"
    );
    // Past the first expiry, the renewed leases still hold.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        leases
            .claim("replica-2", 10, TTL)
            .await
            .expect("claim")
            .is_empty()
    );
    let t = next(&store, T, "a", 1, 0).await;
    let a = renewed.iter().find(|l| l.run_id == "a").expect("a");
    leases.commit_fenced(a, t).await.expect("still the holder");
}

/// An expired lease is not renewed, even while nobody took it over (renewing would revive a
/// lease its holder must already have stopped acting under): renew leaves it out, another
/// owner can claim it, and its old holder re-claiming it by name gets a new token.
pub async fn lease_expired_is_not_renewed<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    let leases = leases(&store);
    for id in ["live", "mine", "theirs"] {
        store
            .runs
            .create_run(new_run(T, id, 1))
            .await
            .expect("create");
    }
    let short = Duration::from_millis(100);
    let mut expiring = Vec::new();
    for id in ["mine", "theirs"] {
        expiring.push(
            leases
                .claim_run("replica-1", T, id, short)
                .await
                .expect("claim_run")
                .expect("free run"),
        );
    }
    let live = leases
        .claim_run("replica-1", T, "live", TTL)
        .await
        .expect("claim_run")
        .expect("free run");
    // The holder stalls past the short leases; nobody claims them meanwhile.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let renewed = leases.renew("replica-1", TTL).await.expect("renew");
    assert_eq!(
        keys(&renewed),
        key_set(&[(T, "live")]),
        "only the live lease is renewed"
    );
    assert_eq!(renewed[0].fencing_token, live.fencing_token);
    // Its old holder claims one back by name: a new token, not a revival.
    let mine_again = leases
        .claim_run("replica-1", T, "mine", TTL)
        .await
        .expect("claim_run")
        .expect("expired, claimable by its old holder");
    assert!(mine_again.fencing_token > expiring[0].fencing_token);
    // The other one is still expired after the renewal: another owner takes it over.
    let taken = leases.claim("replica-2", 10, TTL).await.expect("claim");
    assert_eq!(keys(&taken), key_set(&[(T, "theirs")]));
    assert!(taken[0].fencing_token > expiring[1].fencing_token);
    let t = next(&store, T, "mine", 1, 0).await;
    assert!(
        matches!(
            leases.commit_fenced(&expiring[0], t).await,
            Err(StoreError::StaleFencingToken { .. })
        ),
        "the expired lease's token no longer fences"
    );
    assert!(
        !keys(&leases.renew("replica-1", TTL).await.expect("renew"))
            .contains(&(T.to_owned(), "theirs".to_owned())),
        "a lease taken over is not renewed"
    );
}

/// Terminal runs are never claimed; a parked run is claimable only once due, or once an
/// unfenced commit touches it.
pub async fn lease_claim_skips_terminal_and_parked_until_due<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    let leases = leases(&store);
    for (id, st) in [
        ("done", status::SUCCEEDED),
        ("gate", status::AWAITING_APPROVAL),
        ("wait", status::AWAITING_APPROVAL),
        ("timer", status::RUNNING),
    ] {
        store
            .runs
            .create_run(new_run(T, id, 1))
            .await
            .expect("create");
        let mut t = next(&store, T, id, 1, 0).await;
        t.status = Some(st.to_owned());
        t.next_wake_at_ms = Some(match id {
            "timer" => Some(1),
            "wait" => Some(i64::MAX),
            _ => None,
        });
        store.runs.commit(t).await.expect("commit");
    }
    let held = leases.claim("replica-1", 10, TTL).await.expect("claim");
    assert_eq!(
        keys(&held),
        key_set(&[(T, "gate"), (T, "wait"), (T, "timer")]),
        "terminal runs are not claimed"
    );
    for l in &held {
        leases.release(l, Release::Park).await.expect("park");
    }
    let due = leases.claim("replica-2", 10, TTL).await.expect("claim");
    assert_eq!(
        keys(&due),
        key_set(&[(T, "timer")]),
        "only the parked run whose wake time is due"
    );
    // A decision written by a non-holder unparks the run.
    let mut t = next(&store, T, "gate", 1, 0).await;
    t.status = Some(status::RUNNING.to_owned());
    store.runs.commit(t).await.expect("foreign commit");
    let woken = leases.claim("replica-2", 10, TTL).await.expect("claim");
    assert_eq!(keys(&woken), key_set(&[(T, "gate")]));
    assert!(
        leases
            .claim("replica-3", 10, TTL)
            .await
            .expect("claim")
            .is_empty()
    );
    // A run ending under its holder is not claimable after release.
    let gate = woken[0].clone();
    let mut t = next(&store, T, "gate", 1, 0).await;
    t.status = Some(status::SUCCEEDED.to_owned());
    leases.commit_fenced(&gate, t).await.expect("finish");
    leases
        .release(&gate, Release::Handoff)
        .await
        .expect("release");
    assert!(
        leases
            .claim("replica-3", 10, TTL)
            .await
            .expect("claim")
            .is_empty()
    );
}

/// `claim_run` takes one given run, parked or not, unless another owner holds it.
pub async fn lease_claim_run_targets_one_run<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    let leases = leases(&store);
    store
        .runs
        .create_run(new_run(T, "r", 1))
        .await
        .expect("create");
    let a = leases
        .claim_run("replica-1", T, "r", TTL)
        .await
        .expect("claim_run")
        .expect("free run");
    assert_eq!((a.owner.as_str(), a.run_id.as_str()), ("replica-1", "r"));
    assert_eq!(
        leases
            .claim_run("replica-2", T, "r", TTL)
            .await
            .expect("claim_run"),
        None,
        "held by another owner"
    );
    let again = leases
        .claim_run("replica-1", T, "r", TTL)
        .await
        .expect("claim_run")
        .expect("own run");
    assert_eq!(
        again.fencing_token, a.fencing_token,
        "re-claiming keeps the token"
    );
    leases.release(&again, Release::Park).await.expect("park");
    let b = leases
        .claim_run("replica-2", T, "r", TTL)
        .await
        .expect("claim_run")
        .expect("a parked run can be claimed by name");
    assert!(b.fencing_token > a.fencing_token);
    assert_eq!(
        leases.claim_run("replica-2", T, "ghost", TTL).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        leases.claim_run("replica-2", "tenant-b", "r", TTL).await,
        Err(StoreError::NotFound),
        "another tenant's run is invisible"
    );
    let mut t = next(&store, T, "r", 1, 0).await;
    t.status = Some(status::CANCELLED.to_owned());
    leases.commit_fenced(&b, t).await.expect("cancel");
    leases.release(&b, Release::Handoff).await.expect("release");
    assert_eq!(
        leases
            .claim_run("replica-1", T, "r", TTL)
            .await
            .expect("claim_run"),
        None,
        "a terminal run is not claimed"
    );
}

/// Bad owners, TTLs and limits are refused with `Invalid`.
pub async fn lease_invalid_arguments_are_refused<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    let leases = leases(&store);
    store
        .runs
        .create_run(new_run(T, "r", 1))
        .await
        .expect("create");
    for (owner, ttl, limit) in [
        ("", TTL, 1),
        ("has space", TTL, 1),
        ("ok", Duration::ZERO, 1),
        ("ok", Duration::from_millis(10_001), 1),
        ("ok", TTL, crate::CLAIM_LIMIT_MAX + 1),
    ] {
        let r = leases.claim(owner, limit, ttl).await;
        assert!(
            matches!(r, Err(StoreError::Invalid(_))),
            "{owner:?} {ttl:?} {limit}: {r:?}"
        );
    }
    assert!(matches!(
        leases.renew("ok", Duration::from_secs(11)).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        leases.claim_run("ok", T, "r", Duration::ZERO).await,
        Err(StoreError::Invalid(_))
    ));
    // Nothing was claimed by the refused calls.
    assert_eq!(leases.claim("ok", 10, TTL).await.expect("claim").len(), 1);
}

async fn next_wakeup(stream: &mut crate::WakeStream) -> Wakeup {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a wake-up arrives")
        .expect("the stream goes on")
}

/// Creating a run, handing one off and an unfenced commit send wake-ups.
pub async fn lease_wakeups_on_create_handoff_and_foreign_commit<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    let store = fresh(&factory).await;
    let leases = leases(&store);
    let mut stream = leases.wakeups();
    // A listener may need a moment to subscribe; create until the first wake-up shows up.
    let mut created = 0;
    let first = loop {
        store
            .runs
            .create_run(new_run(T, &format!("w{created}"), 1))
            .await
            .expect("create");
        created += 1;
        if let Ok(Some(w)) = tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
            break w;
        }
        assert!(created < 20, "no wake-up for created runs");
    };
    assert_eq!(first.tenant, T);
    assert!(first.run_id.starts_with('w'));
    // Drain the wake-ups of the other creations.
    while tokio::time::timeout(Duration::from_millis(300), stream.next())
        .await
        .is_ok()
    {}

    let held = leases
        .claim_run("replica-1", T, "w0", TTL)
        .await
        .expect("claim")
        .expect("free");
    let t = next(&store, T, "w0", 1, 0).await;
    leases.commit_fenced(&held, t).await.expect("fenced");
    leases
        .release(&held, Release::Handoff)
        .await
        .expect("release");
    assert_eq!(
        next_wakeup(&mut stream).await,
        Wakeup {
            tenant: T.to_owned(),
            run_id: "w0".to_owned()
        },
        "the fenced commit sent none; the hand-off did"
    );
    let t = next(&store, T, "w0", 1, 0).await;
    store.runs.commit(t).await.expect("foreign");
    assert_eq!(next_wakeup(&mut stream).await.run_id, "w0");
}
