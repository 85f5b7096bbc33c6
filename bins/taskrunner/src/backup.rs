//! `taskrunner backup` and `taskrunner restore`: an online backup of the embedded store as one
//! file, and its restoration into a new data directory.
//!
//! The backup is a tar archive: `taskrunner-backup.json` (what it holds, with the database's
//! SHA-256), `taskrunner.db` (a consistent copy taken while the server writes, see
//! `taskrunner_store_sqlite::backup`; the store is `DATA_DIR/store/`) and every artifact blob the copied rows reference, under
//! its content address (`artifacts/sha256/ab/abcdef…`). It is written next to its destination
//! and renamed into place once complete and fsynced, so a backup file is whole or absent.
//!
//! Restoring checks everything before anything is visible: only the expected entries are
//! accepted (no other path can be written), each blob's content must match its address and the
//! database its recorded digest, every referenced blob must be present, and every journal must
//! verify from its plan hash to its recorded head. Only then is the staging directory renamed
//! to the new data directory. Workspaces are not part of a backup: a run restored in flight
//! resumes from its journal (attempts that were running are retried as `interrupted`).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use taskrunner_store::{digest_of_stored_path, hex, stored_path_for};
use taskrunner_store_sqlite::backup::{
    DatabaseCopy, StoredJournal, copy_database, describe, for_each_journal,
};
use taskrunner_store_sqlite::{DB_FILE_NAME, SCHEMA_VERSION};

use crate::run::STORE_DIR;

/// Name of the archive entry describing the backup.
const MANIFEST_NAME: &str = "taskrunner-backup.json";
/// Version of the archive layout.
const FORMAT: u32 = 1;

/// The description written first into every backup.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Manifest {
    format: u32,
    taskrunner_version: String,
    schema_version: u32,
    runs: u64,
    active_runs: u64,
    blobs: u64,
    database_sha256: String,
}

/// What a backup or a restore did.
#[derive(Debug)]
pub(crate) struct Summary {
    pub runs: u64,
    pub active_runs: u64,
    pub blobs: u64,
    pub bytes: u64,
}

/// Writes a backup of `data_dir` to `to`.
pub(crate) fn backup(data_dir: &Path, to: &Path) -> Result<Summary> {
    if to.exists() {
        bail!("{} already exists; choose a new file", to.display());
    }
    let parent = parent_of(to);
    let staging = tempfile::Builder::new()
        .prefix(".taskrunner-backup-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a staging directory in {}", parent.display()))?;
    let db = staging.path().join(DB_FILE_NAME);
    let store = data_dir.join(STORE_DIR);
    if !store.is_dir() {
        bail!(
            "{} is not a taskrunner data directory (no {STORE_DIR}/ in it)",
            data_dir.display()
        );
    }
    let copy = copy_database(&store, &db)
        .with_context(|| format!("cannot copy the database of {}", data_dir.display()))?;
    let manifest = Manifest {
        format: FORMAT,
        taskrunner_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version: copy.schema_version,
        runs: copy.runs,
        active_runs: copy.active_runs,
        blobs: copy.blobs.len() as u64,
        database_sha256: sha256_file(&db)?,
    };

    let partial = staging.path().join("backup.tar");
    let file =
        File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut tar = tar::Builder::new(file);
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
    append_bytes(&mut tar, MANIFEST_NAME, &manifest_bytes)?;
    tar.append_path_with_name(&db, DB_FILE_NAME)
        .context("cannot add the database to the backup")?;
    for stored in &copy.blobs {
        let source = store.join(stored);
        let digest = digest_of_stored_path(stored).unwrap_or_default();
        let actual = sha256_file(&source)
            .with_context(|| format!("artifact blob {stored} is referenced but unreadable"))?;
        if actual != digest {
            bail!("artifact blob {stored} does not match its address (sha256 {actual})");
        }
        tar.append_path_with_name(&source, stored)
            .with_context(|| format!("cannot add {stored} to the backup"))?;
    }
    let file = tar
        .into_inner()
        .context("cannot finish the backup archive")?;
    file.sync_all().context("cannot flush the backup to disk")?;
    let bytes = file.metadata()?.len();
    drop(file);
    std::fs::rename(&partial, to)
        .with_context(|| format!("cannot move the backup to {}", to.display()))?;
    sync_dir(&parent);
    Ok(Summary {
        runs: copy.runs,
        active_runs: copy.active_runs,
        blobs: copy.blobs.len() as u64,
        bytes,
    })
}

/// Restores the backup `from` into `data_dir`, which must not exist or be empty.
pub(crate) fn restore(from: &Path, data_dir: &Path) -> Result<Summary> {
    if data_dir.exists() {
        let empty = std::fs::read_dir(data_dir)
            .with_context(|| format!("cannot read {}", data_dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} is not empty; restore into a new directory",
                data_dir.display()
            );
        }
    }
    let parent = parent_of(data_dir);
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".taskrunner-restore-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a staging directory in {}", parent.display()))?;
    let file = File::open(from).with_context(|| format!("cannot open {}", from.display()))?;
    let bytes = file.metadata()?.len();
    let store = staging.path().join(STORE_DIR);
    std::fs::create_dir(&store)?;
    let (manifest, blobs) = unpack(file, &store)
        .with_context(|| format!("{} is not a usable taskrunner backup", from.display()))?;
    let db = store.join(DB_FILE_NAME);
    let copy = check_contents(&manifest, &db, &blobs)
        .with_context(|| format!("{} is not a usable taskrunner backup", from.display()))?;
    let verified = verify_journals(&db)
        .with_context(|| format!("{}: a journal does not verify", from.display()))?;
    debug_assert_eq!(verified, copy.runs);

    let staged = staging.keep();
    if data_dir.exists() {
        std::fs::remove_dir(data_dir)
            .with_context(|| format!("cannot replace the empty {}", data_dir.display()))?;
    }
    std::fs::rename(&staged, data_dir).with_context(|| {
        format!(
            "cannot move the restored store from {} to {}",
            staged.display(),
            data_dir.display()
        )
    })?;
    sync_dir(&parent);
    Ok(Summary {
        runs: copy.runs,
        active_runs: copy.active_runs,
        blobs: copy.blobs.len() as u64,
        bytes,
    })
}

/// Extracts the archive into `dir`, accepting only the manifest, the database and blobs at
/// their content addresses (each checked against its address while written).
fn unpack(file: File, dir: &Path) -> Result<(Manifest, BTreeSet<String>)> {
    let mut archive = tar::Archive::new(file);
    let mut manifest = None;
    let mut have_db = false;
    let mut blobs = BTreeSet::new();
    for entry in archive.entries().context("cannot read the archive")? {
        let mut entry = entry.context("cannot read the archive")?;
        let path = entry.path().context("an entry has an unreadable path")?;
        let name = path.to_str().map(str::to_owned).unwrap_or_default();
        if entry.header().entry_type() != tar::EntryType::Regular {
            bail!("unexpected entry {name:?} (not a regular file)");
        }
        if name == MANIFEST_NAME {
            let mut text = Vec::new();
            entry.by_ref().take(1 << 20).read_to_end(&mut text)?;
            let parsed: Manifest = serde_json::from_slice(&text)
                .with_context(|| format!("{MANIFEST_NAME} is not valid"))?;
            if parsed.format != FORMAT {
                bail!(
                    "backup format {} is not supported by this build (it reads format {FORMAT})",
                    parsed.format
                );
            }
            if parsed.schema_version > SCHEMA_VERSION {
                bail!(
                    "the backup was written by taskrunner {} with schema version {}, newer than this build supports ({SCHEMA_VERSION})",
                    parsed.taskrunner_version,
                    parsed.schema_version
                );
            }
            manifest = Some(parsed);
        } else if name == DB_FILE_NAME {
            if have_db {
                bail!("the database appears twice");
            }
            copy_entry(&mut entry, &dir.join(DB_FILE_NAME), None)?;
            have_db = true;
        } else if let Some(digest) = digest_of_stored_path(&name)
            && stored_path_for(digest) == name
        {
            let target = dir.join(&name);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            copy_entry(&mut entry, &target, Some(digest))
                .with_context(|| format!("artifact blob {name}"))?;
            blobs.insert(name);
        } else {
            bail!("unexpected entry {name:?}");
        }
    }
    let manifest = manifest.ok_or_else(|| anyhow!("{MANIFEST_NAME} is missing"))?;
    if !have_db {
        bail!("{DB_FILE_NAME} is missing");
    }
    Ok((manifest, blobs))
}

/// Checks the extracted database against the manifest and that every blob it references came
/// with it.
fn check_contents(
    manifest: &Manifest,
    db: &Path,
    blobs: &BTreeSet<String>,
) -> Result<DatabaseCopy> {
    let digest = sha256_file(db)?;
    if digest != manifest.database_sha256 {
        bail!(
            "{DB_FILE_NAME} does not match its recorded digest (sha256 {digest}, recorded {})",
            manifest.database_sha256
        );
    }
    let copy = describe(db).context("cannot read the database")?;
    if let Some(missing) = copy.blobs.iter().find(|b| !blobs.contains(*b)) {
        bail!("artifact blob {missing} is referenced but missing");
    }
    Ok(copy)
}

/// Verifies every run's journal in `db` from its plan hash to its recorded head; the number of
/// runs verified.
pub(crate) fn verify_journals(db: &Path) -> Result<u64> {
    for_each_journal(db, |journal: StoredJournal| -> Result<()> {
        let run = format!("run {}/{}", journal.tenant, journal.run_id);
        let records = journal
            .entries
            .iter()
            .map(taskrunner_runtime::journal_record)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("{run}: {e}"))?;
        taskrunner_engine::verify(&journal.plan_hash, &records, journal.head.as_deref())
            .map_err(|e| anyhow!("{run}: {e}"))
    })
}

/// Copies an archive entry to a new file, checking its SHA-256 against `digest` when given.
fn copy_entry(entry: &mut impl Read, target: &Path, digest: Option<&str>) -> Result<()> {
    let mut out =
        File::create_new(target).with_context(|| format!("cannot create {}", target.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        let n = entry.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    out.sync_all()?;
    if let Some(expected) = digest {
        let actual = hex(&hasher.finalize());
        if actual != expected {
            bail!("content does not match its address (sha256 {actual})");
        }
    }
    Ok(())
}

fn append_bytes(tar: &mut tar::Builder<File>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append_data(&mut header, name, bytes)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

/// The directory a path is in (`.` for a bare file name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes a rename in `dir` durable (best effort: not every filesystem allows it).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
