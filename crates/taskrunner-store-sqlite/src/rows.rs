//! Mapping between SQLite rows and store records, and between rusqlite errors and `StoreError`.
//!
//! A row that does not decode (wrong type, negative length, half a snapshot) is
//! `StoreError::Corrupt`, never a panic.

use rusqlite::{ErrorCode, Row};
use taskrunner_store::{ArtifactRecord, JournalEntry, LogRecord, RunRecord, Snapshot, StoreError};

/// Maps a rusqlite error: decoding failures and a damaged file are `Corrupt`; a full disk
/// (`SQLITE_FULL`, or the shared-memory file that cannot grow) is `Full` and a file system gone
/// read-only is `Unavailable` (both pass: the same write may succeed later); the rest `Backend`.
pub(crate) fn db_error(err: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match &err {
        E::SqliteFailure(f, _)
            if f.code == ErrorCode::DiskFull
                || f.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE =>
        {
            StoreError::Full(err.to_string())
        }
        E::SqliteFailure(f, _) if f.code == ErrorCode::ReadOnly => {
            StoreError::Unavailable(err.to_string())
        }
        E::InvalidColumnType(..)
        | E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::Utf8Error(..) => StoreError::Corrupt(err.to_string()),
        E::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
        {
            StoreError::Corrupt(err.to_string())
        }
        _ => StoreError::Backend(err.to_string()),
    }
}

/// A stored count or sequence (never negative).
pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} is negative ({value})")))
}

/// A count or sequence to store (SQLite integers are signed 64-bit).
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid(format!("{what} {value} is too large")))
}

pub(crate) const RUN_COLUMNS: &str = "tenant, run_id, pack_name, pack_version, plan_hash, \
    plan_json, created_at_ms, updated_at_ms, status, next_wake_at_ms, journal_len, \
    journal_head, host_digest, snapshot_seq, snapshot_json";

pub(crate) fn run_from_row(row: &Row<'_>) -> Result<RunRecord, StoreError> {
    let snapshot_seq: Option<i64> = row.get(13).map_err(db_error)?;
    let snapshot_json: Option<String> = row.get(14).map_err(db_error)?;
    let snapshot = match (snapshot_seq, snapshot_json) {
        (Some(seq), Some(state_json)) => Some(Snapshot {
            seq: to_u64(seq, "snapshot_seq")?,
            state_json,
        }),
        (None, None) => None,
        _ => return Err(StoreError::Corrupt("half a snapshot is stored".to_owned())),
    };
    Ok(RunRecord {
        tenant: row.get(0).map_err(db_error)?,
        run_id: row.get(1).map_err(db_error)?,
        pack_name: row.get(2).map_err(db_error)?,
        pack_version: row.get(3).map_err(db_error)?,
        plan_hash: row.get(4).map_err(db_error)?,
        plan_json: row.get(5).map_err(db_error)?,
        created_at_ms: row.get(6).map_err(db_error)?,
        updated_at_ms: row.get(7).map_err(db_error)?,
        status: row.get(8).map_err(db_error)?,
        next_wake_at_ms: row.get(9).map_err(db_error)?,
        journal_len: to_u64(row.get(10).map_err(db_error)?, "journal_len")?,
        journal_head: row.get(11).map_err(db_error)?,
        host_digest: row.get(12).map_err(db_error)?,
        snapshot,
    })
}

pub(crate) const JOURNAL_COLUMNS: &str = "seq, at_ms, payload_json, prev_hash, hash";

pub(crate) fn journal_from_row(row: &Row<'_>) -> Result<JournalEntry, StoreError> {
    Ok(JournalEntry {
        seq: to_u64(row.get(0).map_err(db_error)?, "journal seq")?,
        at_ms: row.get(1).map_err(db_error)?,
        payload_json: row.get(2).map_err(db_error)?,
        prev_hash: row.get(3).map_err(db_error)?,
        hash: row.get(4).map_err(db_error)?,
    })
}

pub(crate) const LOG_COLUMNS: &str =
    "sequence, timestamp_ms, level, event_type, message, step_id, metadata_json";

pub(crate) fn log_from_row(row: &Row<'_>) -> Result<LogRecord, StoreError> {
    Ok(LogRecord {
        sequence: to_u64(row.get(0).map_err(db_error)?, "log sequence")?,
        timestamp_ms: row.get(1).map_err(db_error)?,
        level: row.get(2).map_err(db_error)?,
        event_type: row.get(3).map_err(db_error)?,
        message: row.get(4).map_err(db_error)?,
        step_id: row.get(5).map_err(db_error)?,
        metadata_json: row.get(6).map_err(db_error)?,
    })
}

pub(crate) const ARTIFACT_COLUMNS: &str = "name, kind, source_path, stored_path, status, notes, \
    captured_at_ms, expression_json, sha256, size_bytes";

pub(crate) fn artifact_from_row(row: &Row<'_>) -> Result<ArtifactRecord, StoreError> {
    let size: Option<i64> = row.get(9).map_err(db_error)?;
    Ok(ArtifactRecord {
        name: row.get(0).map_err(db_error)?,
        kind: row.get(1).map_err(db_error)?,
        source_path: row.get(2).map_err(db_error)?,
        stored_path: row.get(3).map_err(db_error)?,
        status: row.get(4).map_err(db_error)?,
        notes: row.get(5).map_err(db_error)?,
        captured_at_ms: row.get(6).map_err(db_error)?,
        expression_json: row.get(7).map_err(db_error)?,
        sha256: row.get(8).map_err(db_error)?,
        size_bytes: size.map(|s| to_u64(s, "size_bytes")).transpose()?,
    })
}

/// Runs `query` and decodes every row with `decode`.
pub(crate) fn collect<T>(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    decode: fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut rows = stmt.query(params).map_err(db_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_error)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn a_full_disk_and_a_read_only_file_pass_other_failures_do_not() {
        assert!(matches!(
            db_error(failure(rusqlite::ffi::SQLITE_FULL)),
            StoreError::Full(_)
        ));
        assert!(matches!(
            db_error(failure(rusqlite::ffi::SQLITE_IOERR_SHMSIZE)),
            StoreError::Full(_)
        ));
        assert!(matches!(
            db_error(failure(rusqlite::ffi::SQLITE_READONLY)),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            db_error(failure(rusqlite::ffi::SQLITE_IOERR_WRITE)),
            StoreError::Backend(_)
        ));
        assert!(matches!(
            db_error(failure(rusqlite::ffi::SQLITE_CORRUPT)),
            StoreError::Corrupt(_)
        ));
    }
}
