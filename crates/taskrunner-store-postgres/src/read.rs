//! Read side: queries on pooled connections. Reads that need one consistent view of several
//! tables (journal and head) run in a REPEATABLE READ read-only transaction.

use taskrunner_store::{
    ArtifactRecord, Cursor, JournalEntry, LogRecord, Page, RunRecord, StoreError, StoreResult,
    status, validate,
};
use tokio_postgres::GenericClient;

use crate::rows::{
    ACTIVE, ARTIFACT_COLUMNS, JOURNAL_COLUMNS, LOG_COLUMNS, RUN_COLUMNS, artifact_from_row,
    db_error, decode_all, get, journal_from_row, log_from_row, run_from_row, to_i64, to_u64,
};

pub(crate) async fn run_exists<C: GenericClient>(
    c: &C,
    tenant: &str,
    run_id: &str,
) -> StoreResult<()> {
    let row = c
        .query_opt(
            "SELECT 1 FROM runs WHERE tenant = $1 AND run_id = $2",
            &[&tenant, &run_id],
        )
        .await
        .map_err(db_error)?;
    row.map(|_| ()).ok_or(StoreError::NotFound)
}

pub(crate) async fn get_run<C: GenericClient>(
    c: &C,
    tenant: &str,
    run_id: &str,
) -> StoreResult<Option<RunRecord>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE tenant = $1 AND run_id = $2");
    let Some(row) = c
        .query_opt(&sql, &[&tenant, &run_id])
        .await
        .map_err(db_error)?
    else {
        return Ok(None);
    };
    let run = run_from_row(&row)?;
    validate::run_record(&run)?;
    Ok(Some(run))
}

pub(crate) async fn list_runs<C: GenericClient>(
    c: &C,
    tenant: &str,
    cursor: Option<Cursor>,
    limit: usize,
) -> StoreResult<Page> {
    let fetch = to_i64(limit as u64 + 1, "limit")?;
    let rows = match &cursor {
        None => {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE tenant = $1 \
                 ORDER BY created_at_ms DESC, run_id DESC LIMIT $2"
            );
            c.query(&sql, &[&tenant, &fetch]).await
        }
        Some(cur) => {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE tenant = $1 \
                 AND (created_at_ms, run_id) < ($2, $3) \
                 ORDER BY created_at_ms DESC, run_id DESC LIMIT $4"
            );
            c.query(&sql, &[&tenant, &cur.created_at_ms, &cur.run_id, &fetch])
                .await
        }
    }
    .map_err(db_error)?;
    let mut runs = decode_all(&rows, run_from_row)?;
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

/// Journal entries after `after_seq`; `c` should be a repeatable-read transaction.
pub(crate) async fn load_journal<C: GenericClient>(
    c: &C,
    tenant: &str,
    run_id: &str,
    after_seq: u64,
) -> StoreResult<Vec<JournalEntry>> {
    let head = c
        .query_opt(
            "SELECT journal_len, journal_head FROM runs WHERE tenant = $1 AND run_id = $2",
            &[&tenant, &run_id],
        )
        .await
        .map_err(db_error)?
        .ok_or(StoreError::NotFound)?;
    let len: i64 = get(&head, 0)?;
    let head_hash: Option<String> = get(&head, 1)?;
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {JOURNAL_COLUMNS} FROM journal WHERE tenant = $1 AND run_id = $2 AND seq > $3 \
         ORDER BY seq"
    );
    let rows = c
        .query(&sql, &[&tenant, &run_id, &after])
        .await
        .map_err(db_error)?;
    let entries = decode_all(&rows, journal_from_row)?;
    validate::journal_loaded(&entries, after_seq)?;
    // The stored head must agree with the journal's last entry.
    if let Some(last) = entries.last() {
        let agrees = u64::try_from(len).ok() == Some(last.seq)
            && head_hash.as_deref() == Some(last.hash.as_str());
        if !agrees {
            return Err(StoreError::Corrupt(format!(
                "run {tenant}/{run_id}: journal does not end at the stored head"
            )));
        }
    }
    Ok(entries)
}

pub(crate) async fn active_runs<C: GenericClient>(c: &C) -> StoreResult<Vec<(String, String)>> {
    let sql =
        format!("SELECT tenant, run_id FROM runs WHERE status IN {ACTIVE} ORDER BY tenant, run_id");
    let rows = c.query(&sql, &[]).await.map_err(db_error)?;
    rows.iter().map(|r| Ok((get(r, 0)?, get(r, 1)?))).collect()
}

pub(crate) async fn due_runs<C: GenericClient>(
    c: &C,
    now_ms: i64,
) -> StoreResult<Vec<(String, String, i64)>> {
    let sql = format!(
        "SELECT tenant, run_id, next_wake_at_ms FROM runs \
         WHERE next_wake_at_ms IS NOT NULL AND next_wake_at_ms <= $1 \
         AND status IN {ACTIVE} ORDER BY next_wake_at_ms, tenant, run_id"
    );
    let rows = c.query(&sql, &[&now_ms]).await.map_err(db_error)?;
    rows.iter()
        .map(|r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?)))
        .collect()
}

pub(crate) async fn queued_count<C: GenericClient>(
    c: &C,
    tenant: &str,
    pack_name: &str,
) -> StoreResult<u64> {
    let row = c
        .query_one(
            "SELECT COUNT(*) FROM runs WHERE status = $1 AND tenant = $2 AND pack_name = $3",
            &[&status::PENDING, &tenant, &pack_name],
        )
        .await
        .map_err(db_error)?;
    to_u64(get(&row, 0)?, "count")
}

/// Log entries after `after_sequence`; `c` should be a repeatable-read transaction.
pub(crate) async fn logs<C: GenericClient>(
    c: &C,
    tenant: &str,
    run_id: &str,
    after_sequence: u64,
    limit: usize,
) -> StoreResult<Vec<LogRecord>> {
    run_exists(c, tenant, run_id).await?;
    let after = i64::try_from(after_sequence).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {LOG_COLUMNS} FROM logs WHERE tenant = $1 AND run_id = $2 AND sequence > $3 \
         ORDER BY sequence LIMIT $4"
    );
    let limit = to_i64(limit as u64, "limit")?;
    let rows = c
        .query(&sql, &[&tenant, &run_id, &after, &limit])
        .await
        .map_err(db_error)?;
    let records = decode_all(&rows, log_from_row)?;
    validate::logs_loaded(&records, after_sequence)?;
    Ok(records)
}

/// The run's artifacts in declared order; `c` should be a repeatable-read transaction.
pub(crate) async fn list_artifacts<C: GenericClient>(
    c: &C,
    tenant: &str,
    run_id: &str,
) -> StoreResult<Vec<ArtifactRecord>> {
    run_exists(c, tenant, run_id).await?;
    let sql = format!(
        "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE tenant = $1 AND run_id = $2 \
         ORDER BY position"
    );
    let rows = c.query(&sql, &[&tenant, &run_id]).await.map_err(db_error)?;
    let records = decode_all(&rows, artifact_from_row)?;
    records.iter().try_for_each(validate::artifact_loaded)?;
    Ok(records)
}
