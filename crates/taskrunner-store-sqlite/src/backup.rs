//! Online backup of the embedded store: a consistent copy of the database taken while a server
//! keeps writing, and the list of artifact blobs the copied rows reference.
//!
//! `VACUUM INTO` reads one snapshot of the database (a read transaction on the WAL) and writes it
//! to a new file, so the copy holds every transition committed before the snapshot and none of
//! the ones after; writers are not blocked. Blobs are immutable and content-addressed, written
//! and fsynced before the row that names them commits, so every blob a copied row references is
//! complete in the data directory when the copy is taken (nothing deletes blobs).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use taskrunner_store::{JournalEntry, StoreError, StoreResult, digest_of_stored_path, status};

use crate::rows::{db_error, to_u64};
use crate::schema::{SCHEMA_VERSION, user_version};
use crate::store::DB_FILE_NAME;

/// What a database copy holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseCopy {
    /// The schema version of the copy (the source's).
    pub schema_version: u32,
    /// Runs in the copy.
    pub runs: u64,
    /// Runs in the copy that were not finished when it was taken (a restored server continues
    /// them).
    pub active_runs: u64,
    /// Stored paths (`artifacts/sha256/ab/abcdef…`) of every blob the copy's rows reference,
    /// sorted, each once.
    pub blobs: Vec<String>,
}

/// Copies the database of `data_dir` to `dest` (a file that must not exist yet) while other
/// connections keep writing, and lists what the copy references.
///
/// Refuses a directory without a taskrunner database, and a database whose schema is newer than
/// this build (it could not be restored by it).
pub fn copy_database(data_dir: &Path, dest: &Path) -> StoreResult<DatabaseCopy> {
    let source = data_dir.join(DB_FILE_NAME);
    if !source.is_file() {
        return Err(StoreError::Backend(format!(
            "{} is not a taskrunner data directory (no {DB_FILE_NAME})",
            data_dir.display()
        )));
    }
    if dest.exists() {
        return Err(StoreError::Backend(format!(
            "{} already exists",
            dest.display()
        )));
    }
    // Read-write without CREATE: a WAL database needs its shared-memory file, which a read-only
    // connection cannot create when no server has it open. Nothing is written to the source.
    let conn = Connection::open_with_flags(
        &source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_error)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(db_error)?;
    let version = user_version(&conn)?;
    check_version(version)?;
    let dest_text = dest
        .to_str()
        .ok_or_else(|| StoreError::Backend(format!("{} is not a UTF-8 path", dest.display())))?;
    conn.execute("VACUUM INTO ?1", [dest_text])
        .map_err(db_error)?;
    drop(conn);
    describe(dest)
}

/// What the database file `db` holds (a copy made by [`copy_database`] or a restored one).
pub fn describe(db: &Path) -> StoreResult<DatabaseCopy> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_error)?;
    let schema_version = user_version(&conn)?;
    check_version(schema_version)?;
    let count = |sql: &str| -> StoreResult<u64> {
        let n: i64 = conn
            .query_row(sql, [], |row| row.get(0))
            .map_err(db_error)?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count from {sql}")))
    };
    let runs = count("SELECT count(*) FROM runs")?;
    let active_runs = count(&format!(
        "SELECT count(*) FROM runs WHERE status NOT IN ('{}', '{}', '{}')",
        status::SUCCEEDED,
        status::FAILED,
        status::CANCELLED
    ))?;
    let mut stmt = conn
        .prepare(
            "SELECT DISTINCT stored_path FROM artifacts WHERE stored_path IS NOT NULL \
             ORDER BY stored_path",
        )
        .map_err(db_error)?;
    let blobs = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(db_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_error)?;
    for path in &blobs {
        if digest_of_stored_path(path).is_none() {
            return Err(StoreError::Corrupt(format!(
                "artifact stored path {path:?} is not a content address"
            )));
        }
    }
    Ok(DatabaseCopy {
        schema_version,
        runs,
        active_runs,
        blobs,
    })
}

fn check_version(version: u32) -> StoreResult<()> {
    if version == 0 {
        return Err(StoreError::Backend(
            "the database has no taskrunner schema".to_owned(),
        ));
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "database schema version {version} is newer than this build supports ({SCHEMA_VERSION})"
        )));
    }
    Ok(())
}

/// One run's journal as stored, for verifying a copy.
#[derive(Debug, Clone)]
pub struct StoredJournal {
    /// The run's tenant.
    pub tenant: String,
    /// The run's id.
    pub run_id: String,
    /// The plan hash the chain starts from.
    pub plan_hash: String,
    /// The head the run row records (`None` for an empty journal).
    pub head: Option<String>,
    /// The entries, in order.
    pub entries: Vec<JournalEntry>,
}

/// Calls `f` with every run's journal in the database file `db`, one run at a time; stops at
/// the first error `f` returns.
pub fn for_each_journal<E: From<StoreError>>(
    db: &Path,
    mut f: impl FnMut(StoredJournal) -> Result<(), E>,
) -> Result<u64, E> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_error)?;
    let mut runs = conn
        .prepare("SELECT tenant, run_id, plan_hash, journal_head FROM runs ORDER BY tenant, run_id")
        .map_err(db_error)?;
    let rows = runs
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<String>>(3)?,
            ))
        })
        .map_err(db_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_error)?;
    let mut journal = conn
        .prepare(
            "SELECT seq, at_ms, payload_json, prev_hash, hash FROM journal \
             WHERE tenant = ?1 AND run_id = ?2 ORDER BY seq",
        )
        .map_err(db_error)?;
    let mut count = 0;
    for (tenant, run_id, plan_hash, head) in rows {
        let entries = journal
            .query_map([&tenant, &run_id], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })
            .map_err(db_error)?
            .map(|row| {
                let (seq, at_ms, payload_json, prev_hash, hash) = row.map_err(db_error)?;
                Ok(JournalEntry {
                    seq: to_u64(seq, "seq")?,
                    at_ms,
                    payload_json,
                    prev_hash,
                    hash,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        f(StoredJournal {
            tenant,
            run_id,
            plan_hash,
            head,
            entries,
        })?;
        count += 1;
    }
    Ok(count)
}
