//! Group-commit benchmark: transitions/s of `SqliteStore` with many concurrent runs versus a raw
//! SQLite loop committing one row per transaction (same WAL + synchronous settings).
//!
//! `cargo run --release -p taskrunner-store-sqlite --example group_commit -- [runs] [per_run]`
#![allow(clippy::unwrap_used)]

use taskrunner_store_sqlite::{SqliteConfig, SqliteStore, Synchronous, bench_support};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let per_run: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    for synchronous in [Synchronous::Full, Synchronous::Normal] {
        let dir = tempfile::tempdir().unwrap();
        let raw_n = 500;
        let raw = bench_support::raw_single_row_commits(dir.path(), raw_n, synchronous).unwrap();
        let raw_rate = raw_n as f64 / raw.as_secs_f64();
        println!("{synchronous:?}: raw one-row-per-transaction loop: {raw_rate:.0} commits/s");
        for concurrency in [1, runs] {
            let dir = tempfile::tempdir().unwrap();
            let config = SqliteConfig {
                synchronous,
                ..SqliteConfig::default()
            };
            let store = SqliteStore::open(dir.path(), config).unwrap();
            let per = if concurrency == 1 {
                per_run * 4
            } else {
                per_run
            };
            let t = bench_support::group_commit_throughput(&store, concurrency, per)
                .await
                .unwrap();
            println!(
                "{synchronous:?}: store, {concurrency} concurrent runs: {:.0} transitions/s \
                 ({} transitions in {} commits, max batch {}, {:.1}x raw)",
                t.per_second,
                t.transitions,
                t.batches,
                t.max_batch,
                t.per_second / raw_rate
            );
        }
    }
}
