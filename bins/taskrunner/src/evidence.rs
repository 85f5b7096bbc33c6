//! `taskrunner evidence | export | verify-evidence | keygen`: signed run evidence on the
//! embedded store (docs/EVIDENCE.md). Reads the store without starting a runtime (nothing is
//! executed); building, signing and verifying are `taskrunner-evidence`'s.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use taskrunner_evidence::{
    AuditFolder, Ed25519Signer, EvidenceSigner, P256Signer, PublicKey, journal_ndjson,
    sign_evidence, signer_from_pem, verify_folder,
};
use taskrunner_runtime::{ChainedSecrets, DirSecrets, EnvSecrets, EvidenceSource};
use taskrunner_store::{Store, artifact};
use taskrunner_store_sqlite::{SqliteConfig, SqliteStore};

use crate::config::{self, ENV_EVIDENCE_SIGNING_KEY, Settings};

/// The signer named by `--key`, else by `[evidence] signing_key` / the environment.
pub(crate) fn signer(settings: &Settings, key: Option<&Path>) -> Result<Box<dyn EvidenceSigner>> {
    let path = key
        .map(Path::to_path_buf)
        .or_else(|| settings.evidence.signing_key.clone())
        .ok_or_else(|| {
            anyhow!(
                "no evidence signing key: set `[evidence] signing_key` in the configuration, \
                 {ENV_EVIDENCE_SIGNING_KEY}, or --key (an Ed25519 or ECDSA P-256 PKCS#8 PEM \
                 file; `taskrunner keygen FILE` writes one)"
            )
        })?;
    read_signer(&path)
}

/// Reads a PEM PKCS#8 Ed25519 or ECDSA P-256 private key.
pub(crate) fn read_signer(path: &Path) -> Result<Box<dyn EvidenceSigner>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the evidence signing key {}", path.display()))?;
    signer_from_pem(&text).map_err(|e| anyhow!("evidence signing key {}: {e}", path.display()))
}

/// Opens the embedded store of `settings` (it must exist: nothing is created).
pub(crate) fn open_store(settings: &Settings) -> Result<Store> {
    let dir = settings.data_dir.join("store");
    if !dir.exists() {
        bail!(
            "no store in the data directory {} (run something first, or pass --data-dir)",
            settings.data_dir.display()
        );
    }
    Ok(Store::new(
        SqliteStore::open(&dir, SqliteConfig::default())
            .with_context(|| format!("cannot open the store in {}", dir.display()))?,
    ))
}

async fn source(settings: &Settings, store: &Store, run_id: &str) -> Result<EvidenceSource> {
    let mut secrets = ChainedSecrets::new();
    if let Some(dir) = &settings.secrets_dir {
        secrets = secrets.push(DirSecrets::new(dir));
    }
    secrets = secrets.push(EnvSecrets);
    taskrunner_runtime::evidence_source(store, &secrets, &settings.default_tenant, run_id)
        .await
        .map_err(|e| anyhow!("run {run_id}: {e}"))
}

/// `taskrunner evidence RUN_ID`: the evidence document (envelopes and bundles) as JSON.
pub(crate) async fn evidence(
    settings: Settings,
    key: Option<PathBuf>,
    run_id: &str,
) -> Result<String> {
    let signer = signer(&settings, key.as_deref())?;
    let store = open_store(&settings)?;
    let source = source(&settings, &store, run_id).await?;
    let evidence = sign_evidence(
        &source.material,
        &settings.evidence.builder_id,
        &source.secrets,
        signer.as_ref(),
    )
    .map_err(|e| anyhow!("run {run_id}: {e}"))?;
    let mut text = serde_json::to_string_pretty(&evidence.to_json(&signer.public_key()))?;
    text.push('\n');
    Ok(text)
}

/// `taskrunner export RUN_ID --to DIR`: the audit folder.
pub(crate) async fn export(
    settings: Settings,
    key: Option<PathBuf>,
    run_id: &str,
    to: &Path,
) -> Result<()> {
    let signer = signer(&settings, key.as_deref())?;
    let store = open_store(&settings)?;
    let source = source(&settings, &store, run_id).await?;
    let evidence = sign_evidence(
        &source.material,
        &settings.evidence.builder_id,
        &source.secrets,
        signer.as_ref(),
    )
    .map_err(|e| anyhow!("run {run_id}: {e}"))?;

    let artifacts_dir = to.join("artifacts");
    std::fs::create_dir_all(&artifacts_dir)
        .with_context(|| format!("cannot create {}", artifacts_dir.display()))?;
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = to.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
    };
    let m = &source.material;
    write("plan.json", m.plan_json.as_bytes())?;
    write("journal.ndjson", journal_ndjson(&m.journal).as_bytes())?;
    write("logs.ndjson", source.logs_ndjson.as_bytes())?;
    write(
        "provenance.dsse.json",
        evidence.provenance_envelope.to_json_pretty().as_bytes(),
    )?;
    write(
        "gates.dsse.json",
        evidence.gates_envelope.to_json_pretty().as_bytes(),
    )?;
    for (name, envelope) in [
        ("provenance.sigstore.json", &evidence.provenance_envelope),
        ("gates.sigstore.json", &evidence.gates_envelope),
    ] {
        let mut text = serde_json::to_string_pretty(&envelope.sigstore_bundle())?;
        text.push('\n');
        write(name, text.as_bytes())?;
    }
    write(
        "evidence-key.pub.pem",
        signer.public_key().to_pem().as_bytes(),
    )?;

    let mut sums = String::new();
    for (record, digest) in source.artifacts.iter().zip(&m.artifacts) {
        let Some(sha) = &digest.sha256 else { continue };
        if record.name.is_empty()
            || record.name.contains(['/', '\\'])
            || record.name == "."
            || record.name == ".."
        {
            bail!("artifact {:?}: not usable as a file name", record.name);
        }
        let bytes = match (record.kind.as_str(), &record.stored_path) {
            (artifact::KIND_OBJECT, _) => record
                .expression_json
                .clone()
                .unwrap_or_default()
                .into_bytes(),
            (_, Some(stored)) => store
                .artifacts
                .open_blob(stored)
                .await
                .with_context(|| format!("artifact {}: cannot read its blob", record.name))?,
            (_, None) => continue,
        };
        std::fs::write(artifacts_dir.join(&record.name), &bytes)
            .with_context(|| format!("cannot write artifact {}", record.name))?;
        sums.push_str(&format!("{sha}  artifacts/{}\n", record.name));
    }
    write("artifacts.sha256", sums.as_bytes())?;
    eprintln!(
        "exported run {run_id} to {} (key id {})",
        to.display(),
        signer.key_id()
    );
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// `taskrunner verify-evidence DIR|FILE --key PUB [--artifact FILE…]`: `Ok(true)` when
/// everything verifies (each check printed), `Ok(false)` after printing every failure.
pub(crate) fn verify(target: &Path, key: &Path, artifacts: &[PathBuf]) -> Result<bool> {
    let key_text = String::from_utf8(read(key)?)
        .map_err(|_| anyhow!("{}: not a PEM text file", key.display()))?;
    let key = PublicKey::from_pem(&key_text).map_err(|e| anyhow!("{}: {e}", key.display()))?;
    let mut folder = AuditFolder::default();
    if target.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(target)
            .with_context(|| format!("cannot list {}", target.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".dsse.json"))
            .collect();
        names.sort();
        for path in names {
            folder.envelopes.push((file_name(&path), read(&path)?));
        }
        let optional = |name: &str| -> Result<Option<Vec<u8>>> {
            let path = target.join(name);
            if path.exists() {
                read(&path).map(Some)
            } else {
                Ok(None)
            }
        };
        folder.plan_json = optional("plan.json")?;
        folder.journal_ndjson = optional("journal.ndjson")?;
        folder.logs_ndjson = optional("logs.ndjson")?;
        let dir = target.join("artifacts");
        if dir.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot list {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            files.sort();
            for path in files {
                folder.artifacts.push((
                    file_name(&path),
                    format!("artifacts/{}", file_name(&path)),
                    read(&path)?,
                ));
            }
        }
        folder.require_all_artifacts = true;
    } else {
        let bytes = read(target)?;
        let name = file_name(target);
        // `taskrunner evidence` output holds both envelopes.
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(doc) if doc.get("provenance").is_some() && doc.get("gates").is_some() => {
                for part in ["provenance", "gates"] {
                    folder
                        .envelopes
                        .push((format!("{name}#{part}"), doc[part].to_string().into_bytes()));
                }
            }
            _ => folder.envelopes.push((name, bytes)),
        }
    }
    for path in artifacts {
        folder
            .artifacts
            .push((file_name(path), path.display().to_string(), read(path)?));
    }
    match verify_folder(&folder, &key) {
        Ok(verified) => {
            let mut out = std::io::stdout().lock();
            for check in &verified.checks {
                writeln!(out, "ok: {check}")?;
            }
            writeln!(out, "verified with key {}", key.key_id())?;
            Ok(true)
        }
        Err(failures) => {
            let mut err = std::io::stderr().lock();
            for failure in &failures {
                writeln!(err, "FAILED: {failure}")?;
            }
            writeln!(
                err,
                "evidence does not verify ({} failure(s))",
                failures.len()
            )?;
            Ok(false)
        }
    }
}

/// `taskrunner keygen FILE`: a new Ed25519 (or P-256) key, FILE (PKCS#8 PEM, mode 0600) and
/// FILE.pub.
pub(crate) fn keygen(path: &Path, p256: bool) -> Result<()> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("cannot read /dev/urandom")?;
    let (private, public_key, key_id) = if p256 {
        let signer = P256Signer::from_scalar(&seed)?;
        (
            signer.to_pkcs8_pem()?,
            signer.public_key(),
            signer.key_id().to_owned(),
        )
    } else {
        let signer = Ed25519Signer::from_seed(seed);
        (
            signer.to_pkcs8_pem(),
            signer.public_key(),
            signer.key_id().to_owned(),
        )
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist)", path.display()))?;
    file.write_all(private.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let public = PathBuf::from(format!("{}.pub", path.display()));
    std::fs::write(&public, public_key.to_pem())
        .with_context(|| format!("cannot write {}", public.display()))?;
    println!("{key_id}");
    Ok(())
}

/// The effective configuration for the evidence commands.
pub(crate) fn settings(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    secrets_dir: Option<PathBuf>,
) -> Result<Settings> {
    config::load(config::Flags {
        config,
        data_dir,
        secrets_dir,
        database_url: None,
    })
}
