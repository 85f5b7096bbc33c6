//! Building the two in-toto Statements v1 of a finished run and signing them.
//!
//! Field names follow the in-toto Attestation Framework (Statement v1, ResourceDescriptor v1)
//! and SLSA Provenance v1 (`buildDefinition`, `runDetails`); docs/EVIDENCE.md describes each
//! member and `docs/schemas/gate-verdicts-v1.schema.json` our own predicate.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use taskrunner_engine::{Event, JournalRecord, RunInfo, Secrets, Timestamp};
use taskrunner_plan::{Plan, PlanStepKind};

use crate::dsse::{Envelope, PAYLOAD_TYPE, sign_envelope};
use crate::error::EvidenceError;
use crate::keys::{EvidenceSigner, hex};

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of SLSA Provenance v1.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// Our `buildType`: a taskrunner run of a task pack (docs/EVIDENCE.md, "Build type").
pub const BUILD_TYPE: &str = "https://stellaops.org/taskrunner/run/v1";
/// Our predicate type for gate and policy verdicts (docs/EVIDENCE.md, "Gate verdicts").
pub const GATES_PREDICATE_TYPE: &str = "https://stellaops.org/taskrunner/gate-verdicts/v1";
/// The subject name of the plan (its digest is the plan hash).
pub const PLAN_SUBJECT: &str = "plan.json";

/// A run artifact as stored (only captured ones, with a digest, become subjects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactDigest {
    pub name: String,
    /// `file` or `object`.
    pub kind: String,
    /// `pending`, `captured` or `failed`.
    pub status: String,
    /// Bare lowercase hex SHA-256 of the stored bytes (file contents; an object's RFC 8785 JSON).
    pub sha256: Option<String>,
}

/// What the evidence of one run is built from: the store's rows, read by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMaterial {
    pub tenant: String,
    pub run_id: String,
    /// Stored run status (`Succeeded`, `Failed`, `Cancelled`).
    pub status: String,
    /// The frozen canonical plan JSON and its hash.
    pub plan_json: String,
    pub plan_hash: String,
    pub created_at: Timestamp,
    /// Digest of the host executor definitions at creation (rule 21), if any.
    pub host_digest: Option<String>,
    /// `sha256:` digest of the pack text the run was created from (recorded in its
    /// `run.created` log entry; `None` for runs created before it was recorded).
    pub manifest_digest: Option<String>,
    /// The whole journal, seq 1 first.
    pub journal: Vec<JournalRecord>,
    /// Hex SHA-256 of the run's `logs.ndjson` (the log entries as `GET …/logs` returns them).
    pub logs_sha256: String,
    pub artifacts: Vec<ArtifactDigest>,
}

/// The signed evidence of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub provenance: Value,
    pub gates: Value,
    pub provenance_envelope: Envelope,
    pub gates_envelope: Envelope,
}

impl Evidence {
    /// The wire form (`GET …/evidence`, `taskrunner evidence`): the key, both DSSE envelopes
    /// and both as Sigstore bundles v0.3.
    pub fn to_json(&self, key: &crate::keys::PublicKey) -> Value {
        json!({
            "keyId": key.key_id(),
            "algorithm": key.algorithm(),
            "provenance": self.provenance_envelope,
            "gates": self.gates_envelope,
            "bundles": {
                "provenance": self.provenance_envelope.sigstore_bundle(),
                "gates": self.gates_envelope.sigstore_bundle(),
            },
        })
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `journal.ndjson`: one record per line (`seq`, `at`, `event`, `prevHash`, `hash`).
pub fn journal_ndjson(records: &[JournalRecord]) -> String {
    let mut out = String::new();
    for r in records {
        out.push_str(&serde_json::to_string(r).unwrap_or_default());
        out.push('\n');
    }
    out
}

fn digest_of(prefixed: &str) -> Value {
    json!({"sha256": prefixed.strip_prefix("sha256:").unwrap_or(prefixed)})
}

fn subjects(material: &RunMaterial) -> Vec<Value> {
    let mut out = vec![json!({"name": PLAN_SUBJECT, "digest": digest_of(&material.plan_hash)})];
    for a in &material.artifacts {
        if let Some(sha) = &a.sha256 {
            out.push(json!({"name": a.name, "digest": {"sha256": sha}}));
        }
    }
    out
}

/// Builds both statements (unsigned): `(provenance, gate verdicts)`. Every string in them is
/// passed through `secrets` (the run's secret values): none can appear in the evidence.
pub fn build_statements(
    material: &RunMaterial,
    builder_id: &str,
    secrets: &Secrets,
) -> Result<(Value, Value), EvidenceError> {
    let plan = Plan::from_canonical_json(&material.plan_json, Some(&material.plan_hash))
        .map_err(|e| EvidenceError::Material(format!("plan: {e}")))?;
    let plan = Arc::new(plan);
    let plan_doc = plan.to_json();
    let info = RunInfo {
        run_id: material.run_id.clone(),
        tenant: material.tenant.clone(),
    };
    let run = taskrunner_engine::replay(
        plan.clone(),
        info,
        material.created_at,
        &material.journal,
        &Secrets::new(),
    )
    .map_err(|e| EvidenceError::Material(format!("journal: {e}")))?;
    let view = run.view();
    let head = material
        .journal
        .last()
        .map_or(material.plan_hash.clone(), |r| r.hash.clone());
    let started = material
        .journal
        .iter()
        .find(|r| matches!(r.event, Event::Started))
        .map(|r| r.at);
    let finished = material
        .journal
        .last()
        .map_or(material.created_at, |r| r.at);

    let mut host_executors: Vec<&str> = plan
        .steps()
        .iter()
        .filter_map(|s| match &s.kind {
            PlanStepKind::Run { uses, .. } if !uses.starts_with("builtin:") => Some(uses.as_str()),
            _ => None,
        })
        .collect();
    host_executors.sort_unstable();
    host_executors.dedup();

    let mut external = json!({
        "pack": plan_doc["pack"],
        "inputs": plan_doc["inputs"],
        "secrets": plan_doc["secrets"],
        "planHash": material.plan_hash,
    });
    if let (Some(digest), Some(map)) = (&material.manifest_digest, external.as_object_mut()) {
        map.insert("manifestDigest".into(), json!(digest));
    }
    let mut resolved = vec![json!({
        "name": PLAN_SUBJECT,
        "uri": "taskrunner:plan",
        "digest": digest_of(&material.plan_hash),
        "mediaType": "application/json",
    })];
    if let Some(manifest) = &material.manifest_digest {
        resolved.push(json!({
            "name": "manifest.yaml",
            "uri": "taskrunner:manifest",
            "digest": digest_of(manifest),
            "mediaType": "application/yaml",
        }));
    }
    if let Some(host) = &material.host_digest {
        resolved.push(json!({
            "name": "host-executors",
            "uri": "taskrunner:host-executors",
            "digest": digest_of(host),
            "annotations": {"executors": host_executors},
        }));
    }

    let mut metadata = Map::new();
    metadata.insert("invocationId".into(), json!(material.run_id));
    if let Some(started) = started {
        metadata.insert("startedOn".into(), json!(started.to_rfc3339()));
    }
    metadata.insert("finishedOn".into(), json!(finished.to_rfc3339()));

    let journal_text = journal_ndjson(&material.journal);
    let provenance = json!({
        "_type": STATEMENT_V1,
        "subject": subjects(material),
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": {
                    "tenant": material.tenant,
                    "sandbox": plan_doc["sandbox"],
                },
                "resolvedDependencies": resolved,
            },
            "runDetails": {
                "builder": {"id": builder_id},
                "metadata": metadata,
                "byproducts": [
                    {
                        "name": "journal.ndjson",
                        "digest": {"sha256": sha256_hex(journal_text.as_bytes())},
                        "mediaType": "application/x-ndjson",
                        "annotations": {
                            "head": head,
                            "records": material.journal.len(),
                            "status": material.status,
                        },
                    },
                    {
                        "name": "logs.ndjson",
                        "digest": {"sha256": material.logs_sha256},
                        "mediaType": "application/x-ndjson",
                    },
                ],
            },
        },
    });

    // Decisions by approval id, from the journal (each carries the plan hash it was given for).
    let mut decisions: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for r in &material.journal {
        if let Event::ApprovalDecided {
            approval_id,
            decision,
            actor,
            summary,
            plan_hash,
        } = &r.event
        {
            let mut d = json!({
                "seq": r.seq,
                "actor": actor,
                "decision": decision,
                "at": r.at.to_rfc3339(),
                "planHash": plan_hash,
            });
            if let (Some(summary), Some(map)) = (summary, d.as_object_mut()) {
                map.insert("summary".into(), json!(summary));
            }
            decisions.entry(approval_id.as_str()).or_default().push(d);
        }
    }
    let templates: BTreeMap<&str, &PlanStepKind> = plan
        .steps()
        .iter()
        .map(|s| (s.id.as_str(), &s.kind))
        .collect();
    let mut gates = Vec::new();
    for step in &view.steps {
        let mut gate = Map::new();
        gate.insert("stepId".into(), json!(step.step_id));
        match templates.get(step.template_id.as_str()) {
            Some(PlanStepKind::GateApproval { approval_id, .. }) => {
                gate.insert("kind".into(), json!("approval"));
                gate.insert("approvalId".into(), json!(approval_id));
                let approval = plan.approval(approval_id);
                if let Some(a) = approval {
                    gate.insert("grants".into(), json!(a.grants));
                }
                gate.insert(
                    "decisions".into(),
                    json!(
                        decisions
                            .get(approval_id.as_str())
                            .cloned()
                            .unwrap_or_default()
                    ),
                );
            }
            Some(PlanStepKind::GatePolicy {
                policy_id,
                failure_action,
                override_approval,
                ..
            }) => {
                gate.insert("kind".into(), json!("policy"));
                gate.insert("policyId".into(), json!(policy_id));
                if let Some(p) = plan.policies().iter().find(|p| &p.id == policy_id) {
                    gate.insert("policyVersion".into(), json!(p.version));
                }
                gate.insert("onFailure".into(), json!(failure_action.as_str()));
                if let Some(id) = override_approval {
                    gate.insert("overrideApprovalId".into(), json!(id));
                    gate.insert(
                        "decisions".into(),
                        json!(decisions.get(id.as_str()).cloned().unwrap_or_default()),
                    );
                }
            }
            _ => continue,
        }
        gate.insert("status".into(), json!(step.status.as_str()));
        if let Some(reason) = &step.status_reason {
            gate.insert("statusReason".into(), json!(reason));
        }
        if let Some(at) = step.last_transition_at {
            gate.insert("decidedAt".into(), json!(at.to_rfc3339()));
        }
        gates.push(Value::Object(gate));
    }
    let verdicts = json!({
        "_type": STATEMENT_V1,
        "subject": [{"name": PLAN_SUBJECT, "digest": digest_of(&material.plan_hash)}],
        "predicateType": GATES_PREDICATE_TYPE,
        "predicate": {
            "runId": material.run_id,
            "tenant": material.tenant,
            "planHash": material.plan_hash,
            "runStatus": material.status,
            "journalHead": head,
            "gates": gates,
        },
    });
    Ok((
        secrets.mask_value(&provenance),
        secrets.mask_value(&verdicts),
    ))
}

/// Builds and signs both statements (payloads are the statements' RFC 8785 bytes).
pub fn sign_evidence(
    material: &RunMaterial,
    builder_id: &str,
    secrets: &Secrets,
    signer: &dyn EvidenceSigner,
) -> Result<Evidence, EvidenceError> {
    let (provenance, gates) = build_statements(material, builder_id, secrets)?;
    let sign = |statement: &Value| {
        let bytes = taskrunner_plan::jcs::to_canonical(statement);
        sign_envelope(PAYLOAD_TYPE, bytes.as_bytes(), signer)
    };
    Ok(Evidence {
        provenance_envelope: sign(&provenance)?,
        gates_envelope: sign(&gates)?,
        provenance,
        gates,
    })
}
