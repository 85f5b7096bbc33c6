//! Building, signing and verifying the evidence of a small approved run, and tampering with
//! each part of it.

use serde_json::{Map, Value};
use taskrunner_engine::{Decision, Event, Journal, Secrets, Timestamp};
use taskrunner_evidence::{
    ArtifactDigest, AuditFolder, Ed25519Signer, EvidenceSigner, GATES_PREDICATE_TYPE, RunMaterial,
    SLSA_PROVENANCE_V1, sign_evidence, verify_folder,
};

const PACK: &str = r#"
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: release, version: 1.2.3}
spec:
  inputs:
    - {name: target, type: string, default: prod}
  secrets:
    - {name: token}
  approvals:
    - id: ship
      grants: [release.manager]
      requiredApprovals: 1
  sandbox:
    mode: networked
    egressAllowlist: ["example.com:443"]
  steps:
    - id: gate
      gate:
        approval: {id: ship}
"#;

const SECRET: &str = "s3cr3t-value-never-shown";
const ARTIFACT: &[u8] = b"the release tarball";

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Fixture {
    material: RunMaterial,
    signer: Ed25519Signer,
    journal: String,
    logs: Vec<u8>,
}

fn fixture() -> Fixture {
    let plan = taskrunner_plan::plan_yaml(PACK, &Map::new()).expect("plan");
    let mut journal = Journal::new(plan.hash());
    let records = vec![
        journal.append(Timestamp(1_000), Event::Started),
        journal.append(
            Timestamp(2_000),
            Event::ApprovalDecided {
                approval_id: "ship".into(),
                decision: Decision::Approved,
                actor: "alice".into(),
                // As a careless approver might write it; the evidence must mask it.
                summary: Some(format!("ok, token is {SECRET}")),
                plan_hash: plan.hash().to_owned(),
            },
        ),
    ];
    let logs = b"{\"sequence\":1}\n".to_vec();
    let material = RunMaterial {
        tenant: "default".into(),
        run_id: "run-1".into(),
        status: "Succeeded".into(),
        plan_json: plan.canonical_json().to_owned(),
        plan_hash: plan.hash().to_owned(),
        created_at: Timestamp(500),
        host_digest: None,
        manifest_digest: None,
        journal: records.clone(),
        logs_sha256: sha256_hex(&logs),
        artifacts: vec![
            ArtifactDigest {
                name: "tarball".into(),
                kind: "file".into(),
                status: "captured".into(),
                sha256: Some(sha256_hex(ARTIFACT)),
            },
            ArtifactDigest {
                name: "missing".into(),
                kind: "file".into(),
                status: "failed".into(),
                sha256: None,
            },
        ],
    };
    Fixture {
        journal: taskrunner_evidence::journal_ndjson(&records),
        material,
        signer: Ed25519Signer::from_seed([42; 32]),
        logs,
    }
}

fn secrets() -> Secrets {
    let mut s = Secrets::new();
    s.insert("token", SECRET);
    s
}

fn folder(f: &Fixture) -> AuditFolder {
    let evidence = sign_evidence(
        &f.material,
        "https://ci.example/builder",
        &secrets(),
        &f.signer,
    )
    .expect("evidence");
    AuditFolder {
        envelopes: vec![
            (
                "provenance.dsse.json".into(),
                evidence.provenance_envelope.to_json_pretty().into_bytes(),
            ),
            (
                "gates.dsse.json".into(),
                evidence.gates_envelope.to_json_pretty().into_bytes(),
            ),
        ],
        plan_json: Some(f.material.plan_json.clone().into_bytes()),
        journal_ndjson: Some(f.journal.clone().into_bytes()),
        logs_ndjson: Some(f.logs.clone()),
        artifacts: vec![(
            "tarball".into(),
            "artifacts/tarball".into(),
            ARTIFACT.to_vec(),
        )],
        require_all_artifacts: true,
    }
}

fn failures(folder: &AuditFolder, f: &Fixture) -> String {
    match verify_folder(folder, &f.signer.public_key()) {
        Ok(_) => panic!("verification passed"),
        Err(failures) => failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[test]
fn statements_carry_the_spec_fields() {
    let f = fixture();
    let e = sign_evidence(
        &f.material,
        "https://ci.example/builder",
        &secrets(),
        &f.signer,
    )
    .expect("evidence");
    let p = &e.provenance;
    assert_eq!(p["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(p["predicateType"], SLSA_PROVENANCE_V1);
    let subjects = p["subject"].as_array().expect("subjects");
    assert_eq!(
        subjects.len(),
        2,
        "plan + the captured artifact: {subjects:?}"
    );
    assert_eq!(subjects[0]["name"], "plan.json");
    assert_eq!(
        format!(
            "sha256:{}",
            subjects[0]["digest"]["sha256"].as_str().expect("digest")
        ),
        f.material.plan_hash
    );
    assert_eq!(subjects[1]["digest"]["sha256"], sha256_hex(ARTIFACT));
    let bd = &p["predicate"]["buildDefinition"];
    assert_eq!(bd["buildType"], taskrunner_evidence::BUILD_TYPE);
    assert_eq!(bd["externalParameters"]["pack"]["name"], "release");
    assert_eq!(
        bd["externalParameters"]["planHash"],
        f.material.plan_hash.as_str()
    );
    assert_eq!(
        bd["internalParameters"]["sandbox"]["egressAllowlist"][0],
        "example.com:443"
    );
    let rd = &p["predicate"]["runDetails"];
    assert_eq!(rd["builder"]["id"], "https://ci.example/builder");
    assert_eq!(rd["metadata"]["invocationId"], "run-1");
    assert_eq!(rd["metadata"]["startedOn"], "1970-01-01T00:00:01Z");
    assert_eq!(rd["metadata"]["finishedOn"], "1970-01-01T00:00:02Z");
    assert_eq!(
        rd["byproducts"][0]["annotations"]["head"],
        f.material.journal[1].hash.as_str()
    );

    let g = &e.gates;
    assert_eq!(g["predicateType"], GATES_PREDICATE_TYPE);
    let gate = &g["predicate"]["gates"][0];
    assert_eq!(gate["stepId"], "gate");
    assert_eq!(gate["kind"], "approval");
    assert_eq!(gate["status"], "Succeeded");
    assert_eq!(gate["decisions"][0]["actor"], "alice");
    assert_eq!(gate["decisions"][0]["decision"], "approved");
    assert_eq!(
        gate["decisions"][0]["planHash"],
        f.material.plan_hash.as_str()
    );
    assert_eq!(gate["decisions"][0]["summary"], "ok, token is ***");

    // The envelopes: payload type, key id, and the payload is the statement.
    let env = &e.provenance_envelope;
    assert_eq!(env.payload_type, "application/vnd.in-toto+json");
    assert_eq!(env.signatures[0].keyid, f.signer.key_id());
    let decoded: Value = serde_json::from_slice(&env.payload_bytes().expect("b64")).expect("json");
    assert_eq!(&decoded, p);
}

#[test]
fn no_secret_value_anywhere_in_the_evidence() {
    let f = fixture();
    let e = sign_evidence(&f.material, "b", &secrets(), &f.signer).expect("evidence");
    for text in [
        e.provenance.to_string(),
        e.gates.to_string(),
        e.provenance_envelope.to_json_pretty(),
        e.gates_envelope.to_json_pretty(),
        String::from_utf8(e.gates_envelope.payload_bytes().expect("b64")).expect("utf8"),
    ] {
        assert!(!text.contains(SECRET), "secret leaked: {text}");
    }
}

#[test]
fn an_untouched_folder_verifies() {
    let f = fixture();
    let verified = verify_folder(&folder(&f), &f.signer.public_key()).expect("verifies");
    assert_eq!(verified.statements.len(), 2);
    assert!(
        verified
            .checks
            .iter()
            .any(|c| c.contains("2 records chain")),
        "{:?}",
        verified.checks
    );
}

#[test]
fn another_key_fails_naming_the_signature() {
    let f = fixture();
    let other = Ed25519Signer::from_seed([1; 32]);
    let failures = verify_folder(&folder(&f), &other.public_key()).expect_err("wrong key");
    let text = failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("envelope provenance.dsse.json: signature 0 has keyid"),
        "{text}"
    );
    assert!(text.contains("envelope gates.dsse.json"), "{text}");
}

#[test]
fn a_tampered_artifact_fails_naming_it() {
    let f = fixture();
    let mut folder = folder(&f);
    folder.artifacts[0].2[0] ^= 1;
    let text = failures(&folder, &f);
    assert!(
        text.contains("artifact artifacts/tarball: sha256") && text.contains("subject tarball"),
        "{text}"
    );
}

#[test]
fn a_tampered_plan_fails_naming_it() {
    let f = fixture();
    let mut folder = folder(&f);
    if let Some(plan) = folder.plan_json.as_mut() {
        let i = plan.iter().position(|b| *b == b'p').expect("a p");
        plan[i] = b'q';
    }
    let text = failures(&folder, &f);
    assert!(text.contains("plan.json: recomputed plan hash"), "{text}");
}

#[test]
fn a_tampered_journal_record_fails_naming_it() {
    let f = fixture();
    let mut folder = folder(&f);
    let journal = String::from_utf8(folder.journal_ndjson.take().expect("journal")).expect("utf8");
    folder.journal_ndjson = Some(journal.replacen("alice", "mallo", 1).into_bytes());
    let text = failures(&folder, &f);
    assert!(
        text.contains("journal record 2: content does not hash to its hash"),
        "{text}"
    );
    // A truncated journal fails at the head.
    let mut folder2 = self::folder(&f);
    let first_line = f.journal.lines().next().expect("line").to_owned() + "\n";
    folder2.journal_ndjson = Some(first_line.into_bytes());
    let text = failures(&folder2, &f);
    assert!(text.contains("not at the signed head"), "{text}");
}

#[test]
fn a_tampered_statement_fails_naming_the_envelope() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let f = fixture();
    let mut folder = folder(&f);
    let mut env: Value = serde_json::from_slice(&folder.envelopes[1].1).expect("json");
    let mut payload = b64
        .decode(env["payload"].as_str().expect("payload"))
        .expect("b64");
    let i = payload.iter().position(|b| *b == b'a').expect("an a");
    payload[i] = b'b';
    env["payload"] = Value::String(b64.encode(payload));
    folder.envelopes[1].1 = env.to_string().into_bytes();
    let text = failures(&folder, &f);
    assert!(
        text.contains("envelope gates.dsse.json: signature 0 (keyid")
            && text.contains("does not verify"),
        "{text}"
    );
}

#[test]
fn a_missing_artifact_file_and_an_unknown_one_are_named() {
    let f = fixture();
    let mut folder = folder(&f);
    folder.artifacts[0].0 = "other".into();
    let text = failures(&folder, &f);
    assert!(text.contains("has no subject named other"), "{text}");
    assert!(text.contains("subject tarball: no artifact file"), "{text}");
}

#[test]
fn a_plan_that_does_not_match_its_hash_is_refused_when_building() {
    let mut f = fixture();
    f.material.plan_hash = format!("sha256:{}", "0".repeat(64));
    let err = sign_evidence(&f.material, "b", &secrets(), &f.signer).expect_err("bad hash");
    assert!(err.to_string().contains("plan"), "{err}");
}

const POLICY_PACK: &str = r#"
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: scan, version: 2.0.0}
spec:
  approvals:
    - {id: exception, grants: [security.exception]}
  policies:
    - {id: no-critical, version: 1.1.0, rule: "steps.scan.outputs.critical == `0`", message: "critical findings present"}
  steps:
    - id: scan
      run: {uses: "scanner"}
    - id: gate
      gate:
        policy:
          policy: no-critical
          failureAction: requestOverride
          overrideApproval: exception
"#;

#[test]
fn a_policy_gate_overridden_by_an_approval_is_reported_with_its_decision() {
    let plan = taskrunner_plan::plan_yaml(POLICY_PACK, &Map::new()).expect("plan");
    let mut journal = Journal::new(plan.hash());
    let mut outputs = Map::new();
    outputs.insert("critical".into(), Value::from(2));
    let records = vec![
        journal.append(Timestamp(1_000), Event::Started),
        journal.append(
            Timestamp(2_000),
            Event::AttemptFinished {
                step_id: "scan".into(),
                attempt: 1,
                outcome: taskrunner_engine::AttemptOutcome::Succeeded { outputs },
            },
        ),
        journal.append(
            Timestamp(3_000),
            Event::ApprovalDecided {
                approval_id: "exception".into(),
                decision: Decision::Approved,
                actor: "bob".into(),
                summary: None,
                plan_hash: plan.hash().to_owned(),
            },
        ),
    ];
    let material = RunMaterial {
        tenant: "default".into(),
        run_id: "p-1".into(),
        status: "Succeeded".into(),
        plan_json: plan.canonical_json().to_owned(),
        plan_hash: plan.hash().to_owned(),
        created_at: Timestamp(0),
        host_digest: Some(format!("sha256:{}", "a".repeat(64))),
        manifest_digest: None,
        journal: records,
        logs_sha256: sha256_hex(b""),
        artifacts: vec![],
    };
    let signer = Ed25519Signer::from_seed([5; 32]);
    let e = sign_evidence(&material, "b", &Secrets::new(), &signer).expect("evidence");
    let gate = &e.gates["predicate"]["gates"][0];
    assert_eq!(gate["kind"], "policy", "{}", e.gates);
    assert_eq!(gate["policyId"], "no-critical");
    assert_eq!(gate["policyVersion"], "1.1.0");
    assert_eq!(gate["onFailure"], "requestOverride");
    assert_eq!(gate["overrideApprovalId"], "exception");
    assert_eq!(gate["status"], "Succeeded", "{gate}");
    assert_eq!(gate["decisions"][0]["actor"], "bob");
    assert_eq!(gate["decisions"][0]["seq"], 3);
    let deps = &e.provenance["predicate"]["buildDefinition"]["resolvedDependencies"];
    assert_eq!(deps[1]["name"], "host-executors");
    assert_eq!(deps[1]["digest"]["sha256"], "a".repeat(64));
    assert_eq!(
        deps[1]["annotations"]["executors"],
        serde_json::json!(["scanner"])
    );
    // Only the plan is a subject when no artifact was captured.
    assert_eq!(e.provenance["subject"].as_array().map(Vec::len), Some(1));
    assert_gates_schema(&e.gates["predicate"]);
}

/// The published JSON Schema of the gate-verdicts predicate (`docs/schemas/` at the root).
fn gates_schema() -> Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the workspace root");
    let text = std::fs::read_to_string(root.join("docs/schemas/gate-verdicts-v1.schema.json"))
        .expect("schema file");
    serde_json::from_str(&text).expect("schema is JSON")
}

/// The gate-verdicts predicate matches its published JSON Schema.
fn assert_gates_schema(predicate: &Value) {
    let schema = gates_schema();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(predicate)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{predicate}");
}

#[test]
fn the_gate_verdicts_follow_their_json_schema() {
    let f = fixture();
    let e = sign_evidence(&f.material, "b", &secrets(), &f.signer).expect("evidence");
    assert_gates_schema(&e.gates["predicate"]);
    // The schema is not a rubber stamp.
    let mut broken = e.gates["predicate"].clone();
    broken["gates"][0]["decisions"][0]["decision"] = Value::from("maybe");
    let schema = gates_schema();
    assert!(
        !jsonschema::validator_for(&schema)
            .expect("schema")
            .is_valid(&broken)
    );
}
