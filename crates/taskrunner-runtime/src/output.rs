//! Output capture: pack outputs become artifact records (files copied from the run workspace
//! into the blob store), and step output lines become `step.output` log entries. Every write
//! goes through the run's [`RunWriter`].

use std::path::{Component, Path};
use std::sync::Arc;

use serde_json::{Map, Value};
use taskrunner_engine::{OutputResult, Secrets};
use taskrunner_exec::{OutputLine, OutputStream};
use taskrunner_store::{ArtifactRecord, BlobSource, LogRecord, NewLog, Store};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::ports::Clock;
use crate::shared::Shared;
use crate::views::{ArtifactKind, ArtifactStatus};
use crate::writer::RunWriter;

/// Output lines written to the store in one append at most.
const OUTPUT_BATCH_MAX: usize = 128;

/// Captures pack outputs as artifacts (SPEC §5.6, rule 20). A failed capture makes that
/// artifact `failed` and logs `artifact.failed`; it never changes the run's status.
pub(crate) async fn capture_outputs(
    shared: &Shared,
    writer: &RunWriter,
    tenant: &str,
    run_id: &str,
    workspace: &Path,
    outputs: Vec<OutputResult>,
    secrets: &Secrets,
) -> Vec<NewLog> {
    let stores = &shared.stores;
    let now = shared.clock.now();
    let mut failures = Vec::new();
    for output in outputs {
        let record = match output {
            OutputResult::Object { name, value, error } => match (value, error) {
                (Some(value), _) => ArtifactRecord {
                    status: ArtifactStatus::Captured.as_str().into(),
                    captured_at_ms: Some(now.millis()),
                    expression_json: Some(taskrunner_plan::jcs::to_canonical(&value)),
                    ..artifact(&name, ArtifactKind::Object)
                },
                (None, error) => {
                    let notes = error.unwrap_or_else(|| "the expression produced no value".into());
                    failures.push((name.clone(), notes.clone()));
                    ArtifactRecord {
                        status: ArtifactStatus::Failed.as_str().into(),
                        notes: Some(notes),
                        ..artifact(&name, ArtifactKind::Object)
                    }
                }
            },
            OutputResult::File { name, path, error } => {
                let captured = match (path, error) {
                    (Some(path), None) => {
                        capture_file(stores, tenant, run_id, workspace, &name, &path, secrets)
                            .await
                            .map(|r| (path, r))
                    }
                    (path, error) => Err((path, error.unwrap_or_else(|| "no path".into()))),
                };
                match captured {
                    Ok((path, (stored_path, sha256, size))) => ArtifactRecord {
                        source_path: Some(path),
                        stored_path: Some(stored_path),
                        status: ArtifactStatus::Captured.as_str().into(),
                        captured_at_ms: Some(now.millis()),
                        sha256: Some(sha256),
                        size_bytes: Some(size),
                        ..artifact(&name, ArtifactKind::File)
                    },
                    Err((path, notes)) => {
                        failures.push((name.clone(), notes.clone()));
                        ArtifactRecord {
                            source_path: path,
                            status: ArtifactStatus::Failed.as_str().into(),
                            notes: Some(notes),
                            ..artifact(&name, ArtifactKind::File)
                        }
                    }
                }
            }
        };
        if let Err(e) = writer.upsert_artifact(record).await {
            tracing::error!(error = %e, "artifact record could not be stored");
        }
    }
    failures
        .into_iter()
        .map(|(name, reason)| NewLog {
            timestamp_ms: now.millis(),
            level: "warn".into(),
            event_type: "artifact.failed".into(),
            message: format!("Output {name} was not captured: {reason}"),
            step_id: None,
            metadata_json: serde_json::json!({"output": name, "reason": reason}).to_string(),
        })
        .collect()
}

/// Copies one file output from the workspace into the blob store: `(stored path, sha256,
/// size)`, or the path and why not.
async fn capture_file(
    stores: &Store,
    tenant: &str,
    run_id: &str,
    workspace: &Path,
    name: &str,
    path: &str,
    secrets: &Secrets,
) -> Result<(String, String, u64), (Option<String>, String)> {
    let fail = |why: String| (Some(path.to_owned()), why);
    let relative = Path::new(path);
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(fail("path escapes the workspace".into()));
    }
    let root = std::fs::canonicalize(workspace)
        .map_err(|e| fail(format!("workspace unavailable: {e}")))?;
    let full = std::fs::canonicalize(root.join(relative))
        .map_err(|_| fail("file not found in the workspace".into()))?;
    if !full.starts_with(&root) {
        return Err(fail(
            "path escapes the workspace (through a symbolic link)".into(),
        ));
    }
    if !full.is_file() {
        return Err(fail("not a regular file".into()));
    }
    // A file holding a secret is refused, never copied into the data directory (rule 19).
    crate::artifact_secrets::refuse_if_secret(secrets.masker(), &full)
        .await
        .map_err(fail)?;
    let blob = stores
        .artifacts
        .put_file(tenant, run_id, name, BlobSource::File(full))
        .await
        .map_err(|e| fail(format!("could not store the file: {e}")))?;
    Ok((blob.stored_path, blob.sha256, blob.size_bytes))
}

/// Puts `artifact.failed` entries before the run's end entry (SPEC §5.3 "End").
pub(crate) fn splice_before_end(logs: &mut Vec<NewLog>, failures: Vec<NewLog>) {
    let end = logs
        .iter()
        .position(|l| {
            matches!(
                l.event_type.as_str(),
                "run.completed" | "run.failed" | "run.cancelled"
            )
        })
        .unwrap_or(logs.len());
    logs.splice(end..end, failures);
}

/// Step output lines → `step.output` log entries (stdout `info`, stderr `warn`), appended in
/// batches; never blocks the run on a slow follower (broadcast drops for laggards). A store
/// that cannot take writes now is waited out until `stop` (the driver's) is cancelled.
pub(crate) async fn forward_output(
    clock: Arc<dyn Clock>,
    writer: RunWriter,
    step_id: String,
    mut lines: mpsc::Receiver<OutputLine>,
    live: broadcast::Sender<LogRecord>,
    stop: CancellationToken,
) {
    let mut batch = Vec::new();
    while let Some(first) = lines.recv().await {
        batch.push(first);
        while batch.len() < OUTPUT_BATCH_MAX {
            match lines.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        let now = clock.now().millis();
        let logs: Vec<NewLog> = batch
            .drain(..)
            .map(|line| {
                let (level, stream) = match line.stream {
                    OutputStream::Stdout => ("info", "stdout"),
                    OutputStream::Stderr => ("warn", "stderr"),
                    // An unenforced control (unsandboxed development mode) is loud.
                    OutputStream::Sandbox if line.metadata.contains_key("unsandboxed") => {
                        ("warn", "sandbox")
                    }
                    OutputStream::Sandbox => ("info", "sandbox"),
                };
                let mut metadata: Map<String, Value> = line
                    .metadata
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                metadata.insert("stream".into(), Value::String(stream.into()));
                NewLog {
                    timestamp_ms: now,
                    level: level.into(),
                    event_type: "step.output".into(),
                    message: line.line,
                    step_id: Some(step_id.clone()),
                    metadata_json: Value::Object(metadata).to_string(),
                }
            })
            .collect();
        match writer
            .append_logs_until_stored(logs.clone(), &*clock, &stop)
            .await
        {
            Ok(sequences) => {
                for (sequence, log) in sequences.into_iter().zip(logs) {
                    let _ = live.send(LogRecord::from_new(sequence, log));
                }
            }
            Err(e) => tracing::error!(error = %e, "step output could not be stored"),
        }
    }
}

/// A declared artifact, not captured yet.
pub(crate) fn artifact(name: &str, kind: ArtifactKind) -> ArtifactRecord {
    ArtifactRecord {
        name: name.to_owned(),
        kind: kind.as_str().to_owned(),
        source_path: None,
        stored_path: None,
        status: ArtifactStatus::Pending.as_str().into(),
        notes: None,
        captured_at_ms: None,
        expression_json: None,
        sha256: None,
        size_bytes: None,
    }
}
