//! Mapping between PostgreSQL rows and store records, and between driver errors and
//! `StoreError`. A row that does not decode is `StoreError::Corrupt`, never a panic.

use taskrunner_store::{ArtifactRecord, JournalEntry, LogRecord, RunRecord, Snapshot, StoreError};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

/// Maps a driver error. A lost or refused connection, a server shutting down or restarting,
/// or one out of connections is `Unavailable`; a server out of disk is `Full` (both pass: the
/// same write may succeed later); the rest is `Backend` (decoding goes through [`get`]).
pub(crate) fn db_error(err: tokio_postgres::Error) -> StoreError {
    match err.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let text = format!("postgres {code}: {}", db.message());
            match code {
                "53100" => StoreError::Full(text),
                _ if is_unavailable_state(code) => StoreError::Unavailable(text),
                _ => StoreError::Backend(text),
            }
        }
        None if err.is_closed() || has_io_cause(&err) => {
            StoreError::Unavailable(format!("postgres: {}", describe(&err)))
        }
        None => StoreError::Backend(format!("postgres: {}", describe(&err))),
    }
}

/// SQLSTATEs of a server that cannot serve now but may soon: connection exceptions (class 08),
/// insufficient resources (class 53, but `53100` is `Full`), an operator or crash shutdown and
/// a server still starting (`57P01`..`57P03`), a read-only standby (`25006`).
fn is_unavailable_state(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "25006")
}

/// Whether an I/O error (refused, reset, broken pipe) is among the causes.
fn has_io_cause(err: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Maps a pool error: no connection within the wait timeout, or none can be made → the
/// database is `Unavailable`; a driver error as [`db_error`]; the rest `Backend`.
pub(crate) fn pool_error(err: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError as P;
    match err {
        P::Backend(e) => db_error(e),
        P::Timeout(_) => StoreError::Unavailable(format!("postgres pool: {err}")),
        other => StoreError::Backend(format!("postgres pool: {other}")),
    }
}

/// The error with its causes (the driver's own message is often just "error connecting").
pub(crate) fn describe(err: &tokio_postgres::Error) -> String {
    let mut out = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Whether the error is a deadlock or serialization failure (the batch may be retried).
pub(crate) fn is_retryable(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// Whether the error is a unique-key violation.
pub(crate) fn is_unique_violation(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Column `idx` of `row`, or `Corrupt` naming the column.
pub(crate) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    idx: usize,
) -> Result<T, StoreError> {
    row.try_get(idx).map_err(|e| {
        let name = row
            .columns()
            .get(idx)
            .map_or("?", tokio_postgres::Column::name);
        StoreError::Corrupt(format!("column {name} does not decode: {e}"))
    })
}

/// A stored count or sequence (never negative).
pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} is negative ({value})")))
}

/// A count or sequence to store (BIGINT is signed 64-bit).
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid(format!("{what} {value} is too large")))
}

pub(crate) const RUN_COLUMNS: &str = "tenant, run_id, pack_name, pack_version, plan_hash, \
    plan_json, created_at_ms, updated_at_ms, status, next_wake_at_ms, journal_len, \
    journal_head, host_digest, snapshot_seq, snapshot_json";

pub(crate) fn run_from_row(row: &Row) -> Result<RunRecord, StoreError> {
    let snapshot_seq: Option<i64> = get(row, 13)?;
    let snapshot_json: Option<String> = get(row, 14)?;
    let snapshot = match (snapshot_seq, snapshot_json) {
        (Some(seq), Some(state_json)) => Some(Snapshot {
            seq: to_u64(seq, "snapshot_seq")?,
            state_json,
        }),
        (None, None) => None,
        _ => return Err(StoreError::Corrupt("half a snapshot is stored".to_owned())),
    };
    Ok(RunRecord {
        tenant: get(row, 0)?,
        run_id: get(row, 1)?,
        pack_name: get(row, 2)?,
        pack_version: get(row, 3)?,
        plan_hash: get(row, 4)?,
        plan_json: get(row, 5)?,
        created_at_ms: get(row, 6)?,
        updated_at_ms: get(row, 7)?,
        status: get(row, 8)?,
        next_wake_at_ms: get(row, 9)?,
        journal_len: to_u64(get(row, 10)?, "journal_len")?,
        journal_head: get(row, 11)?,
        host_digest: get(row, 12)?,
        snapshot,
    })
}

pub(crate) const JOURNAL_COLUMNS: &str = "seq, at_ms, payload_json, prev_hash, hash";

pub(crate) fn journal_from_row(row: &Row) -> Result<JournalEntry, StoreError> {
    Ok(JournalEntry {
        seq: to_u64(get(row, 0)?, "journal seq")?,
        at_ms: get(row, 1)?,
        payload_json: get(row, 2)?,
        prev_hash: get(row, 3)?,
        hash: get(row, 4)?,
    })
}

pub(crate) const LOG_COLUMNS: &str =
    "sequence, timestamp_ms, level, event_type, message, step_id, metadata_json";

pub(crate) fn log_from_row(row: &Row) -> Result<LogRecord, StoreError> {
    Ok(LogRecord {
        sequence: to_u64(get(row, 0)?, "log sequence")?,
        timestamp_ms: get(row, 1)?,
        level: get(row, 2)?,
        event_type: get(row, 3)?,
        message: get(row, 4)?,
        step_id: get(row, 5)?,
        metadata_json: get(row, 6)?,
    })
}

pub(crate) const ARTIFACT_COLUMNS: &str = "name, kind, source_path, stored_path, status, notes, \
    captured_at_ms, expression_json, sha256, size_bytes";

pub(crate) fn artifact_from_row(row: &Row) -> Result<ArtifactRecord, StoreError> {
    let size: Option<i64> = get(row, 9)?;
    Ok(ArtifactRecord {
        name: get(row, 0)?,
        kind: get(row, 1)?,
        source_path: get(row, 2)?,
        stored_path: get(row, 3)?,
        status: get(row, 4)?,
        notes: get(row, 5)?,
        captured_at_ms: get(row, 6)?,
        expression_json: get(row, 7)?,
        sha256: get(row, 8)?,
        size_bytes: size.map(|s| to_u64(s, "size_bytes")).transpose()?,
    })
}

/// Decodes every row with `decode`.
pub(crate) fn decode_all<T>(
    rows: &[Row],
    decode: fn(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(decode).collect()
}

/// SQL for "now" on the database server, in ms since the Unix epoch (the lease clock).
pub(crate) const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// The active statuses, as a SQL list.
pub(crate) const ACTIVE: &str = "('Pending', 'Running', 'AwaitingApproval')";

#[cfg(test)]
mod tests {
    use taskrunner_store::status;

    #[test]
    fn the_active_sql_list_is_the_active_statuses() {
        let listed: Vec<&str> = super::ACTIVE
            .trim_matches(['(', ')'])
            .split(", ")
            .map(|s| s.trim_matches('\''))
            .collect();
        let active: Vec<&str> = status::ALL
            .into_iter()
            .filter(|s| status::is_active(s))
            .collect();
        assert_eq!(listed, active);
    }

    #[test]
    fn a_server_away_or_restarting_is_unavailable_a_broken_query_is_not() {
        for code in [
            "08006", "08001", "57P01", "57P02", "57P03", "53300", "25006",
        ] {
            assert!(super::is_unavailable_state(code), "{code}");
        }
        for code in ["23505", "40001", "42P01", "XX000", "22P02"] {
            assert!(!super::is_unavailable_state(code), "{code}");
        }
    }
}
