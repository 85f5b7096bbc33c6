//! A store that cannot take writes (disk full, database away): writes are refused with `503`,
//! a clear code and `Retry-After`; reads keep answering.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use common::*;
use serde_json::json;
use taskrunner_auth::NoAuth;
use taskrunner_exec::ExecutorRegistry;
use taskrunner_http::{HttpConfig, router};
use taskrunner_runtime::{Runtime, RuntimeConfig, StaticSecrets, SystemClock};
use taskrunner_store::{
    JournalEntry, ListQuery, MemoryStore, NewRun, Page, RunRecord, RunStore, Store, StoreError,
    StoreFuture, Transition,
};

const RUNS: &str = "/v1/task-runner/runs";

const WORKING: u8 = 0;
const FULL: u8 = 1;
const AWAY: u8 = 2;

/// The memory store's runs, with writes failing as `mode` says.
struct Failing {
    inner: MemoryStore,
    mode: Arc<AtomicU8>,
}

impl Failing {
    fn refusal(&self) -> Option<StoreError> {
        match self.mode.load(Ordering::SeqCst) {
            FULL => Some(StoreError::Full("database or disk is full".into())),
            AWAY => Some(StoreError::Unavailable("connection refused".into())),
            _ => None,
        }
    }
}

impl RunStore for Failing {
    fn create_run(&self, run: NewRun) -> StoreFuture<'_, ()> {
        match self.refusal() {
            Some(e) => Box::pin(async move { Err(e) }),
            None => self.inner.create_run(run),
        }
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
        match self.refusal() {
            Some(e) => Box::pin(async move { Err(e) }),
            None => self.inner.commit(transition),
        }
    }
    fn commit_many(
        &self,
        transitions: Vec<Transition>,
    ) -> StoreFuture<'_, Vec<Result<Vec<u64>, StoreError>>> {
        match self.refusal() {
            Some(e) => Box::pin(async move { Err(e) }),
            None => self.inner.commit_many(transitions),
        }
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

fn echo_manifest() -> String {
    "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: web, version: 1.0.0}\n\
     spec:\n  steps:\n    - id: hello\n      run: {uses: builtin:echo, with: {message: hi}}\n"
        .to_owned()
}

#[tokio::test]
async fn writes_are_503_with_a_code_and_retry_after_while_reads_answer() {
    let dir = tempfile::tempdir().unwrap();
    let memory = MemoryStore::new();
    let mode = Arc::new(AtomicU8::new(WORKING));
    let runs = Arc::new(Failing {
        inner: memory.clone(),
        mode: mode.clone(),
    });
    let memory = Arc::new(memory);
    let store = Store::from_parts(runs, memory.clone(), memory);
    let runtime = Runtime::start(
        store,
        ExecutorRegistry::with_builtins(),
        Arc::new(SystemClock),
        Arc::new(StaticSecrets::new()),
        RuntimeConfig::new(dir.path().join("ws")),
    )
    .await
    .unwrap();
    let app = router(runtime.clone(), HttpConfig::new(Arc::new(NoAuth)));

    let made = post(
        &app,
        RUNS,
        &json!({"manifest": echo_manifest(), "runId": "before"}),
    )
    .await;
    assert_eq!(made.status.as_u16(), 201, "{}", made.json());
    runtime.wait_settled("default", "before").await.unwrap();

    for (m, code) in [(FULL, "storage_full"), (AWAY, "storage_unavailable")] {
        mode.store(m, Ordering::SeqCst);
        let refused = post(
            &app,
            RUNS,
            &json!({"manifest": echo_manifest(), "runId": format!("refused-{m}")}),
        )
        .await;
        assert_error(&refused, 503, code);
        assert_eq!(refused.header("retry-after"), Some("10"));
        let message = refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            !message.contains("disk is full") && !message.contains("connection refused"),
            "the store's own words stay in the log: {message}"
        );
        // Reads keep answering.
        let run = get(&app, &format!("{RUNS}/before")).await;
        assert_eq!(run.status.as_u16(), 200, "{}", run.json());
        let list = get(&app, RUNS).await;
        assert_eq!(list.status.as_u16(), 200);
        assert_eq!(list.json()["runs"].as_array().unwrap().len(), 1);
        assert_eq!(
            get(&app, &format!("{RUNS}/refused-{m}"))
                .await
                .status
                .as_u16(),
            404,
            "a refused create wrote nothing"
        );
    }

    // Space returns: the same create succeeds.
    mode.store(WORKING, Ordering::SeqCst);
    let made = post(
        &app,
        RUNS,
        &json!({"manifest": echo_manifest(), "runId": "after"}),
    )
    .await;
    assert_eq!(made.status.as_u16(), 201, "{}", made.json());
}
