//! Offline verification of run evidence: signatures, then — with the verified statements as
//! the reference — the plan hash recomputed from `plan.json`, the journal hash chain recomputed
//! from the plan hash to the signed head, and artifact files against the subjects.
//!
//! Every failure is collected (not only the first) and names what failed: which envelope and
//! signature, which subject or artifact, the plan, which journal record.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use taskrunner_engine::{JournalRecord, record_hash};

use crate::dsse::{Envelope, PAYLOAD_TYPE, pae};
use crate::keys::PublicKey;
use crate::statement::{
    GATES_PREDICATE_TYPE, PLAN_SUBJECT, SLSA_PROVENANCE_V1, STATEMENT_V1, sha256_hex,
};

/// The contents of an audit folder (or of the files named on the command line).
#[derive(Debug, Clone, Default)]
pub struct AuditFolder {
    /// `(file name, bytes)` of each DSSE envelope.
    pub envelopes: Vec<(String, Vec<u8>)>,
    /// `plan.json`, when present.
    pub plan_json: Option<Vec<u8>>,
    /// `journal.ndjson`, when present.
    pub journal_ndjson: Option<Vec<u8>>,
    /// `logs.ndjson`, when present.
    pub logs_ndjson: Option<Vec<u8>>,
    /// `(subject name, label for messages, bytes)` of each artifact file to compare.
    pub artifacts: Vec<(String, String, Vec<u8>)>,
    /// Every artifact subject must have a file (folder mode).
    pub require_all_artifacts: bool,
}

/// One thing that did not verify, in words naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// `(envelope name, statement)` of each verified envelope.
    pub statements: Vec<(String, Value)>,
    /// One line per check that passed.
    pub checks: Vec<String>,
}

/// Checks one envelope's (or Sigstore bundle's) signatures with `key`: the statement when a signature by `key`
/// verifies over the PAE of its payload.
pub fn verify_envelope(name: &str, bytes: &[u8], key: &PublicKey) -> Result<Value, Failure> {
    // A Sigstore bundle carries the envelope as `dsseEnvelope`.
    let mut document: Value = serde_json::from_slice(bytes)
        .map_err(|e| Failure(format!("envelope {name}: not JSON: {e}")))?;
    if let Some(inner) = document.get_mut("dsseEnvelope") {
        document = inner.take();
    }
    let envelope: Envelope = serde_json::from_value(document)
        .map_err(|e| Failure(format!("envelope {name}: not a DSSE envelope: {e}")))?;
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(Failure(format!(
            "envelope {name}: payloadType is {:?}, expected {PAYLOAD_TYPE:?}",
            envelope.payload_type
        )));
    }
    let payload = envelope
        .payload_bytes()
        .map_err(|e| Failure(format!("envelope {name}: {e}")))?;
    let message = pae(&envelope.payload_type, &payload);
    let mut problems = Vec::new();
    let mut ok = false;
    for (i, s) in envelope.signatures.iter().enumerate() {
        if !s.keyid.is_empty() && s.keyid != key.key_id() {
            problems.push(format!(
                "signature {i} has keyid {} (the key given is {})",
                s.keyid,
                key.key_id()
            ));
            continue;
        }
        match STANDARD.decode(s.sig.as_bytes()) {
            Ok(sig) if key.verify(&message, &sig) => ok = true,
            Ok(_) => problems.push(format!(
                "signature {i} (keyid {}) does not verify with key {}",
                s.keyid,
                key.key_id()
            )),
            Err(e) => problems.push(format!("signature {i} is not base64: {e}")),
        }
    }
    if envelope.signatures.is_empty() {
        problems.push("it has no signature".into());
    }
    if !ok {
        return Err(Failure(format!("envelope {name}: {}", problems.join("; "))));
    }
    let statement: Value = serde_json::from_slice(&payload)
        .map_err(|e| Failure(format!("envelope {name}: payload is not JSON: {e}")))?;
    if statement["_type"] != STATEMENT_V1 {
        return Err(Failure(format!(
            "envelope {name}: statement _type is {}, expected {STATEMENT_V1}",
            statement["_type"]
        )));
    }
    Ok(statement)
}

/// Subject name → sha256 hex.
fn subject_digests(statement: &Value) -> BTreeMap<String, String> {
    statement["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s["name"].as_str()?.to_owned(),
                s["digest"]["sha256"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Verifies everything in `folder` with `key`.
pub fn verify_folder(folder: &AuditFolder, key: &PublicKey) -> Result<Verified, Vec<Failure>> {
    let mut failures = Vec::new();
    let mut checks = Vec::new();
    let mut statements = Vec::new();
    if folder.envelopes.is_empty() {
        failures.push(Failure("no DSSE envelope to verify".into()));
    }
    for (name, bytes) in &folder.envelopes {
        match verify_envelope(name, bytes, key) {
            Ok(statement) => {
                checks.push(format!("envelope {name}: signature verifies"));
                statements.push((name.clone(), statement));
            }
            Err(f) => failures.push(f),
        }
    }
    let provenance = statements
        .iter()
        .find(|(_, s)| s["predicateType"] == SLSA_PROVENANCE_V1)
        .map(|(n, s)| (n.as_str(), s));
    let gates = statements
        .iter()
        .find(|(_, s)| s["predicateType"] == GATES_PREDICATE_TYPE)
        .map(|(n, s)| (n.as_str(), s));

    // The plan: its hash is bound by the provenance subject and both predicates.
    let signed_plan_hash = provenance
        .and_then(|(_, s)| {
            s["predicate"]["buildDefinition"]["externalParameters"]["planHash"].as_str()
        })
        .map(str::to_owned);
    if let (Some((pname, p)), Some((gname, g))) = (provenance, gates)
        && p["predicate"]["buildDefinition"]["externalParameters"]["planHash"]
            != g["predicate"]["planHash"]
    {
        failures.push(Failure(format!(
            "plan hash: {pname} and {gname} name different plan hashes"
        )));
    }
    if let Some((pname, p)) = provenance {
        let subject = subject_digests(p).get(PLAN_SUBJECT).cloned();
        if subject.as_deref().map(|s| format!("sha256:{s}")) != signed_plan_hash {
            failures.push(Failure(format!(
                "subject {PLAN_SUBJECT} of {pname} does not carry the signed plan hash"
            )));
        }
    }
    if let Some(bytes) = &folder.plan_json {
        match &signed_plan_hash {
            Some(signed) => {
                let actual = format!("sha256:{}", sha256_hex(bytes));
                if &actual == signed {
                    checks.push(format!("plan.json: hash {actual} recomputed, matches"));
                } else {
                    failures.push(Failure(format!(
                        "plan.json: recomputed plan hash {actual} does not match the signed plan hash {signed}"
                    )));
                }
            }
            None => failures.push(Failure(
                "plan.json: no verified provenance statement to check it against".into(),
            )),
        }
    }

    // The journal: the chain from the signed plan hash to the signed head.
    if let Some(bytes) = &folder.journal_ndjson {
        let journal = provenance.and_then(|(_, p)| {
            p["predicate"]["runDetails"]["byproducts"]
                .as_array()?
                .iter()
                .find(|b| b["name"] == "journal.ndjson")
                .cloned()
        });
        match (journal, &signed_plan_hash) {
            (Some(journal), Some(root)) => {
                check_journal(bytes, root, &journal, &mut checks, &mut failures);
            }
            _ => failures.push(Failure(
                "journal.ndjson: no verified provenance statement to check it against".into(),
            )),
        }
    }
    if let Some(bytes) = &folder.logs_ndjson {
        let signed = provenance.and_then(|(_, p)| {
            p["predicate"]["runDetails"]["byproducts"]
                .as_array()?
                .iter()
                .find(|b| b["name"] == "logs.ndjson")?["digest"]["sha256"]
                .as_str()
                .map(str::to_owned)
        });
        let actual = sha256_hex(bytes);
        match signed {
            Some(signed) if signed == actual => checks.push("logs.ndjson: digest matches".into()),
            Some(signed) => failures.push(Failure(format!(
                "logs.ndjson: sha256 {actual} does not match the signed digest {signed}"
            ))),
            None => failures.push(Failure(
                "logs.ndjson: no verified provenance statement to check it against".into(),
            )),
        }
    }

    // Artifacts against the subjects.
    if let Some((pname, p)) = provenance {
        let subjects = subject_digests(p);
        let mut seen = Vec::new();
        for (name, label, bytes) in &folder.artifacts {
            let actual = sha256_hex(bytes);
            match subjects.get(name) {
                Some(expected) if *expected == actual => {
                    checks.push(format!("artifact {label}: matches subject {name}"));
                }
                Some(expected) => failures.push(Failure(format!(
                    "artifact {label}: sha256 {actual} does not match subject {name} (sha256 {expected})"
                ))),
                None => failures.push(Failure(format!(
                    "artifact {label}: {pname} has no subject named {name}"
                ))),
            }
            seen.push(name.as_str());
        }
        if folder.require_all_artifacts {
            for name in subjects.keys() {
                if name != PLAN_SUBJECT && !seen.contains(&name.as_str()) {
                    failures.push(Failure(format!(
                        "subject {name}: no artifact file for it in the folder"
                    )));
                }
            }
        }
    } else if !folder.artifacts.is_empty() {
        failures.push(Failure(
            "artifacts: no verified provenance statement to compare them with".into(),
        ));
    }

    if failures.is_empty() {
        Ok(Verified { statements, checks })
    } else {
        Err(failures)
    }
}

fn check_journal(
    bytes: &[u8],
    root: &str,
    signed: &Value,
    checks: &mut Vec<String>,
    failures: &mut Vec<Failure>,
) {
    let before = failures.len();
    let actual = sha256_hex(bytes);
    if signed["digest"]["sha256"].as_str() != Some(actual.as_str()) {
        failures.push(Failure(format!(
            "journal.ndjson: sha256 {actual} does not match the signed digest {}",
            signed["digest"]["sha256"]
        )));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        failures.push(Failure("journal.ndjson: not UTF-8".into()));
        return;
    };
    let mut prev = root.to_owned();
    let mut count = 0u64;
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        let record: JournalRecord = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => {
                failures.push(Failure(format!(
                    "journal record {n} (line {n}): not a journal record: {e}"
                )));
                return;
            }
        };
        if record.seq != n {
            failures.push(Failure(format!(
                "journal record {n}: seq is {}, expected {n}",
                record.seq
            )));
            return;
        }
        if record.prev_hash != prev {
            failures.push(Failure(format!(
                "journal record {n}: prevHash does not link to {}",
                if n == 1 {
                    "the plan hash"
                } else {
                    "the previous record"
                }
            )));
            return;
        }
        let recomputed = record_hash(&record.prev_hash, record.seq, record.at, &record.event);
        if recomputed != record.hash {
            failures.push(Failure(format!(
                "journal record {n}: content does not hash to its hash (recomputed {recomputed}, recorded {})",
                record.hash
            )));
            return;
        }
        prev = recomputed;
        count = n;
    }
    match signed["annotations"]["head"].as_str() {
        Some(head) if head == prev => {}
        Some(head) => failures.push(Failure(format!(
            "journal.ndjson: the chain ends at {prev} after {count} records, not at the signed head {head}"
        ))),
        None => failures.push(Failure("journal.ndjson: the statement has no signed head".into())),
    }
    if failures.len() == before {
        checks.push(format!(
            "journal.ndjson: {count} records chain from the plan hash to the signed head {prev}"
        ));
    }
}
