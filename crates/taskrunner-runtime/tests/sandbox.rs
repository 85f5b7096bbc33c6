//! The runtime with the sandbox: the pack's `spec.sandbox` reaches process steps (sealed
//! network, memory limit, quota as timeout), the mechanisms land in the step's log, secrets a
//! step prints never reach the log, outputs, artifacts or run state, and file outputs cannot
//! escape the workspace. Tests needing a kernel feature say so and skip.
//!
//! Real time: the steps are real processes under the sandbox, which tokio's paused clock
//! cannot see working (it would jump to a step's timeout meanwhile). The scripts' `sleep`s
//! are the processes': `sleep 0.2` splits a line across two reads of the pipe, `sleep 20` is
//! ended by the 5 s quota (the behaviour asserted).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use serde_json::Map;
use taskrunner_engine::RunStatus;
use taskrunner_exec::{ExecutorRegistry, Sandbox};
use taskrunner_runtime::{CreateRun, Runtime, RuntimeConfig, StaticSecrets, SystemClock};
use taskrunner_store::{LogRecord, MemoryStore, Store};

const HEADER: &str =
    "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: sb, version: 1.0.0}\n";
const SECRET: &str = "hunter2-very-secret";

async fn start(dir: &std::path::Path) -> (Runtime, Store) {
    let store = Store::new(MemoryStore::new());
    let rt = Runtime::start(
        store.clone(),
        ExecutorRegistry::with_builtins(),
        Arc::new(SystemClock),
        Arc::new(StaticSecrets::new().with("token", SECRET)),
        RuntimeConfig::new(dir.join("workspaces")),
    )
    .await
    .unwrap();
    (rt, store)
}

async fn run(rt: &Runtime, id: &str, pack: &str) -> (taskrunner_engine::RunView, Vec<LogRecord>) {
    rt.create_run(CreateRun {
        tenant: "default".into(),
        run_id: Some(id.into()),
        manifest: pack.into(),
        inputs: Map::new(),
    })
    .await
    .unwrap();
    let view = rt.wait_settled("default", id).await.unwrap();
    let logs = rt.logs("default", id, 0, 10_000).await.unwrap();
    (view, logs)
}

fn reason_of(view: &taskrunner_engine::RunView, step: &str) -> Option<String> {
    view.steps
        .iter()
        .find(|s| s.step_id == step)
        .and_then(|s| s.status_reason.clone())
}

#[tokio::test]
async fn a_printed_secret_never_reaches_logs_outputs_artifacts_or_state() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, store) = start(dir.path()).await;
    // Printed whole, in two writes, on stderr, into an output value and into a file output.
    let pack = format!(
        "{HEADER}spec:\n  secrets: [{{name: token}}]\n  outputs:\n    - {{name: leak, type: file, path: leak.txt}}\n    - {{name: value, type: object, expression: steps.leak.outputs.v}}\n  steps:\n    - id: leak\n      run:\n        uses: builtin:shell\n        with:\n          env: {{T: \"{{{{ secrets.token }}}}\"}}\n          script: |\n            echo \"whole $T\"\n            printf 'hunter2-'; sleep 0.2; printf 'very-secret\\n'\n            echo \"err $T\" >&2\n            echo \"v=$T\" >> \"$TASKRUNNER_OUTPUT\"\n            echo \"$T\" > leak.txt\n"
    );
    let (view, logs) = run(&rt, "secret-1", &pack).await;
    assert_eq!(view.status, RunStatus::Succeeded, "{view:#?}");
    for log in &logs {
        assert!(
            !log.message.contains(SECRET) && !log.metadata_json.contains(SECRET),
            "{log:?}"
        );
    }
    let lines: Vec<&str> = logs
        .iter()
        .filter(|l| l.event_type == "step.output")
        .map(|l| l.message.as_str())
        .collect();
    assert!(lines.contains(&"whole ***"), "{lines:?}");
    assert!(lines.contains(&"***"), "split across writes: {lines:?}");
    assert!(lines.contains(&"err ***"), "{lines:?}");
    let state = serde_json::to_string(&view).unwrap();
    assert!(!state.contains(SECRET), "{state}");
    let artifacts = store
        .artifacts
        .list_artifacts("default", "secret-1")
        .await
        .unwrap();
    let listing = format!("{artifacts:?}");
    assert!(!listing.contains(SECRET), "{listing}");
    let value = artifacts.iter().find(|a| a.name == "value").unwrap();
    assert_eq!(value.expression_json.as_deref(), Some("\"***\""));
}

#[tokio::test]
async fn file_outputs_cannot_escape_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, store) = start(dir.path()).await;
    // The step cannot write outside (Landlock) but can plant a symlink to a host file.
    let pack = format!(
        "{HEADER}spec:\n  sandbox: {{mode: sealed}}\n  outputs:\n    - {{name: link, type: file, path: out/passwd}}\n    - {{name: dotdot, type: file, path: \"{{{{ steps.plant.outputs.p }}}}\"}}\n  steps:\n    - id: plant\n      run:\n        uses: builtin:shell\n        with:\n          script: |\n            mkdir -p out && ln -s /etc/passwd out/passwd\n            echo p=../escape >> \"$TASKRUNNER_OUTPUT\"\n            (echo x > ../escape) 2>/dev/null || true\n"
    );
    let (view, logs) = run(&rt, "escape-1", &pack).await;
    assert_eq!(view.status, RunStatus::Succeeded, "{view:#?}");
    let artifacts = store
        .artifacts
        .list_artifacts("default", "escape-1")
        .await
        .unwrap();
    for name in ["link", "dotdot"] {
        let a = artifacts.iter().find(|a| a.name == name).unwrap();
        assert_eq!(a.status, "failed", "{a:?}");
        assert!(
            a.notes
                .as_deref()
                .unwrap_or("")
                .contains("escapes the workspace"),
            "{a:?}"
        );
        assert!(a.stored_path.is_none());
    }
    let failed: Vec<&LogRecord> = logs
        .iter()
        .filter(|l| l.event_type == "artifact.failed")
        .collect();
    assert_eq!(failed.len(), 2, "{logs:?}");
}

#[tokio::test]
async fn the_pack_sandbox_reaches_process_steps_and_is_logged() {
    let sandbox = Sandbox::shared_default();
    let caps = sandbox.capabilities();
    if !caps.network.is_enforced() || !caps.memory.is_enforced() {
        eprintln!("SKIPPED: needs network namespaces and a cgroup memory controller ({caps})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (rt, _) = start(dir.path()).await;
    let pack = format!(
        "{HEADER}spec:\n  sandbox: {{mode: sealed, memoryLimitMiB: 32, quotaSeconds: 5}}\n  steps:\n    - id: net\n      continueOnError: true\n      run: {{uses: builtin:shell, with: {{script: \"tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '\"}}}}\n    - id: hog\n      continueOnError: true\n      run: {{uses: builtin:shell, with: {{command: [/usr/bin/bash, -c, \"x=$(head -c 200000000 /dev/zero | tr '\\\\0' a)\"]}}}}\n    - id: slow\n      continueOnError: true\n      timeoutSeconds: 30\n      run: {{uses: builtin:shell, with: {{script: \"sleep 20\"}}}}\n"
    );
    let (view, logs) = run(&rt, "limits-1", &pack).await;
    assert_eq!(
        view.status,
        RunStatus::Succeeded,
        "continueOnError: {view:#?}"
    );
    let net: Vec<&str> = logs
        .iter()
        .filter(|l| l.step_id.as_deref() == Some("net") && l.metadata_json.contains("\"stdout\""))
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(net, ["lo"], "only loopback in a sealed step");
    let mechanisms = logs
        .iter()
        .find(|l| l.step_id.as_deref() == Some("net") && l.metadata_json.contains("\"sandbox\""))
        .expect("a sandbox line in the step's log");
    let metadata: serde_json::Value = serde_json::from_str(&mechanisms.metadata_json).unwrap();
    assert_eq!(metadata["sandbox.network"], "netns (loopback only)");
    assert!(
        metadata["sandbox.memory"]
            .as_str()
            .unwrap()
            .contains("32 MiB")
    );
    assert_eq!(reason_of(&view, "hog").as_deref(), Some("memory-limit"));
    // quotaSeconds (5: room for the hog to reach its limit on a loaded machine) is shorter
    // than timeoutSeconds (30).
    assert_eq!(reason_of(&view, "slow").as_deref(), Some("timeout"));
}
