//! `cargo xtask bench engine`: the execution path measured end to end on the real SQLite store
//! (`synchronous=FULL`), each figure against a baseline measured in the same run.
//!
//! (a) throughput: 10,000 runs × 10 sequential `builtin:noop` steps driven to completion —
//!     transitions per second, as a ratio to a raw SQLite loop committing one row per
//!     transaction on the same disk;
//! (b) sequential orchestration overhead per no-op step (p50/p99): the time from one step's
//!     executor call to the next one's, in one run of 300 steps (FULL and NORMAL);
//! (c) memory per parked run: resident memory added by 5,000 runs waiting at a gate.
//!
//! Scale with `ENGINE_BENCH_RUNS` (default 10000).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::Map;
use taskrunner_engine::RunStatus;
use taskrunner_exec::{ExecOutcome, ExecRequest, Executor, ExecutorRegistry, OutputLine};
use taskrunner_runtime::{CreateRun, Runtime, RuntimeConfig, StaticSecrets, SystemClock};
use taskrunner_store::Store;
use taskrunner_store_sqlite::{SqliteConfig, SqliteStore, Synchronous};
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

/// `builtin:noop` that also records when it was called.
#[derive(Debug, Default)]
struct Stamp {
    calls: Mutex<Vec<Instant>>,
}

impl Executor for Stamp {
    fn execute(
        &self,
        _r: ExecRequest,
        _o: Sender<OutputLine>,
        _c: CancellationToken,
    ) -> BoxFuture<'static, ExecOutcome> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(Instant::now());
        }
        Box::pin(async {
            ExecOutcome::Succeeded {
                outputs: Map::new(),
            }
        })
    }
}

fn pack(steps: usize, gate: bool) -> String {
    let mut out = String::from(
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: bench, version: 1.0.0}\nspec:\n  approvals: [{id: go}]\n  steps:\n",
    );
    if gate {
        out.push_str("    - {id: wait, gate: {approval: {id: go}}}\n");
    }
    for i in 0..steps {
        out.push_str(&format!(
            "    - {{id: s{i}, run: {{uses: builtin:stamp}}}}\n"
        ));
    }
    out
}

async fn runtime(
    dir: &std::path::Path,
    sync: Synchronous,
    stamp: Arc<Stamp>,
) -> (Runtime, Arc<SqliteStore>) {
    let config = SqliteConfig {
        synchronous: sync,
        ..SqliteConfig::default()
    };
    let store = Arc::new(SqliteStore::open(dir.join("store"), config).expect("store opens"));
    let mut executors = ExecutorRegistry::new();
    executors.register("builtin:stamp", stamp);
    let rt = Runtime::start(
        Store::from_parts(store.clone(), store.clone(), store.clone()),
        executors,
        Arc::new(SystemClock),
        Arc::new(StaticSecrets::new()),
        RuntimeConfig::new(dir.join("ws")),
    )
    .await
    .expect("runtime starts");
    (rt, store)
}

fn create(manifest: &str, id: String) -> CreateRun {
    CreateRun {
        tenant: "bench".into(),
        run_id: Some(id),
        manifest: manifest.into(),
        inputs: Map::new(),
    }
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn throughput(runs: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let baseline_n = 2000;
    let raw = taskrunner_store_sqlite::bench_support::raw_single_row_commits(
        &dir.path().join("raw"),
        baseline_n,
        Synchronous::Full,
    )
    .expect("raw loop");
    let raw_rate = baseline_n as f64 / raw.as_secs_f64();

    let (rt, store) = runtime(dir.path(), Synchronous::Full, Arc::new(Stamp::default())).await;
    let manifest = pack(10, false);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(runs);
    for i in 0..runs {
        let rt = rt.clone();
        let manifest = manifest.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("r{i}");
            rt.create_run(create(&manifest, id.clone()))
                .await
                .expect("run created");
            let view = rt.wait_settled("bench", &id).await.expect("run settles");
            assert_eq!(view.status, RunStatus::Succeeded);
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = started.elapsed();
    let stats = store.stats();
    // Each run: one create plus 11 transitions (Started + 10 attempt ends).
    let transitions = stats.transitions as f64;
    let rate = transitions / elapsed.as_secs_f64();
    println!("(a) {runs} runs x 10 no-op steps on SQLite synchronous=FULL");
    println!(
        "    raw SQLite, one row per transaction:  {raw_rate:>10.0} commits/s ({baseline_n} commits in {raw:.2?})"
    );
    println!(
        "    runtime transitions:                  {rate:>10.0} transitions/s ({} in {elapsed:.2?}; {} commits, max batch {})",
        stats.transitions, stats.batches, stats.max_batch
    );
    println!(
        "    ratio:                                {:>10.1}x  (goal >= 4x)",
        rate / raw_rate
    );
    rt.shutdown();
}

async fn overhead(sync: Synchronous, label: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let stamp = Arc::new(Stamp::default());
    let (rt, _store) = runtime(dir.path(), sync, stamp.clone()).await;
    let steps = 300;
    rt.create_run(create(&pack(steps, false), "seq".into()))
        .await
        .expect("created");
    let view = rt.wait_settled("bench", "seq").await.expect("settles");
    assert_eq!(view.status, RunStatus::Succeeded);
    let calls = stamp.calls.lock().map(|c| c.clone()).unwrap_or_default();
    let mut gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    println!(
        "(b) per no-op step, {label:<6}: p50 {:>8.3?}  p99 {:>8.3?}  ({} steps; goal p99 <= 2 ms)",
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        gaps.len()
    );
    rt.shutdown();
}

async fn parked(runs: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (rt, _store) = runtime(dir.path(), Synchronous::Normal, Arc::new(Stamp::default())).await;
    let manifest = pack(1, true);
    // Warm up allocator and caches with a few runs before the baseline.
    for i in 0..50 {
        rt.create_run(create(&manifest, format!("warm{i}")))
            .await
            .expect("created");
        rt.wait_settled("bench", &format!("warm{i}"))
            .await
            .expect("parks");
    }
    let before = rss_kib();
    for i in 0..runs {
        rt.create_run(create(&manifest, format!("p{i}")))
            .await
            .expect("created");
    }
    for i in 0..runs {
        let view = rt
            .wait_settled("bench", &format!("p{i}"))
            .await
            .expect("parks");
        assert_eq!(view.status, RunStatus::AwaitingApproval);
    }
    let after = rss_kib();
    println!(
        "(c) {runs} parked runs: +{} KiB resident, {:.1} KiB per parked run (goal <= 8 KiB)",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / runs as f64
    );
    rt.shutdown();
}

fn main() {
    let runs = std::env::var("ENGINE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000usize);
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        throughput(runs).await;
        overhead(Synchronous::Full, "FULL").await;
        overhead(Synchronous::Normal, "NORMAL").await;
        parked(runs.min(5_000)).await;
    });
}
