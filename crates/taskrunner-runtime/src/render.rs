//! The wire form of a log entry (the contract's `RunLogEntry` plus the `sequence` extension),
//! shared by the CLI's `--format ndjson` and the HTTP logs endpoint so both print the same lines.

use serde_json::{Map, Value};
use taskrunner_engine::Timestamp;
use taskrunner_store::LogRecord;

/// `{"timestamp", "level", "eventType", "message", "stepId"?, "metadata"?, "sequence"}`;
/// metadata values are strings.
pub fn log_entry_json(record: &LogRecord) -> Value {
    let mut entry = Map::new();
    entry.insert(
        "timestamp".into(),
        Value::String(Timestamp(record.timestamp_ms).to_rfc3339()),
    );
    entry.insert("level".into(), Value::String(record.level.clone()));
    entry.insert("eventType".into(), Value::String(record.event_type.clone()));
    entry.insert("message".into(), Value::String(record.message.clone()));
    if let Some(step) = &record.step_id {
        entry.insert("stepId".into(), Value::String(step.clone()));
    }
    if let Ok(Value::Object(metadata)) = serde_json::from_str::<Value>(&record.metadata_json)
        && !metadata.is_empty()
    {
        let strings = metadata
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, Value::String(text))
            })
            .collect();
        entry.insert("metadata".into(), Value::Object(strings));
    }
    entry.insert("sequence".into(), Value::from(record.sequence));
    Value::Object(entry)
}
