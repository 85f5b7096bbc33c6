//! Two `taskrunner serve` processes as replicas on one PostgreSQL database (issue 6, item 4):
//! runs created on one are visible and approvable on the other; one is killed with SIGKILL with
//! many runs in flight and the other finishes all of them (journals verify, no step attempt
//! succeeds twice, no accepted decision is lost); one is stalled with SIGSTOP until its leases
//! expired and, resumed, cannot write over the runs the other took over (fencing); and
//! (issue 10, item 6) a replica stalled while its step runs kills that step's processes as soon
//! as it resumes, while the replica that took the run over waits the lease out before running
//! its own copy: two copies of the step never run at once after the stalled one resumes.
//!
//! Needs PostgreSQL (`TASKRUNNER_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`); without one the tests print that they were
//! skipped — except under `CI=true`, where they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

#[path = "../../../crates/taskrunner-store-postgres/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use taskrunner_engine::{AttemptOutcome, Event};
use taskrunner_store::Store;

/// Lease TTL of the test replicas: takeovers within a few seconds.
const LEASE_TTL_MS: &str = "2000";

struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }
}

/// `taskrunner serve` on a free loopback port as a replica on `db`.
fn replica(db: &support::TestDb, root: &Path, name: &str) -> Replica {
    let data = root.join(name);
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskrunner"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(["--database-url", &db.url])
        .env("TASKRUNNER_ARTIFACT_DIR", root.join("shared-artifacts"))
        .env("TASKRUNNER_LEASE_TTL_MS", LEASE_TTL_MS)
        .env_remove("TASKRUNNER_AUTH")
        .env(
            "RUST_LOG",
            std::env::var("REPLICA_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdout(Stdio::piped())
        .stderr(match std::env::var_os("REPLICA_LOG_DIR") {
            Some(dir) => Stdio::from(
                std::fs::File::create(Path::new(&dir).join(format!(
                    "{}-{name}",
                    root.file_name().unwrap().to_string_lossy()
                )))
                .unwrap(),
            ),
            None => Stdio::null(),
        })
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{name}: no listening line, got {line:?}"));
    Replica { child, addr }
}

/// One HTTP/1.1 request (`Connection: close`); returns status and JSON body.
fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if method == "POST" {
        text.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    text.push_str("\r\n");
    text.push_str(&body);
    stream.write_all(text.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head[9..12].parse().unwrap();
    let mut payload = raw[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        payload = dechunk(&payload);
    }
    let json = serde_json::from_slice(&payload).unwrap_or(Value::Null);
    (status, json)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    out
}

fn create(addr: SocketAddr, run_id: &str, manifest: &str) -> String {
    let (status, body) = request(
        addr,
        "POST",
        "/v1/task-runner/runs",
        Some(&json!({"runId": run_id, "manifest": manifest})),
    );
    assert_eq!(status, 201, "create {run_id}: {body}");
    body["planHash"].as_str().unwrap().to_owned()
}

fn status_of(addr: SocketAddr, run_id: &str) -> String {
    let (status, body) = request(addr, "GET", &format!("/v1/task-runner/runs/{run_id}"), None);
    assert_eq!(status, 200, "{run_id}: {body}");
    body["status"].as_str().unwrap().to_owned()
}

/// Waits (up to `secs`) until every run has the status, as `addr` reports it.
fn wait_all(addr: SocketAddr, ids: &[String], status: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    for id in ids {
        loop {
            let now = status_of(addr, id);
            if now == status {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never reached {status} (is {now})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn approve(addr: SocketAddr, run_id: &str, plan_hash: &str) -> (u16, Value) {
    request(
        addr,
        "POST",
        &format!("/v1/task-runner/runs/{run_id}/approvals/go"),
        Some(&json!({"decision": "approved", "planHash": plan_hash, "actorId": "user:alice"})),
    )
}

/// The run's journal, verified against its plan hash.
async fn journal(store: &Store, run_id: &str) -> Vec<Event> {
    let (_, records) = taskrunner_runtime::verified_journal(&*store.runs, "default", run_id)
        .await
        .unwrap_or_else(|e| panic!("{run_id}: journal does not verify: {e}"));
    records.into_iter().map(|r| r.event).collect()
}

/// Per step, how many attempts succeeded.
fn successes(events: &[Event]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events {
        if let Event::AttemptFinished {
            step_id,
            outcome: AttemptOutcome::Succeeded { .. },
            ..
        } = e
        {
            *out.entry(step_id.clone()).or_insert(0) += 1;
        }
    }
    out
}

struct Setup {
    rt: tokio::runtime::Runtime,
    db: support::TestDb,
    root: PathBuf,
    _dir: tempfile_dir::Dir,
}

mod tempfile_dir {
    /// A temporary directory removed on drop.
    pub(crate) struct Dir(pub(crate) std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A fresh database, or `None` (skip notice printed) without PostgreSQL.
fn setup(name: &str) -> Option<Setup> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if !rt.block_on(support::available()) {
        return None;
    }
    let db = rt.block_on(support::TestDb::create());
    let root = std::env::temp_dir().join(format!(
        "taskrunner-replicas-{name}-{}-{}",
        std::process::id(),
        db.name
    ));
    std::fs::create_dir_all(&root).unwrap();
    Some(Setup {
        rt,
        db,
        _dir: tempfile_dir::Dir(root.clone()),
        root,
    })
}

impl Setup {
    fn reader(&self) -> Store {
        self.rt.block_on(async {
            Store::new(self.db.store(&self.root.join("shared-artifacts")).await)
        })
    }
}

const FLIGHT_PACK: &str = "apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: flight, version: 1.0.0}
spec:
  failure: {retries: {maxAttempts: 10, backoffSeconds: 0}}
  approvals: [{id: go}]
  steps:
    - {id: s1, run: {uses: builtin:noop}}
    - {id: gate, gate: {approval: {id: go}}}
    - {id: nap, run: {uses: builtin:sleep, with: {seconds: 0.5}}}
    - {id: s3, run: {uses: builtin:echo, with: {message: done}}}
";

/// Runs in flight on the killed replica.
const IN_FLIGHT: usize = 200;

#[test]
fn a_replica_killed_with_runs_in_flight_loses_nothing() {
    let Some(setup) = setup("kill") else {
        return;
    };
    let a = replica(&setup.db, &setup.root, "a");
    let b = replica(&setup.db, &setup.root, "b");

    // Created on A, visible and approvable on B.
    let hash = create(a.addr, "visible-1", FLIGHT_PACK);
    wait_all(b.addr, &["visible-1".to_owned()], "AwaitingApproval", 30);
    let (status, body) = approve(b.addr, "visible-1", &hash);
    assert_eq!(
        (status, body),
        (200, json!({"status": "approved", "resumed": true}))
    );
    wait_all(a.addr, &["visible-1".to_owned()], "Succeeded", 30);
    // The same decision again, on either replica: the same answer.
    for r in [&a, &b] {
        let (status, body) = approve(r.addr, "visible-1", &hash);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "approved");
    }

    // 200 runs on A; each is approved (alternately through A and B) and A is killed while
    // they run their steps after the gate.
    let ids: Vec<String> = (0..IN_FLIGHT).map(|i| format!("flight-{i}")).collect();
    for id in &ids {
        create(a.addr, id, FLIGHT_PACK);
    }
    wait_all(b.addr, &ids, "AwaitingApproval", 60);
    for (i, id) in ids.iter().enumerate() {
        let via = if i % 2 == 0 { a.addr } else { b.addr };
        let (status, body) = approve(via, id, &hash);
        assert_eq!(status, 200, "{id}: {body}");
        assert_eq!(body["resumed"], true, "{id}: {body}");
    }
    a.signal(Signal::SIGKILL);
    drop(a);
    wait_all(b.addr, &ids, "Succeeded", 90);

    let store = setup.reader();
    let mut recovered = 0;
    for id in &ids {
        let events = setup.rt.block_on(journal(&store, id));
        let ok = successes(&events);
        for step in ["s1", "nap", "s3"] {
            assert_eq!(
                ok.get(step),
                Some(&1),
                "{id}: {step} succeeded {ok:?}: {events:?}"
            );
        }
        let decided = events
            .iter()
            .filter(|e| matches!(e, Event::ApprovalDecided { .. }))
            .count();
        assert_eq!(decided, 1, "{id}: {events:?}");
        recovered += usize::from(events.contains(&Event::Recovered));
    }
    assert!(recovered > 0, "B took no run over from the killed A");
}

/// The runs whose lease the `taskrunner` process `pid` holds (owner ids are
/// `<host>/<pid>/<start time>`).
async fn runs_held_by(db: &support::TestDb, pid: u32) -> Vec<String> {
    let client = db.connect().await;
    client
        .query(
            "SELECT run_id FROM runs WHERE split_part(lease_owner, '/', 2) = $1 ORDER BY run_id",
            &[&pid.to_string()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

const STALL_PACK: &str = "apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: stall, version: 1.0.0}
spec:
  failure: {retries: {maxAttempts: 5, backoffSeconds: 0}}
  steps:
    - {id: nap, run: {uses: builtin:sleep, with: {seconds: 2}}}
    - {id: after, run: {uses: builtin:echo, with: {message: after}}}
";

#[test]
fn a_stalled_replica_cannot_write_over_a_run_taken_over() {
    let Some(setup) = setup("stall") else {
        return;
    };
    let a = replica(&setup.db, &setup.root, "a");
    let b = replica(&setup.db, &setup.root, "b");
    let ids: Vec<String> = (0..10).map(|i| format!("stall-{i}")).collect();
    for id in &ids {
        create(a.addr, id, STALL_PACK);
    }
    wait_all(b.addr, &ids, "Running", 30);
    // A stalls with its attempts running until its leases expired and B took its runs over.
    let held_by_a = setup.rt.block_on(runs_held_by(&setup.db, a.child.id()));
    assert!(
        !held_by_a.is_empty(),
        "A drives none of the runs it created"
    );
    a.signal(Signal::SIGSTOP);
    let store = setup.reader();
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &held_by_a {
        while !setup
            .rt
            .block_on(journal(&store, id))
            .contains(&Event::Recovered)
        {
            assert!(Instant::now() < deadline, "{id} was not taken over");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // A wakes up: its sleeps are over, but its writes are fenced off.
    a.signal(Signal::SIGCONT);
    wait_all(b.addr, &ids, "Succeeded", 60);
    // Give A every chance to write late.
    std::thread::sleep(Duration::from_millis(1500));
    for id in &ids {
        let events = setup.rt.block_on(journal(&store, id));
        let ok = successes(&events);
        assert_eq!(ok.get("nap"), Some(&1), "{id}: {events:?}");
        assert_eq!(ok.get("after"), Some(&1), "{id}: {events:?}");
        if !held_by_a.contains(id) {
            continue;
        }
        // A's attempt 1 never reached the journal: B recovered it as interrupted and ran
        // attempt 2.
        let finished: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                Event::AttemptFinished {
                    step_id, attempt, ..
                } if step_id == "nap" => Some(*attempt),
                _ => None,
            })
            .collect();
        assert_eq!(finished, vec![2], "{id}: {events:?}");
        assert!(events.contains(&Event::Recovered), "{id}: {events:?}");
    }
    // A is alive and still answers (it dropped the runs, it did not crash).
    assert_eq!(status_of(a.addr, &ids[0]), "Succeeded");
}

/// The step of the stalled-replica test: ignores SIGTERM (so only SIGKILL stops it at once),
/// leaves a marker `copy-<attempt>` holding its pid in its workspace, and sleeps 600 s.
const COPY_PACK: &str = "apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: copies, version: 1.0.0}
spec:
  failure: {retries: {maxAttempts: 5, backoffSeconds: 0}}
  steps:
    - id: work
      run:
        uses: builtin:shell
        with:
          script: |
            trap '' TERM
            echo $$ > \"$TASKRUNNER_WORKSPACE/copy-$TASKRUNNER_ATTEMPT.tmp\"
            mv \"$TASKRUNNER_WORKSPACE/copy-$TASKRUNNER_ATTEMPT.tmp\" \"$TASKRUNNER_WORKSPACE/copy-$TASKRUNNER_ATTEMPT\"
            exec sleep 600
    - {id: after, run: {uses: builtin:noop}}
";

/// Renewal interval of the test replicas: a third of the lease (see `docs/CONFIG.md`).
const RENEW_EVERY: Duration = Duration::from_millis(666);

/// Markers `copy-<attempt>` found under `dir`: attempt → pid.
fn copies(dir: &Path) -> BTreeMap<u32, i32> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(copies(&path));
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(attempt) = name
            .strip_prefix("copy-")
            .and_then(|a| a.parse::<u32>().ok())
            && let Some(pid) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
        {
            out.insert(attempt, pid);
        }
    }
    out
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Kills every copy's process when the test ends, however it ends.
struct KillCopies(PathBuf);

impl Drop for KillCopies {
    fn drop(&mut self) {
        for pid in copies(&self.0).into_values() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

#[test]
fn a_stalled_replica_kills_its_copy_of_the_step_when_it_resumes() {
    let Some(setup) = setup("copies") else {
        return;
    };
    let _kill_copies = KillCopies(setup.root.clone());
    let a = replica(&setup.db, &setup.root, "a");
    let b = replica(&setup.db, &setup.root, "b");
    create(a.addr, "copies-1", COPY_PACK);
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(pid) = copies(&setup.root).get(&1) {
            break *pid;
        }
        assert!(Instant::now() < deadline, "A never started the step");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(alive(first));
    // Whichever replica claimed it first runs copy 1 (usually A, which created it): that one
    // is stalled, the other takes over.
    let (a, b) = if setup.rt.block_on(runs_held_by(&setup.db, a.child.id())) == ["copies-1"] {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(
        setup.rt.block_on(runs_held_by(&setup.db, a.child.id())),
        ["copies-1"]
    );

    // A stalls; its step keeps running (another process group). B takes the run over.
    a.signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    while setup.rt.block_on(runs_held_by(&setup.db, b.child.id())) != ["copies-1"] {
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "B never took the run over"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let taken_over = stopped.elapsed();
    a.signal(Signal::SIGCONT);
    let resumed = Instant::now();

    // From now on: A's copy goes at once, B's copy starts only after, never both at once.
    let mut first_gone: Option<Duration> = None;
    let mut second: Option<(i32, Duration)> = None;
    let mut samples = 0;
    while resumed.elapsed() < Duration::from_secs(30) {
        let now = copies(&setup.root);
        let first_alive = alive(first);
        let second_alive = now.get(&2).is_some_and(|pid| alive(*pid));
        samples += 1;
        assert!(
            !(first_alive && second_alive),
            "two copies of the step run at once {:?} after A resumed: {now:?}",
            resumed.elapsed()
        );
        if !first_alive && first_gone.is_none() {
            first_gone = Some(resumed.elapsed());
        }
        if let Some(pid) = now.get(&2)
            && second_alive
            && second.is_none()
        {
            second = Some((*pid, resumed.elapsed()));
        }
        if first_gone.is_some()
            && second.is_some_and(|(_, at)| resumed.elapsed() > at + RENEW_EVERY)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let first_gone = first_gone.expect("A's copy of the step never went");
    let (second_pid, second_at) = second.expect("B never ran its copy of the step");
    eprintln!(
        "stalled replica: B took over {taken_over:?} after SIGSTOP; A's copy gone \
         {first_gone:?} after SIGCONT; B's copy started {second_at:?} after SIGCONT; \
         {samples} samples, never both"
    );
    assert!(
        first_gone <= RENEW_EVERY,
        "A's copy outlived its resumption by {first_gone:?} (more than one renewal interval)"
    );
    assert!(second_at > first_gone);
    assert!(!copies(&setup.root).contains_key(&3), "a third copy ran");

    // Cancelled on A (B drives it): B's copy goes too.
    let (status, body) = request(
        a.addr,
        "POST",
        "/v1/task-runner/runs/copies-1/cancel",
        Some(&json!({})),
    );
    assert!(status == 200 || status == 202, "cancel: {status} {body}");
    wait_all(b.addr, &["copies-1".to_owned()], "Cancelled", 30);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(second_pid) {
        assert!(
            Instant::now() < deadline,
            "B's copy survived the cancellation"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
