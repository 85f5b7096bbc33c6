//! A store that cannot take writes for a while (disk full, database restarting): the run's own
//! transitions are kept and stored once the store takes writes again, so the run finishes with
//! a journal that verifies; a client's decision is refused (the run left as it was) and can be
//! sent again. Virtual time (the runtime on a `ManualClock`, tokio's clock paused): the
//! driver's pauses between tries cost nothing and fall at exact times.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Map;
use taskrunner_engine::{Decision, Event, RunStatus};
use taskrunner_exec::ExecutorRegistry;
use taskrunner_runtime::{
    CreateRun, DecisionRequest, Runtime, RuntimeConfig, RuntimeError, StaticSecrets,
};
use taskrunner_store::{
    JournalEntry, ListQuery, LogRecord, LogStore, MemoryStore, NewLog, NewRun, Page, RunRecord,
    RunStore, Store, StoreError, StoreFuture, Transition,
};
use taskrunner_testkit::ManualClock;

const WORKING: u8 = 0;
/// Commits fail, creates still work.
const COMMITS_FAIL: u8 = 1;
/// Every write fails.
const FULL: u8 = 2;

struct Failing {
    inner: MemoryStore,
    mode: Arc<AtomicU8>,
    refused: Arc<AtomicUsize>,
}

impl Failing {
    fn refuse<T: Send + 'static>(&self, writes_of: u8) -> Option<StoreFuture<'static, T>> {
        let mode = self.mode.load(Ordering::SeqCst);
        (mode != WORKING && mode >= writes_of).then(|| {
            self.refused.fetch_add(1, Ordering::SeqCst);
            let e = StoreError::Full("database or disk is full".into());
            Box::pin(async move { Err(e) }) as StoreFuture<'static, T>
        })
    }
}

impl RunStore for Failing {
    fn create_run(&self, run: NewRun) -> StoreFuture<'_, ()> {
        self.refuse(FULL)
            .unwrap_or_else(|| self.inner.create_run(run))
    }
    fn get_run<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
    ) -> StoreFuture<'a, Option<RunRecord>> {
        self.inner.get_run(tenant, run_id)
    }
    fn list_runs<'a>(&'a self, tenant: &'a str, query: ListQuery) -> StoreFuture<'a, Page> {
        self.inner.list_runs(tenant, query)
    }
    fn commit(&self, transition: Transition) -> StoreFuture<'_, Vec<u64>> {
        self.refuse(COMMITS_FAIL)
            .unwrap_or_else(|| self.inner.commit(transition))
    }
    fn commit_many(
        &self,
        transitions: Vec<Transition>,
    ) -> StoreFuture<'_, Vec<Result<Vec<u64>, StoreError>>> {
        self.refuse(COMMITS_FAIL)
            .unwrap_or_else(|| self.inner.commit_many(transitions))
    }
    fn load_journal<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        after_seq: u64,
    ) -> StoreFuture<'a, Vec<JournalEntry>> {
        self.inner.load_journal(tenant, run_id, after_seq)
    }
    fn active_runs(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        self.inner.active_runs()
    }
    fn due_runs(&self, now_ms: i64) -> StoreFuture<'_, Vec<(String, String, i64)>> {
        self.inner.due_runs(now_ms)
    }
    fn queued_count<'a>(&'a self, tenant: &'a str, pack_name: &'a str) -> StoreFuture<'a, u64> {
        self.inner.queued_count(tenant, pack_name)
    }
}

/// Log appends refused as `Unavailable` (a database away) while `down` is set.
struct FailingLogs {
    inner: MemoryStore,
    down: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
}

impl LogStore for FailingLogs {
    fn logs<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        after_sequence: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<LogRecord>> {
        self.inner.logs(tenant, run_id, after_sequence, limit)
    }
    fn append_logs<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        logs: Vec<NewLog>,
    ) -> StoreFuture<'a, Vec<u64>> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            let e = StoreError::Unavailable("postgres: connection refused".into());
            return Box::pin(async move { Err(e) });
        }
        self.inner.append_logs(tenant, run_id, logs)
    }
}

struct Fixture {
    rt: Runtime,
    memory: MemoryStore,
    mode: Arc<AtomicU8>,
    refused: Arc<AtomicUsize>,
    logs_down: Arc<AtomicBool>,
    logs_refused: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let memory = MemoryStore::new();
    let mode = Arc::new(AtomicU8::new(WORKING));
    let refused = Arc::new(AtomicUsize::new(0));
    let runs = Arc::new(Failing {
        inner: memory.clone(),
        mode: mode.clone(),
        refused: refused.clone(),
    });
    let logs_down = Arc::new(AtomicBool::new(false));
    let logs_refused = Arc::new(AtomicUsize::new(0));
    let logs = Arc::new(FailingLogs {
        inner: memory.clone(),
        down: logs_down.clone(),
        refused: logs_refused.clone(),
    });
    let rt = Runtime::start(
        Store::from_parts(runs, logs, Arc::new(memory.clone())),
        ExecutorRegistry::with_builtins(),
        ManualClock::new().shared(),
        Arc::new(StaticSecrets::new()),
        RuntimeConfig::new(dir.path().join("workspaces")),
    )
    .await
    .unwrap();
    Fixture {
        rt,
        memory,
        mode,
        refused,
        logs_down,
        logs_refused,
        _dir: dir,
    }
}

fn create(manifest: &str, run_id: &str) -> CreateRun {
    CreateRun {
        tenant: "default".into(),
        run_id: Some(run_id.into()),
        manifest: manifest.into(),
        inputs: Map::new(),
    }
}

const PACK: &str = "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: rt, version: 1.0.0}\nspec:\n  approvals: [{id: go}]\n  steps:\n    - {id: a, run: {uses: builtin:noop}}\n    - {id: gate, gate: {approval: {id: go}}}\n    - {id: b, run: {uses: builtin:echo, with: {message: done}}}\n";

/// The stored journal, verified against the plan hash and the stored head.
async fn verified(memory: &MemoryStore, run_id: &str) -> Vec<Event> {
    let (_, records) = taskrunner_runtime::verified_journal(memory, "default", run_id)
        .await
        .unwrap_or_else(|e| panic!("{run_id}: {e}"));
    records.into_iter().map(|r| r.event).collect()
}

fn go(plan_hash: &str) -> DecisionRequest {
    DecisionRequest {
        decision: Decision::Approved,
        actor: "ops".into(),
        summary: None,
        plan_hash: plan_hash.into(),
        caller_scopes: None,
    }
}

#[tokio::test(start_paused = true)]
async fn the_runs_transitions_wait_for_the_store_and_the_run_finishes() {
    let f = fixture().await;
    f.mode.store(COMMITS_FAIL, Ordering::SeqCst);
    f.rt.create_run(create(PACK, "held")).await.unwrap();
    let at_create = f.memory.get_run("default", "held").await.unwrap().unwrap();
    // A minute of virtual time: the driver keeps trying, nothing is stored, nothing is lost.
    tokio::time::sleep(Duration::from_secs(60)).await;
    // Exactly: tries at 0, 50, 150, 350, 750, 1550 and 3150 ms (the pause doubles from 50 ms),
    // then every 2 s up to 59 150 ms: 35 tries.
    let tries = f.refused.load(Ordering::SeqCst);
    assert_eq!(tries, 35, "tried {tries} times in a minute");
    let stored = f.memory.get_run("default", "held").await.unwrap().unwrap();
    assert_eq!(
        stored.journal_len, at_create.journal_len,
        "nothing after the creation is stored"
    );
    assert_eq!(stored.status, "Pending");
    f.mode.store(WORKING, Ordering::SeqCst);
    let view = f.rt.wait_settled("default", "held").await.unwrap();
    assert_eq!(view.status, RunStatus::AwaitingApproval, "{view:#?}");
    let events = verified(&f.memory, "held").await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::AttemptFinished { step_id, .. } if step_id == "a")),
        "{events:?}"
    );

    // A decision while the store is full is refused and leaves the run waiting; sent again
    // once space returns, it is applied and the run finishes.
    f.mode.store(FULL, Ordering::SeqCst);
    let refused =
        f.rt.decide("default", "held", "go", go(&stored.plan_hash))
            .await;
    assert!(
        matches!(refused, Err(RuntimeError::Store(StoreError::Full(_)))),
        "{refused:?}"
    );
    let view = f.rt.get_run("default", "held").await.unwrap().unwrap();
    assert_eq!(view.status, RunStatus::AwaitingApproval);
    let created = f.rt.create_run(create(PACK, "refused")).await;
    assert!(
        matches!(created, Err(RuntimeError::Store(StoreError::Full(_)))),
        "{created:?}"
    );
    f.mode.store(WORKING, Ordering::SeqCst);
    f.rt.decide("default", "held", "go", go(&stored.plan_hash))
        .await
        .unwrap();
    let view = f.rt.wait_settled("default", "held").await.unwrap();
    assert_eq!(view.status, RunStatus::Succeeded, "{view:#?}");
    let events = verified(&f.memory, "held").await;
    let decided = events
        .iter()
        .filter(|e| matches!(e, Event::ApprovalDecided { .. }))
        .count();
    assert_eq!(decided, 1, "the refused decision was not journaled");
    assert!(
        f.memory
            .get_run("default", "refused")
            .await
            .unwrap()
            .is_none()
    );
}

const ECHO_PACK: &str = "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: out, version: 1.0.0}\nspec:\n  steps:\n    - {id: say, run: {uses: builtin:echo, with: {message: kept across the outage}}}\n";

#[tokio::test(start_paused = true)]
async fn step_output_waits_for_the_store_and_is_kept() {
    let f = fixture().await;
    f.logs_down.store(true, Ordering::SeqCst);
    f.rt.create_run(create(ECHO_PACK, "out")).await.unwrap();
    // Half a minute of virtual time with the log store away: the output is tried again and
    // the step's end waits for it.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let tries = f.logs_refused.load(Ordering::SeqCst);
    assert!((10..=100).contains(&tries), "tried {tries} times");
    let stored = f.memory.get_run("default", "out").await.unwrap().unwrap();
    assert_ne!(
        stored.status, "Succeeded",
        "the step ended before its output was stored"
    );
    f.logs_down.store(false, Ordering::SeqCst);
    let view = f.rt.wait_settled("default", "out").await.unwrap();
    assert_eq!(view.status, RunStatus::Succeeded, "{view:#?}");
    let logs = f.memory.logs("default", "out", 0, 1000).await.unwrap();
    let output: Vec<&str> = logs
        .iter()
        .filter(|l| l.event_type == "step.output")
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(output, ["kept across the outage"], "{logs:#?}");
    // Sequences stay gap-free and in order.
    for (i, l) in logs.iter().enumerate() {
        assert_eq!(l.sequence, i as u64 + 1, "{logs:#?}");
    }
}
