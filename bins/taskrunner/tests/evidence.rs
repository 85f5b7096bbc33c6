//! Signed run evidence end to end (issue 12 item 4): a run with a secret, an approval and two
//! artifacts; `export` and `verify-evidence`; one byte changed in an artifact, the journal, the
//! plan or a statement fails naming it; no secret value in any output; and an independent
//! verifier from a registry (Python `securesystemslib`) accepts the signatures and digests.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::Value;

const SECRET: &str = "hunter2-evidence-secret-value";

const PACK: &str = r#"apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: release, version: 1.0.0}
spec:
  inputs:
    - {name: target, type: string, default: prod}
  secrets:
    - name: token
  approvals:
    - id: ship
      grants: [release.manager]
      requiredApprovals: 1
  steps:
    - id: build
      run:
        uses: builtin:shell
        with:
          script: 'mkdir -p out && echo "built for prod" > out/tarball.txt && echo "token $TOKEN"'
          env:
            TOKEN: "{{ secrets.token }}"
    - id: gate
      gate:
        approval: {id: ship}
  outputs:
    - name: tarball
      type: file
      path: out/tarball.txt
    - name: info
      type: object
      expression: "{target: inputs.target}"
"#;

fn taskrunner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskrunner"))
        .args(args)
        .env("TASKRUNNER_SECRET_TOKEN", SECRET)
        .env_remove("TASKRUNNER_EVIDENCE_SIGNING_KEY")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Setup {
    dir: PathBuf,
    data: String,
    key: String,
    public: String,
    /// An ECDSA P-256 key (`keygen --algorithm p256`).
    p256: String,
}

/// One finished run (approved by alice) and one run waiting at its gate, shared by the tests.
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("taskrunner-evidence-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pack = dir.join("pack.yaml");
        std::fs::write(&pack, PACK).unwrap();
        let key = dir.join("key.pem");
        let data = dir.join("data").to_str().unwrap().to_owned();
        let out = taskrunner(&["keygen", key.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let p256 = dir.join("p256.pem");
        let out = taskrunner(&["keygen", p256.to_str().unwrap(), "--algorithm", "p256"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let pack = pack.to_str().unwrap();
        let out = taskrunner(&[
            "run",
            pack,
            "--run-id",
            "done",
            "--data-dir",
            &data,
            "--approve",
            "ship",
            "--actor",
            "alice",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let out = taskrunner(&["run", pack, "--run-id", "waiting", "--data-dir", &data]);
        assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
        Setup {
            dir,
            data,
            public: format!("{}.pub", key.display()),
            key: key.to_str().unwrap().to_owned(),
            p256: p256.to_str().unwrap().to_owned(),
        }
    })
}

/// A fresh export of the finished run.
fn export(name: &str) -> PathBuf {
    export_with(name, &setup().key)
}

/// A fresh export of the finished run signed with `key`.
fn export_with(name: &str, key: &str) -> PathBuf {
    let s = setup();
    let to = s.dir.join(name);
    let _ = std::fs::remove_dir_all(&to);
    let out = taskrunner(&[
        "export",
        "done",
        "--data-dir",
        &s.data,
        "--key",
        key,
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    to
}

fn verify(target: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "verify-evidence",
        target.to_str().unwrap(),
        "--key",
        &setup().public,
    ];
    args.extend_from_slice(extra);
    taskrunner(&args)
}

fn flip_byte(path: &Path, at: impl Fn(&[u8]) -> usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = at(&bytes);
    bytes[i] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn find(haystack: &[u8], needle: &str) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap()
}

#[test]
fn an_export_verifies_offline() {
    let dir = export("clean");
    for name in [
        "plan.json",
        "journal.ndjson",
        "logs.ndjson",
        "provenance.dsse.json",
        "gates.dsse.json",
        "provenance.sigstore.json",
        "gates.sigstore.json",
        "artifacts.sha256",
        "evidence-key.pub.pem",
        "artifacts/tarball",
        "artifacts/info",
    ] {
        assert!(dir.join(name).exists(), "{name} missing");
    }
    let out = verify(&dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ok: plan.json: hash sha256:"), "{stdout}");
    assert!(
        stdout.contains("records chain from the plan hash"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok: artifact artifacts/tarball: matches subject tarball"),
        "{stdout}"
    );
    // The plan's hash is the run's plan hash, recomputable with sha256sum.
    let provenance = statement(&dir.join("provenance.dsse.json"));
    let plan = std::fs::read(dir.join("plan.json")).unwrap();
    use sha2_free::hex_sha256;
    assert_eq!(
        provenance["predicate"]["buildDefinition"]["externalParameters"]["planHash"],
        format!("sha256:{}", hex_sha256(&plan))
    );
    // The pack text the run was created from is named by its digest.
    let manifest = format!("sha256:{}", hex_sha256(PACK.as_bytes()));
    let build = &provenance["predicate"]["buildDefinition"];
    assert_eq!(
        build["externalParameters"]["manifestDigest"],
        manifest.as_str()
    );
    let deps = build["resolvedDependencies"].as_array().unwrap();
    let entry = deps.iter().find(|d| d["name"] == "manifest.yaml").unwrap();
    assert_eq!(
        entry["digest"]["sha256"],
        manifest.trim_start_matches("sha256:")
    );
    // A Sigstore bundle is accepted as a FILE, and a matching --artifact passes.
    let out = verify(
        &dir.join("provenance.sigstore.json"),
        &[
            "--artifact",
            dir.join("artifacts/tarball").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// SHA-256 without a dev-dependency: `sha256sum`, which every CI image has.
mod sha2_free {
    pub(super) fn hex_sha256(bytes: &[u8]) -> String {
        use std::io::Write as _;
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_owned()
    }
}

fn statement(envelope: &Path) -> Value {
    let env: Value = serde_json::from_slice(&std::fs::read(envelope).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

fn assert_fails(dir: &Path, extra: &[&str], expected: &[&str]) {
    let out = verify(dir, extra);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for e in expected {
        assert!(stderr.contains(e), "expected {e:?} in:\n{stderr}");
    }
}

#[test]
fn one_byte_of_an_artifact_fails_naming_it() {
    let dir = export("tamper-artifact");
    flip_byte(&dir.join("artifacts/tarball"), |_| 0);
    assert_fails(
        &dir,
        &[],
        &[
            "FAILED: artifact artifacts/tarball: sha256",
            "subject tarball",
        ],
    );
    // The same through --artifact on a single envelope.
    assert_fails(
        &dir.join("provenance.dsse.json"),
        &[
            "--artifact",
            dir.join("artifacts/tarball").to_str().unwrap(),
        ],
        &["artifact ", "does not match subject tarball"],
    );
}

#[test]
fn one_byte_of_the_journal_fails_naming_the_record() {
    let dir = export("tamper-journal");
    let journal = std::fs::read(dir.join("journal.ndjson")).unwrap();
    let line = text(&journal)
        .lines()
        .position(|l| l.contains("alice"))
        .unwrap()
        + 1;
    flip_byte(&dir.join("journal.ndjson"), |b| find(b, "alice"));
    assert_fails(
        &dir,
        &[],
        &[
            &format!("FAILED: journal record {line}: content does not hash to its hash"),
            "journal.ndjson: sha256",
        ],
    );
}

#[test]
fn one_byte_of_the_plan_fails_naming_it() {
    let dir = export("tamper-plan");
    flip_byte(&dir.join("plan.json"), |b| find(b, "prod"));
    assert_fails(
        &dir,
        &[],
        &[
            "FAILED: plan.json: recomputed plan hash",
            "does not match the signed plan hash",
        ],
    );
}

#[test]
fn one_byte_of_a_statement_fails_naming_the_envelope() {
    let dir = export("tamper-statement");
    let path = dir.join("gates.dsse.json");
    let mut env: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut payload = b64.decode(env["payload"].as_str().unwrap()).unwrap();
    let i = find(&payload, "alice");
    payload[i] ^= 0x01;
    env["payload"] = Value::String(b64.encode(payload));
    std::fs::write(&path, env.to_string()).unwrap();
    assert_fails(
        &dir,
        &[],
        &[
            "FAILED: envelope gates.dsse.json: signature 0 (keyid",
            "does not verify",
        ],
    );
}

#[test]
fn another_key_fails_naming_the_signatures() {
    let dir = export("other-key");
    let other = setup().dir.join("other.pem");
    let _ = std::fs::remove_file(&other);
    let _ = std::fs::remove_file(setup().dir.join("other.pem.pub"));
    assert!(
        taskrunner(&["keygen", other.to_str().unwrap()])
            .status
            .success()
    );
    let out = taskrunner(&[
        "verify-evidence",
        dir.to_str().unwrap(),
        "--key",
        &format!("{}.pub", other.display()),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("envelope provenance.dsse.json: signature 0 has keyid"),
        "{stderr}"
    );
}

#[test]
fn no_secret_value_anywhere_in_the_evidence() {
    let s = setup();
    let dir = export("secrets");
    let mut outputs = Vec::new();
    for entry in walk(&dir) {
        let bytes = std::fs::read(&entry).unwrap();
        if entry.to_string_lossy().ends_with(".json")
            && let Ok(doc) = serde_json::from_slice::<Value>(&bytes)
        {
            // Decoded payloads too, not only their base64.
            for payload in [&doc["payload"], &doc["dsseEnvelope"]["payload"]] {
                if let Some(p) = payload.as_str() {
                    let decoded = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
                    outputs.push((format!("{} (payload)", entry.display()), text(&decoded)));
                }
            }
        }
        outputs.push((entry.display().to_string(), text(&bytes)));
    }
    let out = taskrunner(&["evidence", "done", "--data-dir", &s.data, "--key", &s.key]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    outputs.push(("evidence stdout".into(), text(&out.stdout)));
    assert!(outputs.len() > 12);
    for (name, content) in &outputs {
        assert!(!content.contains(SECRET), "the secret value is in {name}");
    }
    // The masked output line is there: the secret was used, and masked.
    let logs = std::fs::read_to_string(dir.join("logs.ndjson")).unwrap();
    assert!(logs.contains("token ***"), "{logs}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn no_key_an_active_run_and_an_unknown_run_are_clear_errors() {
    let s = setup();
    let out = taskrunner(&["evidence", "done", "--data-dir", &s.data]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no evidence signing key: set `[evidence] signing_key`"),
        "{}",
        text(&out.stderr)
    );
    let out = taskrunner(&[
        "evidence",
        "waiting",
        "--data-dir",
        &s.data,
        "--key",
        &s.key,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("run is still AwaitingApproval"),
        "{}",
        text(&out.stderr)
    );
    let out = taskrunner(&["evidence", "nope", "--data-dir", &s.data, "--key", &s.key]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    // A public key where the private key belongs.
    let out = taskrunner(&[
        "evidence",
        "done",
        "--data-dir",
        &s.data,
        "--key",
        &s.public,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("PRIVATE KEY"),
        "{}",
        text(&out.stderr)
    );
}

/// The check by a verifier we did not write: securesystemslib's DSSE implementation with the
/// Ed25519 public key loaded by `cryptography`, and hashlib over the artifact files.
const INDEPENDENT: &str = r#"
import base64, hashlib, json, sys, pathlib
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

folder = pathlib.Path(sys.argv[1])
public = load_pem_public_key((folder / "evidence-key.pub.pem").read_bytes())
for name in ["provenance.dsse.json", "gates.dsse.json"]:
    doc = json.loads((folder / name).read_text())
    keyid = doc["signatures"][0]["keyid"]
    key = SSlibKey.from_crypto(public, keyid=keyid)
    envelope = Envelope.from_dict(doc)
    verified = envelope.verify([key], 1)  # raises VerificationError when it does not verify
    assert keyid in verified, name
    statement = json.loads(envelope.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1", name
    if statement["predicateType"] == "https://slsa.dev/provenance/v1":
        checked = 0
        for subject in statement["subject"]:
            path = folder / ("plan.json" if subject["name"] == "plan.json" else "artifacts/" + subject["name"])
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != subject["digest"]["sha256"]:
                print("MISMATCH", subject["name"], digest)
                sys.exit(1)
            checked += 1
        print("subjects", checked)
print("VERIFIED")
"#;

#[test]
fn an_independent_verifier_accepts_the_evidence() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let probe = Command::new("python3")
        .args(["-c", "import securesystemslib.dsse, cryptography"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        if ci {
            panic!(
                "python3 with securesystemslib is required under CI=true (`.ci/run` installs it)"
            );
        }
        eprintln!("skipped: python3 with securesystemslib[crypto] is not installed");
        return;
    }
    let dir = export("independent");
    let script = setup().dir.join("independent.py");
    std::fs::write(&script, INDEPENDENT).unwrap();
    let run = |dir: &Path| {
        Command::new("python3")
            .arg(&script)
            .arg(dir)
            .output()
            .unwrap()
    };
    let out = run(&dir);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("subjects 3"),
        "plan + 2 artifacts: {stdout}"
    );
    assert!(stdout.contains("VERIFIED"), "{stdout}");

    // It is not a rubber stamp: a changed statement and a changed artifact are refused.
    let tampered = export("independent-tampered");
    let path = tampered.join("gates.dsse.json");
    let mut env: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut payload = b64.decode(env["payload"].as_str().unwrap()).unwrap();
    let i = find(&payload, "alice");
    payload[i] ^= 0x01;
    env["payload"] = Value::String(b64.encode(payload));
    std::fs::write(&path, env.to_string()).unwrap();
    let out = run(&tampered);
    assert!(!out.status.success(), "a tampered statement verified");
    assert!(
        text(&out.stderr).contains("VerificationError"),
        "{}",
        text(&out.stderr)
    );

    let tampered = export("independent-artifact");
    flip_byte(&tampered.join("artifacts/tarball"), |_| 0);
    let out = run(&tampered);
    assert!(!out.status.success(), "a tampered artifact verified");
    assert!(
        text(&out.stdout).contains("MISMATCH tarball"),
        "{}",
        text(&out.stdout)
    );

    // ECDSA P-256 evidence (DER signatures) passes the same independent check.
    let p256 = export_with("independent-p256", &setup().p256);
    let out = run(&p256);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("VERIFIED"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn p256_evidence_verifies_and_fails_with_the_other_key() {
    let s = setup();
    let dir = export_with("p256", &s.p256);
    let out = taskrunner(&[
        "verify-evidence",
        dir.to_str().unwrap(),
        "--key",
        &format!("{}.pub", s.p256),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = verify(&dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("signature 0 has keyid"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_evidence_document_verifies_as_a_file() {
    let s = setup();
    let out = taskrunner(&["evidence", "done", "--data-dir", &s.data, "--key", &s.key]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["bundles"]["provenance"]["mediaType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    let file = s.dir.join("evidence.json");
    std::fs::write(&file, &out.stdout).unwrap();
    let out = verify(&file, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("envelope evidence.json#gates: signature verifies"),
        "{}",
        text(&out.stdout)
    );
    // Signing is deterministic: the same run gives the same document.
    let again = taskrunner(&["evidence", "done", "--data-dir", &s.data, "--key", &s.key]);
    assert_eq!(again.stdout, std::fs::read(&file).unwrap());
}
