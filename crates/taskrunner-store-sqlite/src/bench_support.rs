//! Helpers for the storage benchmark: group-commit throughput of [`SqliteStore`] and a raw
//! SQLite baseline that commits one row per transaction (same pragmas, one fsync per row).

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use taskrunner_store::{JournalEntry, NewLog, NewRun, RunStore, StoreError, Transition, status};

use crate::config::Synchronous;
use crate::rows::db_error;
use crate::store::SqliteStore;

/// Commits `n` one-row transactions on a fresh database in `dir` (WAL, given `synchronous`);
/// returns the elapsed time. This is the "no group commit" baseline.
pub fn raw_single_row_commits(
    dir: &Path,
    n: usize,
    synchronous: Synchronous,
) -> Result<Duration, StoreError> {
    std::fs::create_dir_all(dir)?;
    let conn = Connection::open(dir.join("raw-baseline.db")).map_err(db_error)?;
    let _mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(db_error)?;
    conn.pragma_update(None, "synchronous", synchronous.pragma_value())
        .map_err(db_error)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, \
         payload TEXT NOT NULL)",
    )
    .map_err(db_error)?;
    let start = Instant::now();
    for i in 0..n {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(db_error)?;
        conn.prepare_cached("INSERT INTO events (at_ms, payload) VALUES (?1, ?2)")
            .map_err(db_error)?
            .execute(params![i as i64, r#"{"event":"x"}"#])
            .map_err(db_error)?;
        conn.execute_batch("COMMIT").map_err(db_error)?;
    }
    Ok(start.elapsed())
}

/// Outcome of [`group_commit_throughput`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Transitions committed.
    pub transitions: u64,
    /// Wall-clock time of the commit phase.
    pub elapsed: Duration,
    /// Transitions per second.
    pub per_second: f64,
    /// Group-commit transactions used.
    pub batches: u64,
    /// Largest batch.
    pub max_batch: u64,
}

fn entry(seq: u64, prev: &str) -> JournalEntry {
    let payload_json = format!(r#"{{"event":"e{seq}"}}"#);
    JournalEntry {
        seq,
        at_ms: seq as i64,
        hash: taskrunner_store::sha256_hex(format!("{prev}|{payload_json}").as_bytes()),
        prev_hash: prev.to_owned(),
        payload_json,
    }
}

/// Creates `runs` runs, then commits `per_run` transitions (one journal entry + one log each)
/// to every run from `runs` concurrent tasks; each task waits for each commit before the next,
/// like the runtime does. Returns the commit-phase throughput.
pub async fn group_commit_throughput(
    store: &SqliteStore,
    runs: usize,
    per_run: u64,
) -> Result<Throughput, StoreError> {
    for i in 0..runs {
        let root = format!("root-{i}");
        store
            .create_run(NewRun {
                tenant: "bench".to_owned(),
                run_id: format!("bench-{i}"),
                pack_name: "bench".to_owned(),
                pack_version: "1".to_owned(),
                plan_hash: root.clone(),
                plan_json: "{}".to_owned(),
                created_at_ms: i as i64,
                status: status::PENDING.to_owned(),
                host_digest: None,
                journal: vec![entry(1, &root)],
                logs: Vec::new(),
                artifacts: Vec::new(),
            })
            .await?;
    }
    let before = store.stats();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..runs {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let run_id = format!("bench-{i}");
            let mut head = entry(1, &format!("root-{i}")).hash;
            for seq in 2..=per_run + 1 {
                let e = entry(seq, &head);
                head = e.hash.clone();
                let mut t = Transition::new("bench", &run_id, seq - 1, seq as i64);
                t.journal = vec![e];
                t.status = Some(status::RUNNING.to_owned());
                t.logs = vec![NewLog {
                    timestamp_ms: seq as i64,
                    level: "info".to_owned(),
                    event_type: "step.output".to_owned(),
                    message: "line".to_owned(),
                    step_id: None,
                    metadata_json: "{}".to_owned(),
                }];
                store.commit(t).await?;
            }
            Ok::<(), StoreError>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| StoreError::Backend(format!("bench task failed: {e}")))??;
    }
    let elapsed = start.elapsed();
    let after = store.stats();
    let transitions = runs as u64 * per_run;
    Ok(Throughput {
        transitions,
        elapsed,
        per_second: transitions as f64 / elapsed.as_secs_f64().max(1e-9),
        batches: after.batches - before.batches,
        max_batch: after.max_batch,
    })
}
