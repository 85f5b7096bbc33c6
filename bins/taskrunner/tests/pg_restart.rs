//! PostgreSQL restarted under two `taskrunner serve` replicas with 200 runs in flight (issue 10,
//! item 7). The test starts a private server (never the machine's shared cluster), two replicas
//! on it, 200 runs whose shell steps take a while (150 held in their first step until the test
//! releases them, 50 behind an approval gate), and stops the server with `pg_ctl -m immediate`
//! (a crash) right after releasing half the held steps. While it is down both replicas keep
//! answering: reads 200 or 503 `storage_unavailable` with `Retry-After`, creates and decisions
//! 503, never a 500, never a hang. The server comes back and every run finishes; after a
//! second, clean (`fast`) restart both replicas reconnect (each creates and finishes a run).
//! Then every journal verifies against the stored head, every step's output line is in the log,
//! each step was executed exactly once (each shell step appends a line to `<step>.count` in its
//! run's workspace, shared by the replicas; the journal has one successful attempt, attempt 1,
//! per step), and each acknowledged decision is in the journal.
//!
//! Exactly once holds because the outage is shorter than what a lease survives without renewal
//! (10 s leases renewed every 3 s, and again every 250 ms after a failed renewal: a renewal
//! that succeeds within 7 s of the last one keeps the leases, so an outage of up to 4 s is
//! always survived). A longer outage makes replicas stop their drivers and others take the runs
//! over (at least once, fenced: `tests/replicas.rs`).
//!
//! Needs the PostgreSQL server binaries (`/usr/lib/postgresql/*/bin` or `TASKRUNNER_PG_BIN`);
//! skipped with a notice without them — except under `CI=true`, where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

#[path = "support/serve.rs"]
mod serve;

#[path = "../../../crates/taskrunner-store-postgres/tests/support/private_pg.rs"]
mod private_pg;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use private_pg::PrivatePg;
use serde_json::json;
use serve::{Answer, Serve, skip, successes, try_request, verified_journal};
use taskrunner_engine::Event;
use taskrunner_store::{LOGS_LIMIT_MAX, LogStore};
use taskrunner_store_postgres::{PostgresConfig, PostgresStore};

/// Runs in flight when the database goes away.
const RUNS: usize = 200;
/// Of which behind an approval gate.
const GATED: usize = 50;
/// Gated runs approved before the database goes away.
const APPROVED_BEFORE: usize = 25;
/// How long the database stays down (at least; `pg_ctl start` and the last round of requests
/// add to it). Leases are kept when a renewal succeeds within `LEASE_TTL_MS` less one renewal
/// interval (3 s) of the last one, which may have been up to 3 s before the crash: with the
/// default lease an outage must end within 4 s for exactly-once.
const DOWNTIME: Duration = Duration::from_secs(2);
/// The replicas' lease length (the default, spelled out: the outage is measured against it).
const LEASE_TTL_MS: &str = "10000";
/// The slowest answer so far, in ms.
static SLOWEST_MS: AtomicU64 = AtomicU64::new(0);

/// Longest any request may take while the database is down or restarting.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

fn script(step: &str, seconds: &str) -> String {
    format!("echo executed >> {step}.count; sleep {seconds}; echo out-{step}")
}

/// A step that runs until the test puts a `release` file into its run's workspace.
fn held_script(step: &str) -> String {
    format!(
        "echo executed >> {step}.count; while [ ! -e release ]; do sleep 0.2; done; echo out-{step}"
    )
}

fn plain_pack() -> String {
    format!(
        "apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: restart-plain, version: 1.0.0}}
spec:
  steps:
    - {{id: s1, run: {{uses: builtin:shell, with: {{script: '{}'}}}}}}
    - {{id: s2, run: {{uses: builtin:shell, with: {{script: '{}'}}}}}}
    - {{id: s3, run: {{uses: builtin:shell, with: {{script: '{}'}}}}}}
",
        held_script("s1"),
        script("s2", "1"),
        script("s3", "0.1"),
    )
}

fn gated_pack() -> String {
    format!(
        "apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: restart-gated, version: 1.0.0}}
spec:
  approvals: [{{id: go}}]
  steps:
    - {{id: s1, run: {{uses: builtin:shell, with: {{script: '{}'}}}}}}
    - {{id: gate, gate: {{approval: {{id: go}}}}}}
    - {{id: s2, run: {{uses: builtin:shell, with: {{script: '{}'}}}}}}
",
        script("s1", "0.1"),
        script("s2", "2"),
    )
}

fn run_path(id: &str) -> String {
    format!("/v1/task-runner/runs/{id}")
}

/// A request that must be answered (not hang, not drop the connection) within
/// [`ANSWER_WITHIN`] and never with a 500; 503s must say `storage_unavailable` and carry
/// `Retry-After`.
fn answered(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Answer {
    let started = Instant::now();
    let answer = try_request(addr, method, path, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: no answer: {e}"));
    let took = started.elapsed();
    SLOWEST_MS.fetch_max(took.as_millis() as u64, Ordering::Relaxed);
    assert!(took < ANSWER_WITHIN, "{method} {path} took {took:?}");
    assert!(
        answer.status < 500 || answer.status == 503,
        "{method} {path}: {answer:?}"
    );
    if answer.status == 503 && path.starts_with("/v1/") {
        assert_eq!(
            answer.code(),
            "storage_unavailable",
            "{method} {path}: {answer:?}"
        );
        let retry: u64 = answer.headers["retry-after"].parse().unwrap();
        assert!(retry > 0, "{answer:?}");
    }
    answer
}

/// Waits (up to `secs`) until every run has `status` as `addr` reports it; 503s are waited out.
fn wait_all(addr: SocketAddr, ids: &[String], status: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    for id in ids {
        loop {
            let answer = answered(addr, "GET", &run_path(id), None);
            let now = answer.body["status"].as_str().unwrap_or("").to_owned();
            if answer.status == 200 && now == status {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never reached {status} (is {answer:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn approve(addr: SocketAddr, id: &str, plan_hash: &str) -> Answer {
    answered(
        addr,
        "POST",
        &format!("{}/approvals/go", run_path(id)),
        Some(&json!({"decision": "approved", "planHash": plan_hash, "actorId": "user:alice"})),
    )
}

/// Lets the held first step of each of these runs end.
fn release(workspaces: &Path, ids: &[String]) {
    for id in ids {
        std::fs::write(workspaces.join("default").join(id).join("release"), b"").unwrap();
    }
}

/// Lines in `<workspace>/<step>.count`: how often the step was executed.
fn executions(workspaces: &Path, id: &str, step: &str) -> usize {
    std::fs::read_to_string(
        workspaces
            .join("default")
            .join(id)
            .join(format!("{step}.count")),
    )
    .map(|s| s.lines().count())
    .unwrap_or(0)
}

fn replica(name: &str, root: &Path, url: &str) -> Serve {
    Serve::start(
        name,
        &[
            OsString::from("--data-dir"),
            root.join(name).into_os_string(),
            OsString::from("--database-url"),
            OsString::from(url),
        ],
        &[
            (
                "TASKRUNNER_ARTIFACT_DIR",
                root.join("artifacts").into_os_string(),
            ),
            (
                "TASKRUNNER_WORKSPACE_ROOT",
                root.join("workspaces").into_os_string(),
            ),
            ("TASKRUNNER_LEASE_TTL_MS", OsString::from(LEASE_TTL_MS)),
        ],
    )
}

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn postgres_restarted_under_two_replicas_loses_nothing_and_runs_nothing_twice() {
    let pg = match PrivatePg::init("restart") {
        Ok(pg) => pg,
        Err(why) => return skip(&format!("PostgreSQL restart test: {why}")),
    };
    pg.start().unwrap();
    let started = Instant::now();
    let root = std::env::temp_dir().join(format!("taskrunner-pg-restart-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let _root = Dir(root.clone());
    let url = pg.url("postgres", "");
    let a = replica("a", &root, &url);
    let b = replica("b", &root, &url);
    let replicas = [a.addr, b.addr];

    // 50 gated runs, then 150 plain ones, created alternately on A and B.
    let mut ids = Vec::new();
    let mut gated = Vec::new();
    let mut hash = String::new();
    for i in 0..RUNS {
        let (id, pack) = if i < GATED {
            (format!("gated-{i}"), gated_pack())
        } else {
            (format!("plain-{i}"), plain_pack())
        };
        let made = answered(
            replicas[i % 2],
            "POST",
            "/v1/task-runner/runs",
            Some(&json!({"runId": id, "manifest": pack})),
        );
        assert_eq!(made.status, 201, "{id}: {made:?}");
        if i < GATED {
            hash = made.body["planHash"].as_str().unwrap().to_owned();
            gated.push(id.clone());
        }
        ids.push(id);
    }
    let workspaces = root.join("workspaces");
    let plain: Vec<String> = ids[GATED..].to_vec();
    let deadline = Instant::now() + Duration::from_secs(120);
    while plain
        .iter()
        .any(|id| executions(&workspaces, id, "s1") == 0)
    {
        assert!(
            Instant::now() < deadline,
            "the plain runs did not all start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_all(b.addr, &gated, "AwaitingApproval", 120);
    let mut acknowledged = Vec::new();
    for (i, id) in gated.iter().take(APPROVED_BEFORE).enumerate() {
        let answer = approve(replicas[i % 2], id, &hash);
        assert_eq!(answer.status, 200, "{id}: {answer:?}");
        acknowledged.push(id.clone());
    }
    eprintln!(
        "{RUNS} runs created, {APPROVED_BEFORE} approved after {:?}",
        started.elapsed()
    );

    // The database crashes while steps run.
    let running = ids
        .iter()
        .filter(|id| {
            let a = answered(a.addr, "GET", &run_path(id), None);
            a.body["status"] == "Running"
        })
        .count();
    // Half the held steps end just before the crash: their transitions wait for the database.
    let (early, late) = plain.split_at(plain.len() / 2);
    release(&workspaces, early);
    std::thread::sleep(Duration::from_millis(300));
    pg.stop("immediate").unwrap();
    let down = Instant::now();
    eprintln!("database stopped with {running} runs Running");

    // Down: both replicas answer.
    SLOWEST_MS.store(0, Ordering::Relaxed);
    let (mut reads_ok, mut reads_503, mut writes_503, mut requests) = (0, 0, 0, 0);
    let mut n = 0;
    while down.elapsed() < DOWNTIME {
        for (r, addr) in replicas.iter().enumerate() {
            if down.elapsed() >= DOWNTIME {
                break;
            }
            let health = answered(*addr, "GET", "/healthz", None);
            assert_eq!(health.status, 200, "{health:?}");
            let ready = answered(*addr, "GET", "/readyz", None);
            assert!(matches!(ready.status, 200 | 503), "{ready:?}");
            let id = &ids[(n * 7 + r) % RUNS];
            let read = answered(*addr, "GET", &run_path(id), None);
            let list = answered(*addr, "GET", "/v1/task-runner/runs?limit=50", None);
            for x in [&read, &list] {
                match x.status {
                    200 => reads_ok += 1,
                    503 => reads_503 += 1,
                    _ => panic!("a read while the database is down: {x:?}"),
                }
            }
            let made = answered(
                *addr,
                "POST",
                "/v1/task-runner/runs",
                Some(&json!({"runId": format!("down-{n}-{r}"), "manifest": plain_pack()})),
            );
            assert_eq!(
                made.status, 503,
                "a create while the database is down: {made:?}"
            );
            writes_503 += 1;
            let gate_id = &gated[APPROVED_BEFORE + (n % (GATED - APPROVED_BEFORE))];
            let decided = approve(*addr, gate_id, &hash);
            match decided.status {
                200 => acknowledged.push(gate_id.clone()),
                503 => writes_503 += 1,
                _ => panic!("a decision while the database is down: {decided:?}"),
            }
            requests += 6;
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    pg.start().unwrap();
    let downtime = down.elapsed();
    let back = Instant::now();
    eprintln!(
        "database down {downtime:?}: {requests} requests answered ({reads_ok} reads 200, \
         {reads_503} reads 503, {writes_503} writes 503), the slowest in {} ms",
        SLOWEST_MS.load(Ordering::Relaxed)
    );

    // Up again: the other held steps end, the remaining decisions are taken (503s while the pools reconnect are waited
    // out), and every run finishes.
    release(&workspaces, late);
    for (i, id) in gated.iter().enumerate().skip(APPROVED_BEFORE) {
        if acknowledged.contains(id) {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = approve(replicas[i % 2], id, &hash);
            if answer.status == 200 {
                acknowledged.push(id.clone());
                break;
            }
            assert_eq!(answer.status, 503, "{id}: {answer:?}");
            assert!(Instant::now() < deadline, "{id}: still refused: {answer:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for addr in replicas {
        wait_all(addr, &ids, "Succeeded", 300);
    }
    let finished = back.elapsed();
    eprintln!("every run Succeeded {finished:?} after the database came back");

    // A clean shutdown too (`fast`: sessions ended with 57P01): refused while down, then both
    // replicas reconnect — each takes a new run and finishes it.
    pg.stop("fast").unwrap();
    for (r, addr) in replicas.iter().enumerate() {
        let made = answered(
            *addr,
            "POST",
            "/v1/task-runner/runs",
            Some(&json!({"runId": format!("fast-down-{r}"), "manifest": plain_pack()})),
        );
        assert_eq!(
            made.status, 503,
            "a create while the database is down: {made:?}"
        );
        assert_eq!(answered(*addr, "GET", "/readyz", None).status, 503);
    }
    std::thread::sleep(Duration::from_secs(1));
    pg.start().unwrap();
    let mut after = Vec::new();
    for (r, addr) in replicas.iter().enumerate() {
        let id = format!("after-{r}");
        // The first requests may still meet the pool's connections from before the restart.
        let deadline = Instant::now() + Duration::from_secs(30);
        while answered(*addr, "GET", "/readyz", None).status != 200 {
            assert!(Instant::now() < deadline, "replica {r} did not reconnect");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut refused = false;
        loop {
            let made = answered(
                *addr,
                "POST",
                "/v1/task-runner/runs",
                Some(&json!({"runId": id, "manifest": plain_pack()})),
            );
            match made.status {
                201 => break,
                // Refused, yet stored (a connection lost during the commit).
                409 if refused => break,
                503 if Instant::now() < deadline => refused = true,
                _ => panic!("create after the restart: {made:?}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        after.push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while after
        .iter()
        .any(|id| executions(&workspaces, id, "s1") == 0)
    {
        assert!(
            Instant::now() < deadline,
            "the runs created after the restart did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    release(&workspaces, &after);
    wait_all(a.addr, &after, "Succeeded", 120);
    drop(a);
    drop(b);

    // Nothing lost, nothing run twice.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(PostgresStore::connect(PostgresConfig {
            listen: false,
            ..PostgresConfig::new(url.clone(), root.join("artifacts"))
        }))
        .unwrap();
    let mut recovered = 0;
    let mut repeated_lines = 0;
    for id in ids.iter().chain(&after) {
        let (status, events) = rt.block_on(verified_journal(&store, id));
        assert_eq!(status, "Succeeded", "{id}");
        let steps: &[&str] = if id.starts_with("gated") {
            &["s1", "s2"]
        } else {
            &["s1", "s2", "s3"]
        };
        let ok = successes(&events);
        for step in steps {
            assert_eq!(ok.get(*step), Some(&1), "{id}: {step}: {events:?}");
            assert_eq!(
                executions(&workspaces, id, step),
                1,
                "{id}: {step} executed"
            );
        }
        // Each step's output line is in the log (none dropped while the database was away).
        let logs = rt
            .block_on(store.logs("default", id, 0, LOGS_LIMIT_MAX))
            .unwrap();
        for step in steps {
            let lines = logs
                .iter()
                .filter(|l| l.event_type == "step.output" && l.message == format!("out-{step}"))
                .count();
            assert!(lines >= 1, "{id}: the output of {step} is lost: {logs:#?}");
            repeated_lines += lines - 1;
        }
        for e in &events {
            if let Event::AttemptFinished {
                step_id, attempt, ..
            } = e
            {
                assert_eq!(
                    *attempt, 1,
                    "{id}: {step_id} needed another attempt: {events:?}"
                );
            }
        }
        let decided = events
            .iter()
            .filter(|e| matches!(e, Event::ApprovalDecided { .. }))
            .count();
        let want = usize::from(acknowledged.contains(id));
        assert_eq!(decided, want, "{id}: decisions: {events:?}");
        recovered += usize::from(events.contains(&Event::Recovered));
    }
    assert_eq!(acknowledged.len(), GATED);
    eprintln!(
        "figures: {RUNS} runs ({GATED} gated), {running} Running at the crash, database down \
         {downtime:?}, all finished {finished:?} after it came back, {recovered} runs with a \
         Recovered record, {repeated_lines} output lines stored twice, whole test {:?}",
        started.elapsed()
    );
    drop(store);
    drop(pg);
}
