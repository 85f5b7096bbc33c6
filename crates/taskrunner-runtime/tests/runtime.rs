//! The runtime end to end on real stores and real executors: runs succeed, fail, retry,
//! wait at gates, resume after decisions, cancel, and survive a restart.
//!
//! Time: the tests on the memory store run in virtual time (`start_paused`, the runtime on a
//! [`ManualClock`]), so timers, backoff and approval expiry cost no real time and fire at their
//! exact times whatever the load. The others stay in real time and contain no sleeps: they
//! wait for the runtime's own notifications. They must: tokio's paused clock jumps to the
//! next timer whenever every task waits, and here tasks wait on things tokio cannot see
//! working — a child process (`builtin:shell`), or SQLite's writer thread answering a commit
//! (its fsync lets the paused clock race ahead by the runtime's 500 ms due-timer poll again and
//! again, seconds of virtual time per write).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, json};
use taskrunner_engine::{Decision, Event, RunStatus};
use taskrunner_exec::ExecutorRegistry;
use taskrunner_runtime::{
    Clock, CreateRun, DecisionRequest, Runtime, RuntimeConfig, RuntimeError, StaticSecrets,
    SystemClock,
};
use taskrunner_store::{ArtifactStore, MemoryStore, RunStore, Store};
use taskrunner_store_sqlite::{SqliteConfig, SqliteStore};
use taskrunner_testkit::{ManualClock, T0};
use tokio::time::Instant;

/// A second handle on the same SQLite store, for reading what the runtime wrote.
fn rt_store(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir.join("data"), SqliteConfig::default()).unwrap()
}

/// A runtime on the SQLite store in `dir`, on the system clock (real time: see the file's
/// documentation).
async fn start(dir: &std::path::Path, secrets: StaticSecrets) -> Runtime {
    let store = SqliteStore::open(dir.join("data"), SqliteConfig::default()).unwrap();
    Runtime::start(
        Store::new(store),
        ExecutorRegistry::with_builtins(),
        Arc::new(SystemClock),
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

const HEADER: &str =
    "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: rt, version: 1.0.0}\n";

// Real time: the step is a real shell process (see the file's documentation).
#[tokio::test]
async fn a_run_succeeds_with_outputs_logs_and_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start(
        dir.path(),
        StaticSecrets::new().with("token", "s3cr3t-value"),
    )
    .await;
    let pack = format!(
        "{HEADER}spec:\n  secrets: [{{name: token}}]\n  steps:\n    - id: write\n      run:\n        uses: builtin:shell\n        with:\n          script: |\n            echo hello $TOKEN\n            mkdir -p out && echo report > out/r.txt\n            echo answer=42 >> $TASKRUNNER_OUTPUT\n          env: {{TOKEN: \"{{{{ secrets.token }}}}\"}}\n    - id: echo\n      run: {{uses: builtin:echo, with: {{message: \"got {{{{ steps.write.outputs.answer }}}}\"}}}}\n  outputs:\n    - {{name: report, type: file, path: out/r.txt}}\n    - {{name: missing, type: file, path: out/none.txt}}\n    - {{name: answer, type: object, expression: steps.write.outputs.answer}}\n"
    );
    let view = rt.create_run(create(&pack, "ok-1")).await.unwrap();
    assert_eq!(view.status, RunStatus::Pending);
    let done = rt.wait_settled("default", "ok-1").await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{done:#?}");
    let logs = rt.logs("default", "ok-1", 0, 1000).await.unwrap();
    let types: Vec<&str> = logs.iter().map(|l| l.event_type.as_str()).collect();
    assert_eq!(types.first(), Some(&"run.created"));
    assert!(types.contains(&"run.completed"), "{types:?}");
    let sequences: Vec<u64> = logs.iter().map(|l| l.sequence).collect();
    assert_eq!(sequences, (1..=logs.len() as u64).collect::<Vec<_>>());
    let output: Vec<&str> = logs
        .iter()
        .filter(|l| l.event_type == "step.output")
        .map(|l| l.message.as_str())
        .collect();
    assert!(
        output.contains(&"hello ***"),
        "secret must be masked: {output:?}"
    );
    assert!(output.contains(&"got 42"), "{output:?}");
    assert!(!logs.iter().any(|l| l.message.contains("s3cr3t-value") || l.metadata_json.contains("s3cr3t-value")));
    // Outputs are captured before the run's end is logged.
    let failed_at = types
        .iter()
        .position(|t| *t == "artifact.failed")
        .expect("artifact.failed logged");
    let completed_at = types.iter().position(|t| *t == "run.completed").unwrap();
    assert!(failed_at < completed_at, "{types:?}");
    let store = rt_store(dir.path());
    let artifacts = store.list_artifacts("default", "ok-1").await.unwrap();
    let by_name = |n: &str| artifacts.iter().find(|a| a.name == n).unwrap().clone();
    assert_eq!(by_name("report").status, "captured");
    assert_eq!(by_name("report").size_bytes, Some(7));
    assert_eq!(by_name("missing").status, "failed");
    assert!(by_name("missing").notes.is_some());
    assert_eq!(by_name("answer").expression_json.as_deref(), Some("\"42\""));
}

// Real time: the steps are real shell processes. Backoff in virtual time:
// `retries_wait_their_backoff_in_virtual_time`.
#[tokio::test]
async fn retries_then_failure_and_continue_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start(dir.path(), StaticSecrets::new()).await;
    let pack = format!(
        "{HEADER}spec:\n  failure: {{retries: {{maxAttempts: 2, backoffSeconds: 0}}}}\n  steps:\n    - {{id: soft, continueOnError: true, run: {{uses: builtin:shell, with: {{script: 'exit 3'}}}}}}\n    - {{id: hard, run: {{uses: builtin:shell, with: {{script: 'exit 4'}}}}}}\n    - {{id: never, run: {{uses: builtin:noop}}}}\n"
    );
    rt.create_run(create(&pack, "fail-1")).await.unwrap();
    let done = rt.wait_settled("default", "fail-1").await.unwrap();
    assert_eq!(done.status, RunStatus::Failed);
    let step = |id: &str| done.steps.iter().find(|s| s.step_id == id).unwrap().clone();
    assert_eq!(step("soft").attempts, 2);
    assert_eq!(step("hard").attempts, 2);
    assert_eq!(step("never").status_reason.as_deref(), Some("run-failed"));
}

// Real time: SQLite (see the file's documentation).
#[tokio::test]
async fn approval_gate_parks_then_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pack = format!(
        "{HEADER}spec:\n  approvals: [{{id: go, grants: [packs.approve]}}]\n  steps:\n    - {{id: before, run: {{uses: builtin:noop}}}}\n    - {{id: gate, gate: {{approval: {{id: go, message: ship it?}}}}}}\n    - {{id: after, run: {{uses: builtin:echo, with: {{message: shipped}}}}}}\n"
    );
    let plan_hash;
    {
        let rt = start(dir.path(), StaticSecrets::new()).await;
        let view = rt.create_run(create(&pack, "gate-1")).await.unwrap();
        plan_hash = view.plan_hash.clone();
        let parked = rt.wait_settled("default", "gate-1").await.unwrap();
        assert_eq!(parked.status, RunStatus::AwaitingApproval);
        // Wrong hash: nothing recorded.
        let wrong = DecisionRequest {
            caller_scopes: None,
            decision: Decision::Approved,
            plan_hash: format!("sha256:{}", "0".repeat(64)),
            actor: "alice".into(),
            summary: None,
        };
        assert!(matches!(
            rt.decide("default", "gate-1", "go", wrong).await,
            Err(RuntimeError::PlanHashMismatch { .. })
        ));
        assert!(matches!(
            rt.decide(
                "default",
                "gate-1",
                "nope",
                DecisionRequest {
                    caller_scopes: None,
                    decision: Decision::Approved,
                    plan_hash: plan_hash.clone(),
                    actor: "a".into(),
                    summary: None
                }
            )
            .await,
            Err(RuntimeError::NotFound(_))
        ));
        rt.shutdown();
    }
    // A new process: the run is recovered from its journal and still waits.
    let rt = start(dir.path(), StaticSecrets::new()).await;
    let view = rt.get_run("default", "gate-1").await.unwrap().unwrap();
    assert_eq!(view.status, RunStatus::AwaitingApproval);
    let outcome = rt
        .decide(
            "default",
            "gate-1",
            "go",
            DecisionRequest {
                caller_scopes: None,
                decision: Decision::Approved,
                plan_hash: plan_hash.clone(),
                actor: "alice".into(),
                summary: Some("ok".into()),
            },
        )
        .await
        .unwrap();
    assert!(outcome.resumed);
    let done = rt.wait_settled("default", "gate-1").await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{done:#?}");
    // Deciding again after the end: terminal.
    let again = rt
        .decide(
            "default",
            "gate-1",
            "go",
            DecisionRequest {
                caller_scopes: None,
                decision: Decision::Rejected,
                plan_hash,
                actor: "bob".into(),
                summary: None,
            },
        )
        .await;
    assert!(
        matches!(
            again,
            Err(RuntimeError::RunTerminal(_) | RuntimeError::AlreadyDecided(_))
        ),
        "{again:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_a_running_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::new();
    let clock = ManualClock::new();
    let rt = Runtime::start(
        Store::new(store),
        ExecutorRegistry::with_builtins(),
        clock.shared(),
        Arc::new(StaticSecrets::new()),
        RuntimeConfig::new(dir.path()),
    )
    .await
    .unwrap();
    let pack = format!(
        "{HEADER}spec:\n  steps:\n    - {{id: long, run: {{uses: builtin:sleep, with: {{seconds: 60}}}}}}\n    - {{id: next, run: {{uses: builtin:noop}}}}\n"
    );
    rt.create_run(create(&pack, "cancel-1")).await.unwrap();
    let mut watch = rt.watch("default", "cancel-1").unwrap();
    while watch.borrow_and_update().running_attempts == 0 {
        watch.changed().await.unwrap();
    }
    assert_eq!(
        rt.cancel("default", "cancel-1", Some("me".into()))
            .await
            .unwrap(),
        RunStatus::Cancelled
    );
    let done = rt.wait_settled("default", "cancel-1").await.unwrap();
    assert_eq!(done.status, RunStatus::Cancelled);
    let next = done.steps.iter().find(|s| s.step_id == "next").unwrap();
    assert_eq!(next.status_reason.as_deref(), Some("cancelled"));
    // Cancelling again answers again.
    assert_eq!(
        rt.cancel("default", "cancel-1", None).await.unwrap(),
        RunStatus::Cancelled
    );
    // Cancelled at once: no time passed, the 60 s step did not run out.
    assert_eq!(clock.now(), T0);
}

// Real time: SQLite (see the file's documentation).
#[tokio::test]
async fn creation_errors_are_plan_errors_at_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start(dir.path(), StaticSecrets::new().with("short", "abc")).await;
    let pack = format!(
        "{HEADER}spec:\n  secrets: [{{name: short}}, {{name: absent}}]\n  steps:\n    - {{id: a, run: {{uses: builtin:nonexistent}}}}\n"
    );
    let err = rt.create_run(create(&pack, "bad-1")).await.unwrap_err();
    let RuntimeError::Plan(plan) = err else {
        panic!("{err:?}")
    };
    let paths: Vec<String> = plan.diagnostics().iter().map(|d| d.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "spec.steps[0].run.uses",
            "spec.secrets[0].name",
            "spec.secrets[1].name"
        ]
    );
    assert!(rt.get_run("default", "bad-1").await.unwrap().is_none());

    let ok = format!("{HEADER}spec:\n  steps: [{{id: a, run: {{uses: builtin:noop}}}}]\n");
    rt.create_run(create(&ok, "dup")).await.unwrap();
    assert!(matches!(
        rt.create_run(create(&ok, "dup")).await,
        Err(RuntimeError::RunExists(_))
    ));
    assert!(matches!(
        rt.create_run(create(&ok, "bad id!")).await,
        Err(RuntimeError::BadRequest(_))
    ));
    let _ = json!({});
}

/// Approval expiry in virtual time, on the memory store (SQLite's parking is covered by
/// `approval_gate_parks_then_resumes_after_a_restart`, its `due_runs` by the store
/// conformance suite).
#[tokio::test(start_paused = true)]
async fn parked_runs_leave_memory_and_still_expire() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(
        Store::new(MemoryStore::new()),
        ExecutorRegistry::with_builtins(),
        ManualClock::new().shared(),
        Arc::new(StaticSecrets::new()),
        RuntimeConfig::new(dir.path()),
    )
    .await
    .unwrap();
    let pack = format!(
        "{HEADER}spec:\n  approvals: [{{id: soon, expiresAfter: 1s}}, {{id: later}}]\n  steps:\n    - {{id: g1, gate: {{approval: {{id: soon}}}}}}\n"
    );
    let view = rt.create_run(create(&pack, "exp-1")).await.unwrap();
    let parked = rt.wait_settled("default", "exp-1").await.unwrap();
    assert_eq!(parked.status, RunStatus::AwaitingApproval);
    assert!(
        rt.watch("default", "exp-1").is_none(),
        "a parked run holds no driver in memory"
    );
    // The expiry is found through the store (polled every 500 ms) and fails the gate: not
    // before the second is up, and at the latest one poll later.
    let parked_at = Instant::now();
    let deadline = parked_at + Duration::from_secs(20);
    loop {
        let v = rt.get_run("default", "exp-1").await.unwrap().unwrap();
        if v.status.is_terminal() {
            let after = parked_at.elapsed();
            assert!(
                after >= Duration::from_secs(1) && after <= Duration::from_millis(1_505),
                "expired after {after:?}"
            );
            assert_eq!(v.status, RunStatus::Failed);
            let gate = v.steps.iter().find(|s| s.step_id == "g1").unwrap();
            assert_eq!(gate.status_reason.as_deref(), Some("approval-expired"));
            break;
        }
        assert!(Instant::now() < deadline, "the parked gate never expired");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A parked run without expiry is brought back by a decision.
    let pack2 = format!(
        "{HEADER}spec:\n  approvals: [{{id: later}}]\n  steps:\n    - {{id: g, gate: {{approval: {{id: later}}}}}}\n    - {{id: after, run: {{uses: builtin:noop}}}}\n"
    );
    let v2 = rt.create_run(create(&pack2, "park-2")).await.unwrap();
    rt.wait_settled("default", "park-2").await.unwrap();
    assert!(rt.watch("default", "park-2").is_none());
    let outcome = rt
        .decide(
            "default",
            "park-2",
            "later",
            DecisionRequest {
                caller_scopes: None,
                decision: Decision::Approved,
                plan_hash: v2.plan_hash,
                actor: "a".into(),
                summary: None,
            },
        )
        .await
        .unwrap();
    assert!(outcome.resumed);
    assert_eq!(
        rt.wait_settled("default", "park-2").await.unwrap().status,
        RunStatus::Succeeded
    );
    let _ = view;
}

// Real time: SQLite (see the file's documentation).
#[tokio::test]
async fn approval_grants_are_checked_after_404_and_before_the_plan_hash() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start(dir.path(), StaticSecrets::new()).await;
    let pack = format!(
        "{HEADER}spec:\n  approvals: [{{id: go, grants: [packs.approve, security.signoff]}}]\n  steps:\n    - {{id: gate, gate: {{approval: {{id: go}}}}}}\n"
    );
    let view = rt.create_run(create(&pack, "grants-1")).await.unwrap();
    rt.wait_settled("default", "grants-1").await.unwrap();
    let scopes = |list: &[&str]| Some(list.iter().map(|s| (*s).to_owned()).collect());
    let request = |hash: &str, caller_scopes| DecisionRequest {
        decision: Decision::Approved,
        plan_hash: hash.to_owned(),
        actor: "alice".into(),
        summary: None,
        caller_scopes,
    };
    let wrong = format!("sha256:{}", "0".repeat(64));
    // 404 first: an approval the plan does not use, whatever the scopes.
    assert!(matches!(
        rt.decide("default", "grants-1", "nope", request(&wrong, scopes(&[])))
            .await,
        Err(RuntimeError::NotFound(_))
    ));
    // 403 before the plan hash: one of two grants is not enough.
    let partial = rt
        .decide(
            "default",
            "grants-1",
            "go",
            request(&wrong, scopes(&["packs.approve"])),
        )
        .await;
    match partial {
        Err(RuntimeError::Forbidden(why)) => assert!(why.contains("security.signoff"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Holding every grant: the hash is checked next, then the decision applies.
    let both = scopes(&["packs.approve", "security.signoff", "other"]);
    assert!(matches!(
        rt.decide("default", "grants-1", "go", request(&wrong, both.clone()))
            .await,
        Err(RuntimeError::PlanHashMismatch { .. })
    ));
    let outcome = rt
        .decide("default", "grants-1", "go", request(&view.plan_hash, both))
        .await
        .unwrap();
    assert!(outcome.resumed);
    let done = rt.wait_settled("default", "grants-1").await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    // A finished run still answers 403 to a caller without the grants (not 409).
    assert!(matches!(
        rt.decide(
            "default",
            "grants-1",
            "go",
            request(&view.plan_hash, scopes(&[]))
        )
        .await,
        Err(RuntimeError::Forbidden(_))
    ));
}

/// Retries wait their backoff, in virtual time and exactly: each attempt of a step that runs
/// out of time (2 s) is retried 30 s after it failed, three attempts in all, then the run fails.
/// Nearly two minutes of the runtime's timers in no real time.
#[tokio::test(start_paused = true)]
async fn retries_wait_their_backoff_in_virtual_time() {
    let dir = tempfile::tempdir().unwrap();
    let memory = MemoryStore::new();
    let clock = ManualClock::new();
    let rt = Runtime::start(
        Store::new(memory.clone()),
        ExecutorRegistry::with_builtins(),
        clock.shared(),
        Arc::new(StaticSecrets::new()),
        RuntimeConfig::new(dir.path()),
    )
    .await
    .unwrap();
    let pack = format!(
        "{HEADER}spec:\n  failure: {{retries: {{maxAttempts: 3, backoffSeconds: 30}}}}\n  steps:\n    - {{id: slow, timeoutSeconds: 2, run: {{uses: builtin:sleep, with: {{seconds: 600}}}}}}\n    - {{id: never, run: {{uses: builtin:noop}}}}\n"
    );
    let real = std::time::Instant::now();
    rt.create_run(create(&pack, "backoff-1")).await.unwrap();
    let done = rt.wait_settled("default", "backoff-1").await.unwrap();
    assert_eq!(done.status, RunStatus::Failed, "{done:#?}");
    let slow = done.steps.iter().find(|s| s.step_id == "slow").unwrap();
    assert_eq!(slow.attempts, 3);
    assert_eq!(slow.status_reason.as_deref(), Some("timeout"), "{slow:#?}");
    // Attempts end at 2 s, 2 + 30 + 2 s and 2 * (2 + 30) + 2 s, to the millisecond.
    let finished: Vec<i64> = memory
        .load_journal("default", "backoff-1", 0)
        .await
        .unwrap()
        .iter()
        .filter(|e| {
            matches!(
                serde_json::from_str(&e.payload_json).unwrap(),
                Event::AttemptFinished { .. }
            )
        })
        .map(|e| e.at_ms - T0.millis())
        .collect();
    assert_eq!(finished, [2_000, 34_000, 66_000]);
    assert_eq!(clock.now().millis() - T0.millis(), 66_000);
    assert!(
        real.elapsed() < Duration::from_secs(10),
        "took {:?} of real time",
        real.elapsed()
    );
}
