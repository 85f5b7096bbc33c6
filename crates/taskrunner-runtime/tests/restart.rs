//! A restart must not run a step twice (issue 16, item 5): a run waiting for a retry backoff
//! that fell due while the runtime was down is recovered before its timer fires, so the
//! overdue attempt runs once and is not then marked `interrupted` by its own recovery.
//!
//! Executions are counted from outside: each execution of the step appends a line to a file.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Map;
use taskrunner_engine::RunStatus;
use taskrunner_exec::ExecutorRegistry;
use taskrunner_runtime::{CreateRun, Runtime, RuntimeConfig, StaticSecrets};
use taskrunner_store::Store;
use taskrunner_store_sqlite::{SqliteConfig, SqliteStore};
use taskrunner_testkit::ManualClock;

/// How many restarts are tried; the race it guards against was lost in about 10 of 23 starts.
const RESTARTS: usize = 20;

async fn start(dir: &Path, clock: &ManualClock) -> Runtime {
    let store = SqliteStore::open(dir.join("data"), SqliteConfig::default()).unwrap();
    Runtime::start(
        Store::new(store),
        ExecutorRegistry::with_builtins(),
        clock.shared(),
        Arc::new(StaticSecrets::new()),
        RuntimeConfig::new(dir.join("workspaces")),
    )
    .await
    .unwrap()
}

/// A step that fails on its first execution and succeeds on the next, appending one line per
/// execution to `count` in the run's workspace (the sandbox lets a step write only there);
/// retries wait 30 s.
fn pack() -> String {
    let count = "count";
    format!(
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {{name: restart, version: 1.0.0}}\nspec:\n  failure: {{retries: {{maxAttempts: 3, backoffSeconds: 30}}}}\n  steps:\n    - id: flaky\n      run:\n        uses: builtin:shell\n        with:\n          script: 'n=$(cat {count} 2>/dev/null | wc -l); echo x >> {count}; test \"$n\" -ge 1'\n"
    )
}

fn executions(count: &Path) -> usize {
    std::fs::read_to_string(count).map_or(0, |text| text.lines().count())
}

/// Polls (a few ms at a time, at most `limit` of real time) until `done` holds.
async fn poll_until(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_retry_runs_once_after_a_restart() {
    for round in 0..RESTARTS {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let run_id = format!("overdue-{round}");
        let count = dir
            .path()
            .join("workspaces/default")
            .join(&run_id)
            .join("count");
        {
            let rt = start(dir.path(), &clock).await;
            rt.create_run(CreateRun {
                tenant: "default".into(),
                run_id: Some(run_id.clone()),
                manifest: pack(),
                inputs: Map::new(),
            })
            .await
            .unwrap();
            // The first attempt failed and the run waits 30 s for the retry.
            let waiting = poll_until(Duration::from_secs(20), async || {
                let view = rt.get_run("default", &run_id).await.unwrap().unwrap();
                view.steps
                    .iter()
                    .any(|s| s.attempts == 1 && s.next_attempt_at.is_some())
            })
            .await;
            assert!(waiting, "round {round}: the first attempt never failed");
            rt.shutdown_gracefully().await;
        }
        assert_eq!(executions(&count), 1, "round {round}");
        // Down for longer than the backoff: the retry is overdue when the runtime comes back.
        clock.advance(Duration::from_secs(60));
        let rt = start(dir.path(), &clock).await;
        let finished = poll_until(Duration::from_secs(20), async || {
            rt.get_run("default", &run_id)
                .await
                .unwrap()
                .unwrap()
                .status
                .is_terminal()
        })
        .await;
        let view = rt.get_run("default", &run_id).await.unwrap().unwrap();
        assert!(finished, "round {round}: the run did not finish: {view:#?}");
        assert_eq!(
            view.status,
            RunStatus::Succeeded,
            "round {round}: {view:#?}"
        );
        assert_eq!(view.steps[0].attempts, 2, "round {round}: {view:#?}");
        assert_eq!(
            executions(&count),
            2,
            "round {round}: the step ran more than twice"
        );
        rt.shutdown_gracefully().await;
    }
}
