//! `taskrunner backup` while `serve` runs and writes, then `taskrunner restore` into a new data
//! directory and `serve` on it (issue 16, item 2): every run the backup saw is there, runs in
//! flight at the copy (running steps, waiting gates) finish, journals verify, artifacts are
//! byte-identical; runs created after the copy are not there. A damaged or foreign backup is
//! refused, naming what is wrong, and leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

#[path = "support/serve.rs"]
mod serve;

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use serve::{Serve, create, request, status_of, verified_journal, wait_all};
use taskrunner_store::{ArtifactStore, RunStore};
use taskrunner_store_sqlite::{SqliteConfig, SqliteStore};

const DONE_PACK: &str = "apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: backup-done, version: 1.0.0}
spec:
  inputs: [{name: tag, type: string, required: true}]
  failure: {retries: {maxAttempts: 3, backoffSeconds: 0}}
  steps:
    - id: write
      run:
        uses: builtin:shell
        with: {script: 'mkdir -p out && printf \"report %s\" \"$TAG\" > out/r.txt', env: {TAG: '{{ inputs.tag }}'}}
  outputs:
    - {name: report, type: file, path: out/r.txt}
";

const GATED_PACK: &str = "apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: backup-gated, version: 1.0.0}
spec:
  approvals: [{id: go, grants: [packs.approve]}]
  steps:
    - {id: before, run: {uses: builtin:noop}}
    - {id: gate, gate: {approval: {id: go, message: ship it?}}}
    - {id: after, run: {uses: builtin:echo, with: {message: shipped}}}
";

const SLOW_PACK: &str = "apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: backup-slow, version: 1.0.0}
spec:
  # A step running when the copy was taken is `interrupted` in the restored store and retried.
  failure: {retries: {maxAttempts: 3, backoffSeconds: 0}}
  steps:
    - {id: s1, run: {uses: builtin:sleep, with: {seconds: 1}}}
    - {id: s2, run: {uses: builtin:sleep, with: {seconds: 1}}}
    - {id: s3, run: {uses: builtin:echo, with: {message: done}}}
";

fn taskrunner(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskrunner"))
        .args(args)
        .env_remove("TASKRUNNER_DATA_DIR")
        .output()
        .unwrap()
}

fn backup(data_dir: &Path, to: &Path) -> Output {
    taskrunner(&[
        "backup".as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
        "--to".as_ref(),
        to.as_os_str(),
    ])
}

fn restore(from: &Path, data_dir: &Path) -> Output {
    taskrunner(&[
        "restore".as_ref(),
        from.as_os_str(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
    ])
}

fn serve_on(name: &str, data_dir: &Path) -> Serve {
    Serve::start(
        name,
        &[
            OsString::from("--data-dir"),
            data_dir.as_os_str().to_owned(),
        ],
        &[],
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn create_with(addr: std::net::SocketAddr, run_id: &str, manifest: &str, tag: &str) {
    let answer = request(
        addr,
        "POST",
        "/v1/task-runner/runs",
        Some(&json!({"runId": run_id, "manifest": manifest, "inputs": {"tag": tag}})),
    );
    assert_eq!(answer.status, 201, "{run_id}: {answer:?}");
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn a_backup_taken_while_serving_restores_and_finishes_every_run() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let file = tmp.path().join("backup.tar");

    let server = serve_on("backup-a", &a);
    let addr = server.addr;
    let done = ids("done", 5);
    for id in &done {
        create_with(addr, id, DONE_PACK, id);
    }
    wait_all(addr, &done, "Succeeded", 60);
    let gated = ids("gated", 5);
    for id in &gated {
        assert_eq!(create(addr, id, GATED_PACK).status, 201);
    }
    wait_all(addr, &gated, "AwaitingApproval", 60);
    let slow = ids("slow", 5);
    for id in &slow {
        assert_eq!(create(addr, id, SLOW_PACK).status, 201);
    }

    // A writer keeps creating runs while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut created = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let id = format!("w-{}", created.len());
                create_with(addr, &id, DONE_PACK, &id);
                created.push(id);
            }
            created
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = backup(&a, &file);
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(out.status.success(), "backup failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains("runs"),
        "the backup says what it copied: {}",
        stderr(&out)
    );
    assert!(!written.is_empty());
    // The copy was taken while runs were in flight: the slow runs were still running.
    assert!(slow.iter().any(|id| status_of(addr, id) != "Succeeded") || written.len() > 1);
    drop(server); // the machine is lost

    let out = restore(&file, &b);
    assert!(out.status.success(), "restore failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains("every journal verified"),
        "{}",
        stderr(&out)
    );

    let server = serve_on("backup-b", &b);
    let addr = server.addr;
    wait_all(addr, &done, "Succeeded", 30);
    wait_all(addr, &slow, "Succeeded", 60);
    for id in &gated {
        assert_eq!(status_of(addr, id), "AwaitingApproval");
        let state = request(addr, "GET", &format!("/v1/task-runner/runs/{id}"), None);
        let hash = state.body["planHash"].as_str().unwrap().to_owned();
        let decided = request(
            addr,
            "POST",
            &format!("/v1/task-runner/runs/{id}/approvals/go"),
            Some(&json!({"decision": "approved", "planHash": hash, "actorId": "user:alice"})),
        );
        assert!(decided.status < 300, "{id}: {decided:?}");
    }
    wait_all(addr, &gated, "Succeeded", 30);
    // Runs the writer created: those the copy saw finish; the others are unknown.
    let mut seen = Vec::new();
    for id in &written {
        let answer = request(addr, "GET", &format!("/v1/task-runner/runs/{id}"), None);
        match answer.status {
            200 => seen.push(id.clone()),
            404 => {}
            other => panic!("{id}: {other} {answer:?}"),
        }
    }
    wait_all(addr, &seen, "Succeeded", 60);
    // What was acknowledged before the copy started is in it.
    assert!(
        seen.iter().any(|id| id == "w-0"),
        "w-0 was created before the backup"
    );
    drop(server);

    // Every journal verifies; every artifact is byte-identical.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(b.join("store"), SqliteConfig::default()).unwrap();
        for id in done.iter().chain(&gated).chain(&slow).chain(&seen) {
            let (status, _) = verified_journal(&store, id).await;
            assert_eq!(status, "Succeeded", "{id}");
        }
        for id in done.iter().chain(&seen) {
            let artifacts = store.list_artifacts("default", id).await.unwrap();
            let report = artifacts.iter().find(|a| a.name == "report").unwrap();
            let path = report.stored_path.as_deref().unwrap();
            let bytes = store.open_blob(path).await.unwrap();
            assert_eq!(bytes, format!("report {id}").into_bytes(), "{id}");
        }
        assert!(store.get_run("default", "nope").await.unwrap().is_none());
    });
}

#[test]
fn damaged_or_foreign_backups_are_refused_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let file = tmp.path().join("backup.tar");
    {
        let server = serve_on("backup-refusals", &a);
        create_with(server.addr, "r-1", DONE_PACK, "one");
        wait_all(server.addr, &["r-1".to_owned()], "Succeeded", 60);
    }
    let out = backup(&a, &file);
    assert!(out.status.success(), "{}", stderr(&out));

    // Never over an existing file, never into a non-empty directory, never from a non-store.
    let again = backup(&a, &file);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let into_a = restore(&file, &a);
    assert!(!into_a.status.success());
    assert!(stderr(&into_a).contains("not empty"), "{}", stderr(&into_a));
    let not_store = backup(tmp.path(), &tmp.path().join("other.tar"));
    assert!(!not_store.status.success());
    assert!(
        stderr(&not_store).contains("not a taskrunner data directory"),
        "{}",
        stderr(&not_store)
    );

    // One byte changed in the database, then in the artifact blob.
    let bytes = std::fs::read(&file).unwrap();
    let offsets = entry_offsets(&file);
    for (entry, expected) in [
        ("taskrunner.db", "does not match its recorded digest"),
        ("artifacts/", "content does not match its address"),
    ] {
        let (_, start, len) = offsets
            .iter()
            .find(|(name, _, _)| name.starts_with(entry))
            .unwrap_or_else(|| panic!("no {entry} in {offsets:?}"));
        let mut damaged = bytes.clone();
        let at = usize::try_from(start + len / 2).unwrap();
        damaged[at] ^= 0x01;
        let path = tmp.path().join("damaged.tar");
        std::fs::write(&path, &damaged).unwrap();
        let target = tmp.path().join("restored");
        let out = restore(&path, &target);
        assert!(
            !out.status.success(),
            "{entry}: a damaged backup was restored"
        );
        assert!(stderr(&out).contains(expected), "{entry}: {}", stderr(&out));
        assert!(
            !target.exists(),
            "{entry}: a refused restore left {target:?}"
        );
    }

    // A foreign entry (a path outside the store) is refused before anything is written.
    let evil = tmp.path().join("evil.tar");
    {
        let mut builder = tar::Builder::new(std::fs::File::create(&evil).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder
            .append_data(&mut header, "notes.txt", &b"evil"[..])
            .unwrap();
        builder.finish().unwrap();
    }
    let out = restore(&evil, &tmp.path().join("restored"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unexpected entry \"notes.txt\""),
        "{}",
        stderr(&out)
    );
    assert!(!tmp.path().join("restored").exists());
    // Staging directories are cleaned up after refusals.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".taskrunner-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Every entry of the archive: name, byte offset of its data, its size.
fn entry_offsets(file: &Path) -> Vec<(String, u64, u64)> {
    let mut archive = tar::Archive::new(std::fs::File::open(file).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.raw_file_position(),
                e.size(),
            )
        })
        .collect()
}
