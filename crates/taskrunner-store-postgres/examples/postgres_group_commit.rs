//! Group-commit and claim benchmark against a real PostgreSQL server: transitions/s of
//! `PostgresStore` with 1 and with many concurrent runs, and lease claims/s.
//!
//! `cargo run --release -p taskrunner-store-postgres --example postgres_group_commit -- [runs] [per_run]`
//! Uses `TASKRUNNER_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! to create and drop a scratch database.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use taskrunner_store::Store;
use taskrunner_store::conformance::{new_run, next};
use taskrunner_store_postgres::{PostgresConfig, PostgresStore};
use tokio_postgres::NoTls;

fn admin_url() -> String {
    std::env::var("TASKRUNNER_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn admin(sql: &str) {
    let (client, conn) = tokio_postgres::connect(&admin_url(), NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap();
}

async fn throughput(store: &Store, prefix: &str, runs: usize, per_run: usize) -> f64 {
    for i in 0..runs {
        store
            .runs
            .create_run(new_run("bench", &format!("{prefix}{i}"), 1))
            .await
            .unwrap();
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..runs {
        let store = store.clone();
        let id = format!("{prefix}{i}");
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_run {
                let t = next(&store, "bench", &id, 1, 1).await;
                store.runs.commit(t).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (runs * per_run) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let per_run: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let name = format!("taskrunner_bench_{}", std::process::id());
    admin(&format!("CREATE DATABASE {name}")).await;
    let url = match admin_url().rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("TASKRUNNER_TEST_DATABASE_URL must be a postgres:// URL"),
    };
    let dir = tempfile::tempdir().unwrap();
    let pg = PostgresStore::connect(PostgresConfig::new(url, dir.path()))
        .await
        .unwrap();
    let store = Store::new(pg.clone());

    let one = throughput(&store, "one", 1, per_run * 4).await;
    println!("1 run: {one:.0} transitions/s (one commit round trip each)");
    let before = pg.stats();
    let many = throughput(&store, "many", runs, per_run).await;
    let after = pg.stats();
    let batches = after.batches - before.batches;
    let requests = after.requests - before.requests;
    println!(
        "{runs} concurrent runs: {many:.0} transitions/s ({requests} writes in {batches} \
         transactions, max batch {}, {:.1}x one run)",
        after.max_batch,
        many / one
    );

    let leases = store.leases.clone().unwrap();
    for i in 0..1000 {
        store
            .runs
            .create_run(new_run("claims", &format!("c{i}"), 1))
            .await
            .unwrap();
    }
    let start = Instant::now();
    let mut claimed = 0;
    loop {
        let got = leases
            .claim("bench-owner", 50, Duration::from_secs(10))
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        claimed += got.len();
    }
    let rate = claimed as f64 / start.elapsed().as_secs_f64();
    println!("claims of 50: {claimed} runs claimed at {rate:.0} runs/s");

    drop(store);
    drop(pg);
    tokio::time::sleep(Duration::from_millis(200)).await;
    admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
}
