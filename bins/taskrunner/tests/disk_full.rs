//! Disk full under `taskrunner serve` on SQLite (issue 10, item 7): the data directory is a
//! small tmpfs made by the test; 50 runs are in flight when a filler file takes the last byte.
//! The server keeps answering reads, refuses creates with 503 `storage_full` and `Retry-After`,
//! and once the filler is deleted every run finishes: journals verify against the stored head,
//! no step attempt succeeds twice, no acknowledged run or transition is lost.
//!
//! Needs root (to mount); skipped with a notice otherwise — except under `CI=true` (CI runs as
//! root), where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

#[path = "support/serve.rs"]
mod serve;

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serve::{Serve, create, request, skip, successes, verified_journal, wait_all};
use taskrunner_store_sqlite::{SqliteConfig, SqliteStore};

/// Size of the test's file system: room for the store of a few hundred runs, small enough to
/// fill at once.
const FS_SIZE: &str = "48m";
/// Runs in flight when the disk fills.
const RUNS: usize = 50;

const PACK: &str = "apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: diskfull, version: 1.0.0}
spec:
  steps:
    - {id: s1, run: {uses: builtin:sleep, with: {seconds: 1}}}
    - {id: s2, run: {uses: builtin:sleep, with: {seconds: 1}}}
    - {id: s3, run: {uses: builtin:sleep, with: {seconds: 1}}}
    - {id: s4, run: {uses: builtin:echo, with: {message: done}}}
";

/// A tmpfs mounted by the test, unmounted (lazily, so a process still in it cannot keep it)
/// and removed on drop.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `size` on a fresh directory, or says why it cannot.
    fn tmpfs(size: &str) -> Result<Mount, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not root: mounting a size-limited tmpfs needs root".into());
        }
        let dir = std::env::temp_dir().join(format!("taskrunner-diskfull-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!(
                "mount -t tmpfs was refused: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount(dir))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `path` until the file system has no byte left; returns how much it took.
fn fill(path: &Path) -> (File, u64) {
    let mut file = File::create(path).unwrap();
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 1] {
        let block = vec![0u8; chunk];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) => {
                    assert_eq!(
                        e.kind(),
                        std::io::ErrorKind::StorageFull,
                        "filling the disk: {e}"
                    );
                    break;
                }
            }
        }
    }
    (file, written)
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_loses_nothing() {
    let mount = match Mount::tmpfs(FS_SIZE) {
        Ok(m) => m,
        Err(why) => return skip(&format!("disk-full test: {why}")),
    };
    let started = Instant::now();
    let data = mount.0.join("data");
    let server = Serve::start(
        "diskfull",
        &[OsString::from("--data-dir"), data.clone().into_os_string()],
        &[],
    );
    let addr = server.addr;

    let mut ids: Vec<String> = (0..RUNS).map(|i| format!("df-{i}")).collect();
    for id in &ids {
        let made = create(addr, id, PACK);
        assert_eq!(made.status, 201, "{id}: {made:?}");
    }

    // The disk fills while the runs sleep in their steps.
    let filler_path = mount.0.join("filler");
    let (filler, filled) = fill(&filler_path);
    eprintln!("filled {} MiB after {:?}", filled >> 20, started.elapsed());

    // Creates are refused with 503 storage_full once the store's files cannot grow (a create
    // may still fit into room SQLite already has). Whatever was acknowledged must finish.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = None;
    let mut n = 0;
    while refused.is_none() {
        assert!(
            Instant::now() < deadline,
            "no create was refused on a full disk"
        );
        let id = format!("late-{n}");
        n += 1;
        let answer = create(addr, &id, PACK);
        match answer.status {
            201 => ids.push(id),
            503 => refused = Some(answer),
            _ => panic!("a create on a full disk answered {answer:?}"),
        }
    }
    let refused = refused.unwrap();
    assert_eq!(refused.code(), "storage_full", "{refused:?}");
    let retry_after: u64 = refused.headers["retry-after"].parse().unwrap();
    assert!(retry_after > 0, "{refused:?}");
    eprintln!(
        "first create refused after {:?} ({} late creates acknowledged)",
        started.elapsed(),
        ids.len() - RUNS
    );

    // While the disk stays full (long enough for every run's current step to end and its
    // transition to wait), reads answer.
    let full_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < full_until {
        for id in ids.iter().step_by(7) {
            let answer = request(addr, "GET", &format!("/v1/task-runner/runs/{id}"), None);
            assert_eq!(answer.status, 200, "{id}: {answer:?}");
        }
        let list = request(addr, "GET", "/v1/task-runner/runs?limit=1000", None);
        assert_eq!(list.status, 200, "{list:?}");
        assert_eq!(list.body["runs"].as_array().unwrap().len(), ids.len());
        let logs = request(addr, "GET", "/v1/task-runner/runs/df-0/logs", None);
        assert_eq!(logs.status, 200, "{logs:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let again = create(addr, "refused-again", PACK);
    assert!(again.status == 503 || again.status == 201, "{again:?}");
    if again.status == 201 {
        ids.push("refused-again".into());
    }

    // The runs' transitions waited: without them every run would be done by now (three
    // one-second steps, the disk full for longer than that).
    let done = ids
        .iter()
        .filter(|id| serve::status_of(addr, id) == "Succeeded")
        .count();
    assert!(done < ids.len(), "every run finished on a full disk");

    // Space returns: every run finishes.
    drop(filler);
    std::fs::remove_file(&filler_path).unwrap();
    let freed = Instant::now();
    wait_all(addr, &ids, "Succeeded", 120);
    eprintln!(
        "{} runs finished {:?} after space returned",
        ids.len(),
        freed.elapsed()
    );
    let made = create(addr, "after", PACK);
    assert_eq!(made.status, 201, "{made:?}");
    drop(server);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = SqliteStore::open(data.join("store"), SqliteConfig::default()).unwrap();
    for id in &ids {
        let (status, events) = rt.block_on(verified_journal(&store, id));
        assert_eq!(status, "Succeeded", "{id}");
        let ok = successes(&events);
        for step in ["s1", "s2", "s3", "s4"] {
            assert_eq!(ok.get(step), Some(&1), "{id}: {step}: {events:?}");
        }
    }
    eprintln!("disk-full test took {:?}", started.elapsed());
    drop(store);
    drop(mount);
}
