//! Secrets and what a run publishes (rule 19, issue 10): a file output holding a secret value is
//! refused with `secret-in-artifact` (its bytes never reach the data directory), and output
//! lines with overlapping secrets leave no character of either.
//!
//! Real time: the steps are real processes (`builtin:shell`), which tokio's paused clock cannot
//! see working (it would jump to the next timer meanwhile). The script's `sleep 0.1` is the
//! process's, not the test's: it splits a line across two reads of the pipe.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};
use taskrunner_engine::RunStatus;
use taskrunner_exec::ExecutorRegistry;
use taskrunner_runtime::{CreateRun, Runtime, RuntimeConfig, StaticSecrets, SystemClock};
use taskrunner_store::{ArtifactStore, Store};
use taskrunner_store_sqlite::{SqliteConfig, SqliteStore};

const HEADER: &str =
    "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: art, version: 1.0.0}\n";
const TOKEN: &str = "tok-6f1d2c9a";

async fn start(dir: &Path, secrets: StaticSecrets) -> Runtime {
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

async fn run(rt: &Runtime, id: &str, pack: &str) -> taskrunner_engine::RunView {
    rt.create_run(CreateRun {
        tenant: "default".into(),
        run_id: Some(id.into()),
        manifest: pack.into(),
        inputs: Map::new(),
    })
    .await
    .unwrap();
    rt.wait_settled("default", id).await.unwrap()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_file_output_holding_a_secret_is_refused_and_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start(dir.path(), StaticSecrets::new().with("token", TOKEN)).await;
    // A binary file with the secret buried after 100 KiB, a text file with it on a line, and
    // a clean file that is captured as before.
    let pack = format!(
        "{HEADER}spec:\n  secrets: [{{name: token}}]\n  outputs:\n    - {{name: bin, type: file, path: out.bin}}\n    - {{name: text, type: file, path: out.txt}}\n    - {{name: clean, type: file, path: clean.txt}}\n  steps:\n    - id: write\n      run:\n        uses: builtin:shell\n        with:\n          env: {{T: \"{{{{ secrets.token }}}}\"}}\n          script: |\n            head -c 102400 /dev/zero > out.bin\n            printf '%s' \"$T\" >> out.bin\n            printf '\\377\\376' >> out.bin\n            echo \"token: $T\" > out.txt\n            echo fine > clean.txt\n"
    );
    let view = run(&rt, "art-1", &pack).await;
    assert_eq!(
        view.status,
        RunStatus::Succeeded,
        "a refused artifact never changes the run's status (rule 20): {view:#?}"
    );

    let store = SqliteStore::open(dir.path().join("data"), SqliteConfig::default()).unwrap();
    let artifacts = store.list_artifacts("default", "art-1").await.unwrap();
    let by_name = |n: &str| artifacts.iter().find(|a| a.name == n).unwrap().clone();
    for name in ["bin", "text"] {
        let a = by_name(name);
        assert_eq!(a.status, "failed", "{a:?}");
        let notes = a.notes.as_deref().unwrap_or("");
        assert!(notes.starts_with("secret-in-artifact: "), "{a:?}");
        assert!(a.stored_path.is_none() && a.sha256.is_none(), "{a:?}");
    }
    assert_eq!(by_name("clean").status, "captured");
    assert_eq!(by_name("clean").size_bytes, Some(5));

    let logs = rt.logs("default", "art-1", 0, 1000).await.unwrap();
    let refused: Vec<Value> = logs
        .iter()
        .filter(|l| l.event_type == "artifact.failed")
        .map(|l| serde_json::from_str(&l.metadata_json).unwrap())
        .collect();
    assert_eq!(refused.len(), 2, "{logs:?}");
    for metadata in &refused {
        let reason = metadata["reason"].as_str().unwrap();
        assert!(reason.starts_with("secret-in-artifact"), "{metadata}");
    }

    // Nothing in the data directory holds the secret: not a blob, not the database.
    let data = files(&dir.path().join("data"));
    assert!(!data.is_empty());
    for file in data {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "{} holds the secret",
            file.display()
        );
    }
}

#[tokio::test]
async fn overlapping_secrets_leave_no_character_in_logs_outputs_or_state() {
    let dir = tempfile::tempdir().unwrap();
    // Issue 10: `abcdefg` with secrets `bcdefg` and `abcd` was published as `***efg`.
    let secrets = StaticSecrets::new()
        .with("one", "bcdefg")
        .with("two", "abcd");
    let rt = start(dir.path(), secrets).await;
    let pack = format!(
        "{HEADER}spec:\n  secrets: [{{name: one}}, {{name: two}}]\n  outputs:\n    - {{name: value, type: object, expression: steps.say.outputs.v}}\n  steps:\n    - id: say\n      run:\n        uses: builtin:shell\n        with:\n          env: {{A: \"{{{{ secrets.two }}}}\", B: \"{{{{ secrets.one }}}}\"}}\n          script: |\n            printf 'x%s' \"$A\"; sleep 0.1; printf '%s y\\n' \"${{B#bcd}}\"\n            echo \"v=${{A}}efg\" >> \"$TASKRUNNER_OUTPUT\"\n"
    );
    let view = run(&rt, "overlap-1", &pack).await;
    assert_eq!(view.status, RunStatus::Succeeded, "{view:#?}");
    let logs = rt.logs("default", "overlap-1", 0, 1000).await.unwrap();
    let lines: Vec<&str> = logs
        .iter()
        .filter(|l| l.event_type == "step.output" && l.metadata_json.contains("\"stdout\""))
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(lines, ["x*** y"], "printed in two writes");
    let state = serde_json::to_string(&view).unwrap();
    assert!(!state.contains("efg") && !state.contains("abcd"), "{state}");
    let store = SqliteStore::open(dir.path().join("data"), SqliteConfig::default()).unwrap();
    let artifacts = store.list_artifacts("default", "overlap-1").await.unwrap();
    let value = artifacts.iter().find(|a| a.name == "value").unwrap();
    assert_eq!(value.expression_json.as_deref(), Some("\"***\""));
}
