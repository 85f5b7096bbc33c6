//! Record validation at the store seam (STYLE habit 8): every adapter checks records before
//! writing them and again after reading them, with the same rules and the same limits.
//!
//! "Before writing" failures are [`StoreError::Invalid`]; "after reading" failures are
//! [`StoreError::Corrupt`]. Checks that need stored state (expected journal length, chaining to
//! the stored head) are done by the adapters inside their write transaction.

use crate::error::StoreError;
use crate::records::{
    ArtifactRecord, JournalEntry, LogRecord, NewLog, NewRun, RunRecord, Snapshot, Transition,
    artifact, status,
};

/// Longest tenant id (rule 26).
pub const TENANT_BYTES_MAX: usize = 63;
/// Longest run id (rule 26).
pub const RUN_ID_BYTES_MAX: usize = 128;
/// Longest pack name / version / plan hash / host digest / hash / level / event type / name.
pub const SHORT_TEXT_BYTES_MAX: usize = 1024;
/// Largest frozen plan JSON.
pub const PLAN_JSON_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest journal entry payload.
pub const JOURNAL_PAYLOAD_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest snapshot.
pub const SNAPSHOT_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest log message.
pub const LOG_MESSAGE_BYTES_MAX: usize = 256 * 1024;
/// Largest log metadata object.
pub const LOG_METADATA_BYTES_MAX: usize = 64 * 1024;
/// Largest artifact notes / source path / expression JSON.
pub const ARTIFACT_TEXT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most journal entries in one write (create or transition).
pub const WRITE_JOURNAL_ENTRIES_MAX: usize = 4096;
/// Most log entries in one write (create, transition or append).
pub const WRITE_LOGS_MAX: usize = 16_384;
/// Most declared artifacts of one run.
pub const RUN_ARTIFACTS_MAX: usize = 4096;

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Invalid(msg.into())
}

fn corrupt(msg: impl Into<String>) -> StoreError {
    StoreError::Corrupt(msg.into())
}

/// The pattern of a tenant id (SPEC §8 rule 26), as messages show it.
pub const TENANT_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,62}$";
/// The pattern of a run id (SPEC §8 rule 26), as messages show it.
pub const RUN_ID_PATTERN: &str = "^[a-zA-Z0-9_-]{1,128}$";

/// A tenant or run id that breaks SPEC §8 rule 26. Displays as
/// `tenant 'Acme' must match ^[a-z0-9][a-z0-9._-]{0,62}$` (control characters escaped, long
/// values shortened); converts into [`StoreError::Invalid`].
///
/// These validators are the one place the rule lives: the runtime, the HTTP layer and the
/// configuration call them rather than keeping their own copy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} '{shown}' must match {pattern}")]
pub struct InvalidId {
    what: &'static str,
    shown: String,
    pattern: &'static str,
}

impl InvalidId {
    fn new(what: &'static str, value: &str, pattern: &'static str) -> InvalidId {
        const SHOWN_CHARS_MAX: usize = 160;
        let mut shown: String = value
            .chars()
            .take(SHOWN_CHARS_MAX)
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_debug().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect();
        if value.chars().nth(SHOWN_CHARS_MAX).is_some() {
            shown.push('…');
        }
        InvalidId {
            what,
            shown,
            pattern,
        }
    }
}

impl From<InvalidId> for StoreError {
    fn from(err: InvalidId) -> StoreError {
        StoreError::Invalid(err.to_string())
    }
}

/// Whether `tenant` is a tenant id: `^[a-z0-9][a-z0-9._-]{0,62}$` (SPEC §8 rule 26).
pub fn is_tenant(tenant: &str) -> bool {
    let bytes = tenant.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    first_ok && rest_ok && bytes.len() <= TENANT_BYTES_MAX
}

/// Whether `run_id` is a run id: `^[a-zA-Z0-9_-]{1,128}$` (SPEC §8 rule 26).
pub fn is_run_id(run_id: &str) -> bool {
    !run_id.is_empty()
        && run_id.len() <= RUN_ID_BYTES_MAX
        && run_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// A tenant id as rule 26 defines it: `^[a-z0-9][a-z0-9._-]{0,62}$`.
pub fn tenant(tenant: &str) -> Result<(), InvalidId> {
    if is_tenant(tenant) {
        Ok(())
    } else {
        Err(InvalidId::new("tenant", tenant, TENANT_PATTERN))
    }
}

/// A run id as rule 26 defines it: `^[a-zA-Z0-9_-]{1,128}$`.
pub fn run_id(run_id: &str) -> Result<(), InvalidId> {
    if is_run_id(run_id) {
        Ok(())
    } else {
        Err(InvalidId::new("run id", run_id, RUN_ID_PATTERN))
    }
}

/// Tenant and run id together.
pub fn run_key(tenant_id: &str, run: &str) -> Result<(), InvalidId> {
    tenant(tenant_id)?;
    run_id(run)
}

fn text(field: &str, value: &str, max: usize, non_empty: bool) -> Result<(), String> {
    if non_empty && value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if value.len() > max {
        return Err(format!("{field} is longer than {max} bytes"));
    }
    Ok(())
}

fn json(field: &str, value: &str, max: usize) -> Result<(), String> {
    text(field, value, max, true)?;
    serde_json::from_str::<serde::de::IgnoredAny>(value)
        .map(|_| ())
        .map_err(|e| format!("{field} is not valid JSON: {e}"))
}

fn json_object(field: &str, value: &str, max: usize) -> Result<(), String> {
    text(field, value, max, true)?;
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(format!("{field} is not a JSON object")),
        Err(e) => Err(format!("{field} is not valid JSON: {e}")),
    }
}

fn run_status(value: &str) -> Result<(), String> {
    if status::ALL.contains(&value) {
        Ok(())
    } else {
        Err(format!("unknown run status {value:?}"))
    }
}

/// Lowercase hex of the given length.
pub fn is_lower_hex(value: &str, len: usize) -> bool {
    value.len() == len
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn journal_entry(entry: &JournalEntry) -> Result<(), String> {
    let at = format!("journal[{}]", entry.seq);
    json(
        &format!("{at}.payload_json"),
        &entry.payload_json,
        JOURNAL_PAYLOAD_BYTES_MAX,
    )?;
    text(
        &format!("{at}.prev_hash"),
        &entry.prev_hash,
        SHORT_TEXT_BYTES_MAX,
        true,
    )?;
    text(
        &format!("{at}.hash"),
        &entry.hash,
        SHORT_TEXT_BYTES_MAX,
        true,
    )?;
    Ok(())
}

/// Journal entries continuing a journal of length `after_seq` whose last hash is `head`:
/// seqs `after_seq + 1 ..` without gaps, each `prev_hash` equal to the previous `hash`
/// (to `head` for the first one, when `head` is known), hashes non-empty, payloads JSON.
fn chain(entries: &[JournalEntry], after_seq: u64, head: Option<&str>) -> Result<(), String> {
    let mut prev: Option<&str> = head;
    for (i, entry) in entries.iter().enumerate() {
        let expected = after_seq
            .checked_add(i as u64 + 1)
            .ok_or_else(|| "journal sequence overflows".to_owned())?;
        if entry.seq != expected {
            return Err(format!(
                "journal entry has seq {}, expected {expected}",
                entry.seq
            ));
        }
        journal_entry(entry)?;
        if let Some(prev_hash) = prev
            && entry.prev_hash != prev_hash
        {
            return Err(format!(
                "journal[{}].prev_hash does not link to the previous entry's hash",
                entry.seq
            ));
        }
        prev = Some(&entry.hash);
    }
    Ok(())
}

/// Before writing: `entries` continue a journal of length `after_seq` with head `head`.
pub fn journal_append(
    entries: &[JournalEntry],
    after_seq: u64,
    head: Option<&str>,
) -> Result<(), StoreError> {
    chain(entries, after_seq, head).map_err(invalid)
}

/// After reading: entries loaded after `after_seq` are contiguous and linked.
pub fn journal_loaded(entries: &[JournalEntry], after_seq: u64) -> Result<(), StoreError> {
    chain(entries, after_seq, None).map_err(corrupt)
}

fn new_log(log: &NewLog) -> Result<(), String> {
    text("log.level", &log.level, SHORT_TEXT_BYTES_MAX, true)?;
    text(
        "log.event_type",
        &log.event_type,
        SHORT_TEXT_BYTES_MAX,
        true,
    )?;
    text("log.message", &log.message, LOG_MESSAGE_BYTES_MAX, false)?;
    if let Some(step) = &log.step_id {
        text("log.step_id", step, SHORT_TEXT_BYTES_MAX, true)?;
    }
    json_object(
        "log.metadata_json",
        &log.metadata_json,
        LOG_METADATA_BYTES_MAX,
    )
}

/// Before writing: log entries to append.
pub fn new_logs(logs: &[NewLog]) -> Result<(), StoreError> {
    if logs.len() > WRITE_LOGS_MAX {
        return Err(invalid(format!(
            "more than {WRITE_LOGS_MAX} log entries in one write"
        )));
    }
    logs.iter().try_for_each(new_log).map_err(invalid)
}

/// After reading: log records loaded after `after_sequence` are contiguous and well-formed.
pub fn logs_loaded(records: &[LogRecord], after_sequence: u64) -> Result<(), StoreError> {
    for (i, record) in records.iter().enumerate() {
        let expected = after_sequence.saturating_add(i as u64 + 1);
        if record.sequence != expected {
            return Err(corrupt(format!(
                "log record has sequence {}, expected {expected}",
                record.sequence
            )));
        }
        let as_new = NewLog {
            timestamp_ms: record.timestamp_ms,
            level: record.level.clone(),
            event_type: record.event_type.clone(),
            message: record.message.clone(),
            step_id: record.step_id.clone(),
            metadata_json: record.metadata_json.clone(),
        };
        new_log(&as_new).map_err(|e| corrupt(format!("log record {}: {e}", record.sequence)))?;
    }
    Ok(())
}

fn artifact_record(record: &ArtifactRecord) -> Result<(), String> {
    text("artifact.name", &record.name, SHORT_TEXT_BYTES_MAX, true)?;
    let name = &record.name;
    if ![artifact::KIND_FILE, artifact::KIND_OBJECT].contains(&record.kind.as_str()) {
        return Err(format!(
            "artifact {name:?} has unknown kind {:?}",
            record.kind
        ));
    }
    let statuses = [
        artifact::STATUS_PENDING,
        artifact::STATUS_CAPTURED,
        artifact::STATUS_FAILED,
    ];
    if !statuses.contains(&record.status.as_str()) {
        return Err(format!(
            "artifact {name:?} has unknown status {:?}",
            record.status
        ));
    }
    for (field, value) in [
        ("source_path", &record.source_path),
        ("notes", &record.notes),
    ] {
        if let Some(v) = value {
            text(
                &format!("artifact {name:?} {field}"),
                v,
                ARTIFACT_TEXT_BYTES_MAX,
                false,
            )?;
        }
    }
    if let Some(expr) = &record.expression_json {
        json(
            &format!("artifact {name:?} expression_json"),
            expr,
            ARTIFACT_TEXT_BYTES_MAX,
        )?;
    }
    if let Some(sha) = &record.sha256
        && !is_lower_hex(sha, 64)
    {
        return Err(format!(
            "artifact {name:?} sha256 is not 64 lowercase hex digits"
        ));
    }
    if let Some(path) = &record.stored_path {
        let Some(digest) = crate::blob::digest_of_stored_path(path) else {
            return Err(format!(
                "artifact {name:?} stored_path {path:?} is not a blob path"
            ));
        };
        if record.sha256.as_deref() != Some(digest) {
            return Err(format!(
                "artifact {name:?} stored_path does not match its sha256"
            ));
        }
    }
    if record.kind == artifact::KIND_FILE
        && record.status == artifact::STATUS_CAPTURED
        && (record.stored_path.is_none() || record.sha256.is_none() || record.size_bytes.is_none())
    {
        return Err(format!(
            "captured file artifact {name:?} needs stored_path, sha256 and size_bytes"
        ));
    }
    Ok(())
}

/// Before writing: one artifact record.
pub fn artifact_to_write(record: &ArtifactRecord) -> Result<(), StoreError> {
    artifact_record(record).map_err(invalid)
}

/// After reading: one artifact record.
pub fn artifact_loaded(record: &ArtifactRecord) -> Result<(), StoreError> {
    artifact_record(record).map_err(corrupt)
}

fn snapshot(snap: &Snapshot, journal_len: u64) -> Result<(), String> {
    if snap.seq > journal_len {
        return Err(format!(
            "snapshot seq {} is past the journal length {journal_len}",
            snap.seq
        ));
    }
    json("snapshot.state_json", &snap.state_json, SNAPSHOT_BYTES_MAX)
}

fn run_header(
    pack_name: &str,
    pack_version: &str,
    plan_hash: &str,
    plan_json: &str,
    host_digest: Option<&str>,
) -> Result<(), String> {
    text("pack_name", pack_name, SHORT_TEXT_BYTES_MAX, true)?;
    text("pack_version", pack_version, SHORT_TEXT_BYTES_MAX, false)?;
    text("plan_hash", plan_hash, SHORT_TEXT_BYTES_MAX, true)?;
    json("plan_json", plan_json, PLAN_JSON_BYTES_MAX)?;
    if let Some(d) = host_digest {
        text("host_digest", d, SHORT_TEXT_BYTES_MAX, true)?;
    }
    Ok(())
}

/// Before writing: a new run with its first journal records, logs and declared artifacts.
pub fn new_run(run: &NewRun) -> Result<(), StoreError> {
    run_key(&run.tenant, &run.run_id)?;
    run_header(
        &run.pack_name,
        &run.pack_version,
        &run.plan_hash,
        &run.plan_json,
        run.host_digest.as_deref(),
    )
    .map_err(invalid)?;
    run_status(&run.status).map_err(invalid)?;
    if run.journal.len() > WRITE_JOURNAL_ENTRIES_MAX {
        return Err(invalid(format!(
            "more than {WRITE_JOURNAL_ENTRIES_MAX} journal entries in one write"
        )));
    }
    journal_append(&run.journal, 0, None)?;
    new_logs(&run.logs)?;
    if run.artifacts.len() > RUN_ARTIFACTS_MAX {
        return Err(invalid(format!(
            "more than {RUN_ARTIFACTS_MAX} artifacts in one run"
        )));
    }
    let mut names = std::collections::BTreeSet::new();
    for record in &run.artifacts {
        artifact_to_write(record)?;
        if !names.insert(record.name.as_str()) {
            return Err(invalid(format!(
                "artifact {:?} is declared twice",
                record.name
            )));
        }
    }
    Ok(())
}

/// Before writing: the parts of a transition that need no stored state.
pub fn transition(t: &Transition) -> Result<(), StoreError> {
    run_key(&t.tenant, &t.run_id)?;
    if let Some(s) = &t.status {
        run_status(s).map_err(invalid)?;
    }
    if t.journal.len() > WRITE_JOURNAL_ENTRIES_MAX {
        return Err(invalid(format!(
            "more than {WRITE_JOURNAL_ENTRIES_MAX} journal entries in one write"
        )));
    }
    // Chaining to the stored head is checked by the adapter, inside its write transaction.
    journal_append(&t.journal, t.expected_journal_len, None)?;
    new_logs(&t.logs)?;
    if let Some(snap) = &t.snapshot {
        let new_len = t.expected_journal_len + t.journal.len() as u64;
        snapshot(snap, new_len).map_err(invalid)?;
    }
    Ok(())
}

/// The journal length after applying `t` (call after [`transition`] succeeded).
pub fn journal_len_after(t: &Transition) -> u64 {
    t.expected_journal_len + t.journal.len() as u64
}

/// The head after applying `t` to a journal whose head is `head`.
pub fn journal_head_after(t: &Transition, head: Option<String>) -> Option<String> {
    t.journal.last().map(|e| e.hash.clone()).or(head)
}

/// After reading: a run record.
pub fn run_record(run: &RunRecord) -> Result<(), StoreError> {
    let who = format!("run {}/{}", run.tenant, run.run_id);
    run_key(&run.tenant, &run.run_id).map_err(|e| corrupt(format!("{who}: {e}")))?;
    let checks = || -> Result<(), String> {
        run_header(
            &run.pack_name,
            &run.pack_version,
            &run.plan_hash,
            &run.plan_json,
            run.host_digest.as_deref(),
        )?;
        run_status(&run.status)?;
        match (&run.journal_head, run.journal_len) {
            (None, 0) => {}
            (Some(h), n) if n > 0 && !h.is_empty() => {}
            _ => return Err("journal_head does not agree with journal_len".to_owned()),
        }
        if let Some(snap) = &run.snapshot {
            snapshot(snap, run.journal_len)?;
        }
        Ok(())
    };
    checks().map_err(|e| corrupt(format!("{who}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_follow_rule_26() {
        let longest = format!("a{}", "b".repeat(62));
        for ok in ["acme", "0", "a.b_c-d", longest.as_str()] {
            assert_eq!(tenant(ok), Ok(()), "{ok}");
            assert!(is_tenant(ok));
        }
        let too_long = format!("a{}", "b".repeat(63));
        for bad in ["", "Acme", "-a", ".a", "a b", "a/b", "é", too_long.as_str()] {
            assert!(tenant(bad).is_err(), "{bad:?}");
            assert!(!is_tenant(bad));
        }
    }

    #[test]
    fn run_ids_follow_rule_26() {
        let longest = "R".repeat(128);
        for ok in ["r", "Run_1-a", "-", longest.as_str()] {
            assert_eq!(run_id(ok), Ok(()), "{ok}");
            assert!(is_run_id(ok));
        }
        let too_long = "R".repeat(129);
        for bad in ["", "a.b", "a b", "a/b", "ü", too_long.as_str()] {
            assert!(run_id(bad).is_err(), "{bad:?}");
            assert!(!is_run_id(bad));
        }
    }

    #[test]
    fn messages_name_the_value_and_the_pattern() {
        assert_eq!(
            tenant("Acme").unwrap_err().to_string(),
            "tenant 'Acme' must match ^[a-z0-9][a-z0-9._-]{0,62}$"
        );
        assert_eq!(
            run_id("a/b").unwrap_err().to_string(),
            "run id 'a/b' must match ^[a-zA-Z0-9_-]{1,128}$"
        );
        assert_eq!(
            run_key("ok", "").unwrap_err().to_string(),
            "run id '' must match ^[a-zA-Z0-9_-]{1,128}$"
        );
        // Control characters are escaped and long values shortened, so a message stays one
        // readable line whatever it is handed.
        let message = tenant("a\nb\u{7}").unwrap_err().to_string();
        assert_eq!(
            message,
            "tenant 'a\\nb\\u{7}' must match ^[a-z0-9][a-z0-9._-]{0,62}$"
        );
        let long = run_id(&"x/".repeat(500)).unwrap_err().to_string();
        assert!(long.len() < 260, "{long}");
        assert!(long.contains("…'"), "{long}");
    }

    #[test]
    fn an_invalid_id_is_an_invalid_record() {
        let err: StoreError = run_key("Bad", "r").unwrap_err().into();
        assert_eq!(
            err,
            StoreError::Invalid("tenant 'Bad' must match ^[a-z0-9][a-z0-9._-]{0,62}$".into())
        );
        assert_eq!(
            err.to_string(),
            "invalid record: tenant 'Bad' must match ^[a-z0-9][a-z0-9._-]{0,62}$"
        );
    }

    #[test]
    fn every_run_status_is_either_active_or_terminal() {
        for s in status::ALL {
            assert_ne!(status::is_active(s), status::is_terminal(s), "{s}");
        }
        assert!(status::is_terminal(status::CANCELLED));
        assert!(!status::is_terminal("Unknown") && !status::is_active("Unknown"));
    }
}
