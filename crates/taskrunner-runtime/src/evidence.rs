//! Reading what a finished run's evidence is built from (`taskrunner-evidence` builds and
//! signs it): the stored plan, journal, artifact digests and log entries, and the run's secret
//! values for masking. Shared by `Runtime::evidence_source` (HTTP) and the CLI, which reads the
//! embedded store without starting a runtime.

use taskrunner_engine::{Secrets, Timestamp};
use taskrunner_evidence::{ArtifactDigest, RunMaterial, sha256_hex};
use taskrunner_plan::Plan;
use taskrunner_store::{ArtifactRecord, Store, StoreError, artifact, status};

use crate::error::RuntimeError;
use crate::ports::SecretProvider;
use crate::records::from_entry;
use crate::render::log_entry_json;

/// Log entries read per store call.
const LOG_PAGE: usize = 1000;

/// A finished run's evidence material and what goes with it into an export.
#[derive(Debug, Clone)]
pub struct EvidenceSource {
    /// What the statements are built from.
    pub material: RunMaterial,
    /// The run's secret values as this host resolves them (masking only).
    pub secrets: Secrets,
    /// `logs.ndjson`: one `log_entry_json` line per entry (its SHA-256 is in the material).
    pub logs_ndjson: String,
    /// The stored artifact rows (an export copies their blobs).
    pub artifacts: Vec<ArtifactRecord>,
}

/// Reads the evidence material of `run_id`: `NotFound` without such a run in the tenant,
/// `RunNotFinished` while it is active, `Corrupt` when its plan or journal do not verify.
pub async fn evidence_source(
    store: &Store,
    secrets: &dyn SecretProvider,
    tenant: &str,
    run_id: &str,
) -> Result<EvidenceSource, RuntimeError> {
    let corrupt = |message: String| RuntimeError::Corrupt {
        run_id: run_id.to_owned(),
        message,
    };
    let record = store
        .runs
        .get_run(tenant, run_id)
        .await?
        .ok_or_else(|| RuntimeError::NotFound(format!("run {run_id}")))?;
    if !status::is_terminal(&record.status) {
        return Err(RuntimeError::RunNotFinished(record.status));
    }
    let plan = Plan::from_canonical_json(&record.plan_json, Some(&record.plan_hash))
        .map_err(|e| corrupt(e.to_string()))?;
    let mut resolved = Secrets::new();
    for def in plan.secrets() {
        if let Some(value) = secrets.secret(&def.name)
            && value.len() >= crate::SECRET_BYTES_MIN
        {
            resolved.insert(def.name.clone(), value);
        }
    }
    let journal = store
        .runs
        .load_journal(tenant, run_id, 0)
        .await?
        .iter()
        .map(from_entry)
        .collect::<Result<Vec<_>, _>>()
        .map_err(corrupt)?;

    let mut logs_ndjson = String::new();
    let mut manifest_digest = None;
    let mut after = 0;
    loop {
        let page = match store.logs.logs(tenant, run_id, after, LOG_PAGE).await {
            Err(StoreError::NotFound) => Vec::new(),
            other => other?,
        };
        for entry in &page {
            if entry.event_type == "run.created" && manifest_digest.is_none() {
                manifest_digest = serde_json::from_str::<serde_json::Value>(&entry.metadata_json)
                    .ok()
                    .and_then(|m| m["manifestDigest"].as_str().map(str::to_owned));
            }
            logs_ndjson.push_str(&log_entry_json(entry).to_string());
            logs_ndjson.push('\n');
            after = entry.sequence;
        }
        if page.len() < LOG_PAGE {
            break;
        }
    }

    let artifacts = store.artifacts.list_artifacts(tenant, run_id).await?;
    let digests = artifacts
        .iter()
        .map(|a| ArtifactDigest {
            name: a.name.clone(),
            kind: a.kind.clone(),
            status: a.status.clone(),
            sha256: match (a.status.as_str(), a.kind.as_str()) {
                (artifact::STATUS_CAPTURED, artifact::KIND_OBJECT) => a
                    .expression_json
                    .as_deref()
                    .map(|j| sha256_hex(j.as_bytes())),
                (artifact::STATUS_CAPTURED, _) => a.sha256.clone(),
                _ => None,
            },
        })
        .collect();

    Ok(EvidenceSource {
        material: RunMaterial {
            tenant: tenant.to_owned(),
            run_id: run_id.to_owned(),
            status: record.status,
            plan_json: record.plan_json,
            plan_hash: record.plan_hash,
            created_at: Timestamp(record.created_at_ms),
            host_digest: record.host_digest,
            manifest_digest,
            journal,
            logs_sha256: sha256_hex(logs_ndjson.as_bytes()),
            artifacts: digests,
        },
        secrets: resolved,
        logs_ndjson,
        artifacts,
    })
}
