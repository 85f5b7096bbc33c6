//! Conversions between the engine's records (journal records, log entries) and the store's
//! opaque rows. The one place that knows both shapes.

use taskrunner_engine::{JournalRecord, LogEntry, Timestamp};
use taskrunner_store::{JournalEntry, NewLog, RunRecord, RunStore};

use crate::error::RuntimeError;

/// An engine log entry as a row to append.
pub(crate) fn to_new_log(entry: &LogEntry) -> NewLog {
    NewLog {
        timestamp_ms: entry.timestamp.millis(),
        level: entry.level.as_str().to_owned(),
        event_type: entry.event_type.clone(),
        message: entry.message.clone(),
        step_id: entry.step_id.clone(),
        metadata_json: serde_json::to_string(&entry.metadata).unwrap_or_else(|_| "{}".into()),
    }
}

/// A journal record as a stored entry.
pub(crate) fn to_entry(record: &JournalRecord) -> Result<JournalEntry, RuntimeError> {
    Ok(JournalEntry {
        seq: record.seq,
        at_ms: record.at.millis(),
        payload_json: serde_json::to_string(&record.event)
            .map_err(|e| RuntimeError::Internal(e.to_string()))?,
        prev_hash: record.prev_hash.clone(),
        hash: record.hash.clone(),
    })
}

/// A stored entry read back as a journal record (the message names the entry when its payload
/// does not decode).
pub fn from_entry(entry: &JournalEntry) -> Result<JournalRecord, String> {
    Ok(JournalRecord {
        seq: entry.seq,
        at: Timestamp(entry.at_ms),
        event: serde_json::from_str(&entry.payload_json)
            .map_err(|e| format!("journal record {}: {e}", entry.seq))?,
        prev_hash: entry.prev_hash.clone(),
        hash: entry.hash.clone(),
    })
}

/// A run's stored journal, verified from the plan hash to the head its run row records (so
/// nothing was altered, reordered or cut off): the run row and the records. For auditors, backup
/// checks and tests; the runtime itself verifies on every load.
pub async fn verified_journal(
    runs: &dyn RunStore,
    tenant: &str,
    run_id: &str,
) -> Result<(RunRecord, Vec<JournalRecord>), RuntimeError> {
    let corrupt = |message: String| RuntimeError::Corrupt {
        run_id: run_id.to_owned(),
        message,
    };
    let record = runs
        .get_run(tenant, run_id)
        .await?
        .ok_or_else(|| RuntimeError::NotFound(format!("run {run_id}")))?;
    let records = runs
        .load_journal(tenant, run_id, 0)
        .await?
        .iter()
        .map(from_entry)
        .collect::<Result<Vec<_>, _>>()
        .map_err(corrupt)?;
    taskrunner_engine::verify(&record.plan_hash, &records, record.journal_head.as_deref())
        .map_err(|e| corrupt(e.to_string()))?;
    Ok((record, records))
}
