//! Read side: a small pool of read-only connections used from `spawn_blocking`, bounded by a
//! semaphore. In WAL mode readers see the last committed state and never block the writer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use taskrunner_store::{
    ArtifactRecord, Cursor, JournalEntry, LogRecord, Page, RunRecord, StoreError, StoreResult,
    status, validate,
};
use tokio::sync::Semaphore;

use crate::rows::{
    ARTIFACT_COLUMNS, JOURNAL_COLUMNS, LOG_COLUMNS, RUN_COLUMNS, artifact_from_row, collect,
    db_error, journal_from_row, log_from_row, run_from_row, to_i64,
};

#[derive(Debug)]
struct PoolInner {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    idle_max: usize,
}

/// Read-only connections, opened lazily and reused.
#[derive(Debug, Clone)]
pub(crate) struct ReadPool {
    inner: Arc<PoolInner>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(crate) fn new(path: PathBuf, busy_timeout: Duration, readers: usize) -> Self {
        ReadPool {
            inner: Arc::new(PoolInner {
                path,
                busy_timeout,
                idle: Mutex::new(Vec::new()),
                idle_max: readers,
            }),
            permits: Arc::new(Semaphore::new(readers)),
        }
    }

    /// Runs `f` on a read connection inside a read transaction (one consistent snapshot).
    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Backend("read pool closed".to_owned()))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.take()?;
            let result = (|| {
                let tx = conn.transaction().map_err(db_error)?;
                let value = f(&tx)?;
                tx.finish().map_err(db_error)?;
                Ok(value)
            })();
            inner.give(conn);
            drop(permit);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

impl PoolInner {
    fn take(&self) -> StoreResult<Connection> {
        if let Some(conn) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_error)?;
        conn.busy_timeout(self.busy_timeout).map_err(db_error)?;
        Ok(conn)
    }

    fn give(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.idle_max
        {
            idle.push(conn);
        }
    }
}

fn run_exists(conn: &rusqlite::Connection, tenant: &str, run_id: &str) -> StoreResult<()> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM runs WHERE tenant = ?1 AND run_id = ?2")
        .map_err(db_error)?
        .exists(params![tenant, run_id])
        .map_err(db_error)?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

pub(crate) fn get_run(
    conn: &rusqlite::Connection,
    tenant: &str,
    run_id: &str,
) -> StoreResult<Option<RunRecord>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE tenant = ?1 AND run_id = ?2");
    let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
    let mut rows = stmt.query(params![tenant, run_id]).map_err(db_error)?;
    let Some(row) = rows.next().map_err(db_error)? else {
        return Ok(None);
    };
    let run = run_from_row(row)?;
    validate::run_record(&run)?;
    Ok(Some(run))
}

pub(crate) fn list_runs(
    conn: &rusqlite::Connection,
    tenant: &str,
    cursor: Option<Cursor>,
    limit: usize,
) -> StoreResult<Page> {
    let fetch = to_i64(limit as u64 + 1, "limit")?;
    let mut runs = match &cursor {
        None => {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE tenant = ?1 \
                 ORDER BY created_at_ms DESC, run_id DESC LIMIT ?2"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
            collect(&mut stmt, params![tenant, fetch], run_from_row)?
        }
        Some(c) => {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE tenant = ?1 \
                 AND (created_at_ms < ?2 OR (created_at_ms = ?2 AND run_id < ?3)) \
                 ORDER BY created_at_ms DESC, run_id DESC LIMIT ?4"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
            collect(
                &mut stmt,
                params![tenant, c.created_at_ms, c.run_id, fetch],
                run_from_row,
            )?
        }
    };
    let more = runs.len() > limit;
    runs.truncate(limit);
    runs.iter().try_for_each(validate::run_record)?;
    let next_cursor = match (more, runs.last()) {
        (true, Some(last)) => Some(
            Cursor {
                created_at_ms: last.created_at_ms,
                run_id: last.run_id.clone(),
            }
            .encode(),
        ),
        _ => None,
    };
    Ok(Page { runs, next_cursor })
}

pub(crate) fn load_journal(
    conn: &rusqlite::Connection,
    tenant: &str,
    run_id: &str,
    after_seq: u64,
) -> StoreResult<Vec<JournalEntry>> {
    run_exists(conn, tenant, run_id)?;
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {JOURNAL_COLUMNS} FROM journal WHERE tenant = ?1 AND run_id = ?2 AND seq > ?3 \
         ORDER BY seq"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
    let entries = collect(&mut stmt, params![tenant, run_id, after], journal_from_row)?;
    validate::journal_loaded(&entries, after_seq)?;
    // The stored head must agree with the journal's last entry.
    if let Some(last) = entries.last() {
        let head: Option<(i64, Option<String>)> = conn
            .prepare_cached(
                "SELECT journal_len, journal_head FROM runs WHERE tenant = ?1 AND run_id = ?2",
            )
            .map_err(db_error)?
            .query_row(params![tenant, run_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db_error)?;
        let agrees = head.is_some_and(|(len, h)| {
            u64::try_from(len).ok() == Some(last.seq) && h.as_deref() == Some(last.hash.as_str())
        });
        if !agrees {
            return Err(StoreError::Corrupt(format!(
                "run {tenant}/{run_id}: journal does not end at the stored head"
            )));
        }
    }
    Ok(entries)
}

pub(crate) fn active_runs(conn: &rusqlite::Connection) -> StoreResult<Vec<(String, String)>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT tenant, run_id FROM runs WHERE status IN (?1, ?2, ?3) ORDER BY tenant, run_id",
        )
        .map_err(db_error)?;
    collect(
        &mut stmt,
        params![status::PENDING, status::RUNNING, status::AWAITING_APPROVAL],
        |r| Ok((r.get(0).map_err(db_error)?, r.get(1).map_err(db_error)?)),
    )
}

pub(crate) fn due_runs(
    conn: &rusqlite::Connection,
    now_ms: i64,
) -> StoreResult<Vec<(String, String, i64)>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT tenant, run_id, next_wake_at_ms FROM runs \
             WHERE next_wake_at_ms IS NOT NULL AND next_wake_at_ms <= ?1 \
             AND status IN (?2, ?3, ?4) ORDER BY next_wake_at_ms, tenant, run_id",
        )
        .map_err(db_error)?;
    collect(
        &mut stmt,
        params![
            now_ms,
            status::PENDING,
            status::RUNNING,
            status::AWAITING_APPROVAL
        ],
        |r| {
            Ok((
                r.get(0).map_err(db_error)?,
                r.get(1).map_err(db_error)?,
                r.get(2).map_err(db_error)?,
            ))
        },
    )
}

pub(crate) fn queued_count(
    conn: &rusqlite::Connection,
    tenant: &str,
    pack_name: &str,
) -> StoreResult<u64> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM runs WHERE status = ?1 AND tenant = ?2 AND pack_name = ?3",
        )
        .map_err(db_error)?
        .query_row(params![status::PENDING, tenant, pack_name], |r| r.get(0))
        .map_err(db_error)?;
    crate::rows::to_u64(n, "count")
}

pub(crate) fn logs(
    conn: &rusqlite::Connection,
    tenant: &str,
    run_id: &str,
    after_sequence: u64,
    limit: usize,
) -> StoreResult<Vec<LogRecord>> {
    run_exists(conn, tenant, run_id)?;
    let after = i64::try_from(after_sequence).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {LOG_COLUMNS} FROM logs WHERE tenant = ?1 AND run_id = ?2 AND sequence > ?3 \
         ORDER BY sequence LIMIT ?4"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
    let limit = to_i64(limit as u64, "limit")?;
    let records = collect(
        &mut stmt,
        params![tenant, run_id, after, limit],
        log_from_row,
    )?;
    validate::logs_loaded(&records, after_sequence)?;
    Ok(records)
}

pub(crate) fn list_artifacts(
    conn: &rusqlite::Connection,
    tenant: &str,
    run_id: &str,
) -> StoreResult<Vec<ArtifactRecord>> {
    run_exists(conn, tenant, run_id)?;
    let sql = format!(
        "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE tenant = ?1 AND run_id = ?2 \
         ORDER BY position"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
    let records = collect(&mut stmt, params![tenant, run_id], artifact_from_row)?;
    records.iter().try_for_each(validate::artifact_loaded)?;
    Ok(records)
}

pub(crate) fn check_run(
    conn: &rusqlite::Connection,
    tenant: &str,
    run_id: &str,
) -> StoreResult<()> {
    run_exists(conn, tenant, run_id)
}
