//! `cargo xtask bench postgres`: runtimes as replicas on PostgreSQL (SPEC rule 29), each figure
//! against a baseline measured in the same run on the same server.
//!
//! (a) throughput: 10,000 runs × 10 sequential `builtin:noop` steps driven to completion by
//!     one and by two replicas (two runtimes, each with its own store: pool, group-commit
//!     writer, listener) — journal records (transitions) per second, as a ratio to `pgbench`
//!     running a one-row insert + one-row update transaction (what one transition writes) with
//!     as many clients as the replicas have pooled connections;
//! (b) approval wake-up latency across replicas: a run parked at a gate by replica A is
//!     approved through replica B; the time from the decision call to the next (no-op) step
//!     having run (p50/p99 over 200 decisions).
//!
//! Needs PostgreSQL (`TASKRUNNER_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `pgbench` on the PATH. Scale with
//! `PG_BENCH_RUNS` (default 10000).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failed unwrap is a failed run

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Map;
use taskrunner_engine::{Decision, RunStatus};
use taskrunner_exec::ExecutorRegistry;
use taskrunner_runtime::{
    CreateRun, DecisionRequest, ReplicaConfig, Runtime, RuntimeConfig, StaticSecrets, SystemClock,
};
use taskrunner_store::Store;
use taskrunner_store_postgres::{PostgresConfig, PostgresStore};
use tokio_postgres::NoTls;

const STEPS: usize = 10;
const POOL_SIZE: usize = 8;
const CREATE_CONCURRENCY: usize = 64;
const PGBENCH_SECONDS: &str = "10";
const WAKEUP_SAMPLES: usize = 200;

fn admin_url() -> String {
    std::env::var("TASKRUNNER_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database name replaced.
fn with_dbname(url: &str, dbname: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{}{authority}/{dbname}{query}", &url[..scheme_end])
}

async fn admin() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&admin_url(), NoTls)
        .await
        .expect("PostgreSQL is reachable (TASKRUNNER_TEST_DATABASE_URL)");
    tokio::spawn(connection);
    client
}

/// A fresh database; returns its URL.
async fn fresh_db(name: &str) -> String {
    let admin = admin().await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    with_dbname(&admin_url(), name)
}

async fn drop_db(name: &str) {
    let _ = admin()
        .await
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
}

async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn replica(url: &str, dir: &std::path::Path, name: &str) -> Runtime {
    let mut config = PostgresConfig::new(url, dir.join("artifacts"));
    config.pool_size = POOL_SIZE;
    let store = PostgresStore::connect(config).await.unwrap();
    Runtime::start(
        Store::new(store),
        ExecutorRegistry::with_builtins(),
        Arc::new(SystemClock),
        Arc::new(StaticSecrets::new()),
        RuntimeConfig::new(dir.join(format!("ws-{name}")))
            .with_replica(ReplicaConfig::new(ReplicaConfig::unique_owner(name))),
    )
    .await
    .unwrap()
}

fn pack(steps: usize, gate: bool) -> String {
    let mut out = String::from(
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: pgbench, version: 1.0.0}\nspec:\n  approvals: [{id: go}]\n  steps:\n",
    );
    if gate {
        out.push_str("    - {id: wait, gate: {approval: {id: go}}}\n");
    }
    for i in 0..steps {
        out.push_str(&format!(
            "    - {{id: s{i}, run: {{uses: builtin:noop}}}}\n"
        ));
    }
    out
}

fn create(run_id: String, manifest: &str) -> CreateRun {
    CreateRun {
        tenant: "default".into(),
        run_id: Some(run_id),
        manifest: manifest.to_owned(),
        inputs: Map::new(),
    }
}

/// (a) for `replicas` replicas: journal records per second.
async fn throughput(replicas: usize, runs: usize) -> (f64, u64, Duration) {
    let name = format!("taskrunner_bench_{}_{replicas}", std::process::id());
    let url = fresh_db(&name).await;
    let dir = tempfile::tempdir().unwrap();
    let mut rts = Vec::new();
    for i in 0..replicas {
        rts.push(replica(&url, dir.path(), &format!("r{i}")).await);
    }
    let manifest = pack(STEPS, false);
    let watcher = client(&url).await;
    let started = Instant::now();
    futures::stream::iter(0..runs)
        .map(|i| {
            let rt = rts[i % replicas].clone();
            let request = create(format!("tp-{i}"), &manifest);
            async move { rt.create_run(request).await.unwrap() }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .for_each(|_| async {})
        .await;
    loop {
        let row = watcher
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'Succeeded'), \
                        count(*) FILTER (WHERE status IN ('Failed', 'Cancelled')) FROM runs",
                &[],
            )
            .await
            .unwrap();
        let (done, bad): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(bad, 0, "runs failed");
        if done as usize == runs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let records: i64 = watcher
        .query_one(
            "SELECT coalesce(sum(journal_len), 0)::bigint FROM runs",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for rt in &rts {
        rt.shutdown_gracefully().await;
    }
    drop(rts);
    drop(watcher);
    drop_db(&name).await;
    let records = records as u64;
    (records as f64 / elapsed.as_secs_f64(), records, elapsed)
}

/// `pgbench` with `clients` clients: one-row insert + one-row update per transaction.
async fn pgbench(clients: usize) -> f64 {
    let name = format!("taskrunner_pgbench_{}_{clients}", std::process::id());
    let url = fresh_db(&name).await;
    let c = client(&url).await;
    c.batch_execute(
        "CREATE TABLE bench_runs (id int PRIMARY KEY, len bigint NOT NULL DEFAULT 0, \
             status text NOT NULL DEFAULT 'Running', updated_at_ms bigint NOT NULL DEFAULT 0); \
         CREATE TABLE bench_journal (id int NOT NULL, seq bigint NOT NULL, at_ms bigint NOT NULL, \
             payload text NOT NULL, prev_hash text NOT NULL, hash text NOT NULL); \
         CREATE INDEX ON bench_journal (id, seq); \
         INSERT INTO bench_runs (id) SELECT g FROM generate_series(1, 10000) g;",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("transition.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 10000)\n\
         BEGIN;\n\
         INSERT INTO bench_journal VALUES (:id, 1, 0, '{\"type\":\"attemptFinished\",\"stepId\":\"s1\"}', \
           'sha256:0000000000000000000000000000000000000000000000000000000000000000', \
           'sha256:1111111111111111111111111111111111111111111111111111111111111111');\n\
         UPDATE bench_runs SET len = len + 1, status = 'Running', updated_at_ms = 1 WHERE id = :id;\n\
         COMMIT;\n",
    )
    .unwrap();
    let output = std::process::Command::new("pgbench")
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
        ])
        .arg(PGBENCH_SECONDS)
        .arg("-f")
        .arg(&script)
        .arg(&url)
        .output()
        .expect("pgbench is on the PATH (it comes with PostgreSQL)");
    drop(c);
    drop_db(&name).await;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no tps in pgbench output: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

/// (b): decision through B on runs A parked; returns sorted latencies.
async fn wakeup_latency() -> Vec<Duration> {
    let name = format!("taskrunner_bench_{}_wakeup", std::process::id());
    let url = fresh_db(&name).await;
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&url, dir.path(), "a").await;
    let b = replica(&url, dir.path(), "b").await;
    let watcher = client(&url).await;
    let manifest = pack(1, true);
    let mut hashes = Vec::new();
    for i in 0..WAKEUP_SAMPLES {
        hashes.push(
            a.create_run(create(format!("wk-{i}"), &manifest))
                .await
                .unwrap()
                .plan_hash,
        );
    }
    // Every run parked at its gate (lease released).
    loop {
        let parked: i64 = watcher
            .query_one(
                "SELECT count(*) FROM runs WHERE status = 'AwaitingApproval' \
                 AND lease_owner IS NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if parked as usize == WAKEUP_SAMPLES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut latencies = Vec::new();
    for (i, hash) in hashes.iter().enumerate() {
        let run_id = format!("wk-{i}");
        let started = Instant::now();
        b.decide(
            "default",
            &run_id,
            "go",
            DecisionRequest {
                decision: Decision::Approved,
                plan_hash: hash.clone(),
                actor: "bench".into(),
                summary: None,
                caller_scopes: None,
            },
        )
        .await
        .unwrap();
        let done = b.wait_settled("default", &run_id).await.unwrap();
        latencies.push(started.elapsed());
        assert_eq!(done.status, RunStatus::Succeeded);
    }
    a.shutdown_gracefully().await;
    b.shutdown_gracefully().await;
    drop((a, b, watcher));
    drop_db(&name).await;
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let runs: usize = std::env::var("PG_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    println!("PostgreSQL replicas: {runs} runs x {STEPS} no-op steps");
    for replicas in [1, 2] {
        let (rate, records, elapsed) = throughput(replicas, runs).await;
        let clients = POOL_SIZE * replicas;
        let baseline = pgbench(clients).await;
        println!(
            "  {replicas} replica(s): {records} transitions in {:.1} s = {rate:.0}/s; \
             pgbench ({clients} clients, insert+update per transaction) {baseline:.0} tps; \
             ratio {:.2} (goal >= 0.3)",
            elapsed.as_secs_f64(),
            rate / baseline
        );
    }
    let latencies = wakeup_latency().await;
    println!(
        "  approval wake-up across replicas (decide on B for a run A parked -> next step done), \
         {} samples: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal p99 <= 20 ms)",
        latencies.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    );
}
