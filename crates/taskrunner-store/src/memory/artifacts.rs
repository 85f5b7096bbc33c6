//! The memory store's logs and artifacts: log pages, file and blob artifacts.

use std::sync::Arc;

use futures::FutureExt;

use crate::blob;
use crate::error::StoreError;
use crate::ports::{ArtifactStore, LOGS_LIMIT_MAX, LogStore, StoreFuture};
use crate::records::{ArtifactRecord, BlobSource, LogRecord, NewLog, StoredBlob};
use crate::validate;

use super::{MemoryStore, ready};

impl LogStore for MemoryStore {
    fn logs<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        after_sequence: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<LogRecord>> {
        let result = (|| {
            validate::run_key(tenant, run_id)?;
            let state = self.lock()?;
            let run = state.run(tenant, run_id)?;
            let skip = usize::try_from(after_sequence).unwrap_or(usize::MAX);
            let records: Vec<LogRecord> = run
                .logs
                .iter()
                .skip(skip)
                .take(limit.min(LOGS_LIMIT_MAX))
                .cloned()
                .collect();
            validate::logs_loaded(&records, after_sequence)?;
            Ok(records)
        })();
        ready(result)
    }

    fn append_logs<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        logs: Vec<NewLog>,
    ) -> StoreFuture<'a, Vec<u64>> {
        let result = (|| {
            validate::run_key(tenant, run_id)?;
            validate::new_logs(&logs)?;
            self.lock()?.append_logs(tenant, run_id, logs, None)
        })();
        ready(result)
    }
}

impl ArtifactStore for MemoryStore {
    fn put_file<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        name: &'a str,
        source: BlobSource,
    ) -> StoreFuture<'a, StoredBlob> {
        async move {
            validate::run_key(tenant, run_id)?;
            if name.is_empty() {
                return Err(StoreError::Invalid("artifact name is empty".to_owned()));
            }
            self.lock()?.run(tenant, run_id)?;
            let bytes = match source {
                BlobSource::Bytes(b) => b,
                BlobSource::File(path) => {
                    tokio::task::spawn_blocking(move || read_regular_file(&path))
                        .await
                        .map_err(|e| StoreError::Backend(e.to_string()))??
                }
            };
            if bytes.len() as u64 > blob::ARTIFACT_BYTES_MAX {
                return Err(StoreError::Invalid(format!(
                    "artifact is larger than {} bytes",
                    blob::ARTIFACT_BYTES_MAX
                )));
            }
            let sha256 = blob::sha256_hex(&bytes);
            let stored_path = blob::stored_path_for(&sha256);
            let size_bytes = bytes.len() as u64;
            self.lock()?
                .blobs
                .entry(stored_path.clone())
                .or_insert_with(|| Arc::new(bytes));
            Ok(StoredBlob {
                stored_path,
                sha256,
                size_bytes,
            })
        }
        .boxed()
    }

    fn upsert_artifact<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        record: ArtifactRecord,
    ) -> StoreFuture<'a, ()> {
        let result = (|| {
            validate::run_key(tenant, run_id)?;
            validate::artifact_to_write(&record)?;
            self.lock()?.upsert(tenant, run_id, record, None)
        })();
        ready(result)
    }

    fn list_artifacts<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
    ) -> StoreFuture<'a, Vec<ArtifactRecord>> {
        let result = (|| {
            validate::run_key(tenant, run_id)?;
            let state = self.lock()?;
            let run = state.run(tenant, run_id)?;
            run.artifacts
                .iter()
                .try_for_each(validate::artifact_loaded)?;
            Ok(run.artifacts.clone())
        })();
        ready(result)
    }

    fn open_blob<'a>(&'a self, stored_path: &'a str) -> StoreFuture<'a, Vec<u8>> {
        let result = (|| {
            let digest = blob::digest_of_stored_path(stored_path).ok_or_else(|| {
                StoreError::Invalid(format!("{stored_path:?} is not a blob path"))
            })?;
            let bytes = self
                .lock()?
                .blobs
                .get(stored_path)
                .cloned()
                .ok_or(StoreError::NotFound)?;
            if blob::sha256_hex(&bytes) != digest {
                return Err(StoreError::Corrupt(format!(
                    "blob {stored_path} does not match its digest"
                )));
            }
            Ok(bytes.as_ref().clone())
        })();
        ready(result)
    }
}

/// Reads a regular file (not a directory, device or FIFO), at most `ARTIFACT_BYTES_MAX` bytes.
pub(crate) fn read_regular_file(path: &std::path::Path) -> Result<Vec<u8>, StoreError> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(StoreError::Invalid(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    file.take(blob::ARTIFACT_BYTES_MAX + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > blob::ARTIFACT_BYTES_MAX {
        return Err(StoreError::Invalid(format!(
            "artifact is larger than {} bytes",
            blob::ARTIFACT_BYTES_MAX
        )));
    }
    Ok(bytes)
}
