//! Content-addressed artifact files on disk, under `root/artifacts/sha256/ab/abcdef…`, shared by
//! the durable adapters (SQLite keeps them in its data directory, PostgreSQL replicas in one
//! shared directory).
//!
//! A blob is streamed into `artifacts/tmp/` while hashing, fsynced, then renamed into place and
//! its directory fsynced, so a stored path always names a complete file. Identical content is
//! stored once (the rename is skipped when the blob exists).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::blob::{ARTIFACT_BYTES_MAX, digest_of_stored_path, hex, sha256_hex, stored_path_for};
use crate::error::{StoreError, StoreResult};
use crate::records::{BlobSource, StoredBlob};
use sha2::{Digest, Sha256};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Fsyncs a directory so that a rename or creation inside it is durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and parents) and makes the creation durable.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

struct HashingWriter {
    file: File,
    hasher: Sha256,
    size: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn too_large() -> StoreError {
    StoreError::Invalid(format!(
        "artifact is larger than {ARTIFACT_BYTES_MAX} bytes"
    ))
}

/// Stores `source` under `data_dir` (blocking; call it from `spawn_blocking`).
pub fn put(data_dir: &Path, source: BlobSource) -> StoreResult<StoredBlob> {
    let tmp_dir = data_dir.join("artifacts").join("tmp");
    ensure_dir(&tmp_dir)?;
    let tmp_path = tmp_dir.join(format!(
        "{}-{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp_path)?;
    let mut writer = HashingWriter {
        file,
        hasher: Sha256::new(),
        size: 0,
    };
    let written = (|| -> StoreResult<()> {
        match source {
            BlobSource::Bytes(bytes) => {
                if bytes.len() as u64 > ARTIFACT_BYTES_MAX {
                    return Err(too_large());
                }
                writer.write_all(&bytes)?;
            }
            BlobSource::File(path) => {
                let src = File::open(&path)?;
                if !src.metadata()?.is_file() {
                    return Err(StoreError::Invalid(format!(
                        "{} is not a regular file",
                        path.display()
                    )));
                }
                io::copy(&mut src.take(ARTIFACT_BYTES_MAX + 1), &mut writer)?;
                if writer.size > ARTIFACT_BYTES_MAX {
                    return Err(too_large());
                }
            }
        }
        writer.file.sync_all()?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    let sha256 = hex(&writer.hasher.finalize());
    let size_bytes = writer.size;
    let stored_path = stored_path_for(&sha256);
    let final_path = data_dir.join(&stored_path);
    let placed = (|| -> StoreResult<()> {
        let shard = final_path
            .parent()
            .ok_or_else(|| StoreError::Io("blob path has no parent".to_owned()))?;
        ensure_dir(shard)?;
        if final_path.is_file() {
            // Already stored: content addressing makes the existing file identical.
            fs::remove_file(&tmp_path)?;
        } else {
            fs::rename(&tmp_path, &final_path)?;
            sync_dir(shard)?;
        }
        Ok(())
    })();
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    Ok(StoredBlob {
        stored_path,
        sha256,
        size_bytes,
    })
}

/// Reads a blob and checks it against the digest in its path (blocking; `NotFound` if absent).
pub fn open(data_dir: &Path, stored_path: &str) -> StoreResult<Vec<u8>> {
    let digest = digest_of_stored_path(stored_path)
        .ok_or_else(|| StoreError::Invalid(format!("{stored_path:?} is not a blob path")))?;
    let path: PathBuf = data_dir.join(stored_path);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound),
        Err(e) => return Err(e.into()),
    };
    if sha256_hex(&bytes) != digest {
        return Err(StoreError::Corrupt(format!(
            "blob {stored_path} does not match its digest"
        )));
    }
    Ok(bytes)
}
