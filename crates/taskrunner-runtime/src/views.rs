//! The runtime's read views: what the public API answers about stored runs and artifacts, with
//! typed statuses rather than the store's strings. Rows that do not decode are `Corrupt`.

use taskrunner_engine::{RunStatus, Timestamp};
use taskrunner_store::{ArtifactRecord, Page, RunRecord, artifact};

use crate::error::RuntimeError;

/// A stored run without its journal: what is known without replaying it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunSummary {
    /// The tenant the run belongs to.
    pub tenant: String,
    /// The run's id, unique in its tenant.
    pub run_id: String,
    /// Its status after the last committed transition.
    pub status: RunStatus,
    /// The pack's `metadata.name`.
    pub pack_name: String,
    /// The pack's `metadata.version`.
    pub pack_version: String,
    /// The hash of the run's frozen plan (`sha256:…`).
    pub plan_hash: String,
    /// When the run was created.
    pub created_at: Timestamp,
    /// When its last transition was committed (the creation time at first).
    pub updated_at: Timestamp,
}

impl RunSummary {
    /// The view of a stored row.
    pub(crate) fn from_record(record: RunRecord) -> Result<RunSummary, RuntimeError> {
        let status = parse_run_status(&record.status).ok_or_else(|| RuntimeError::Corrupt {
            run_id: record.run_id.clone(),
            message: format!("unknown stored status {:?}", record.status),
        })?;
        Ok(RunSummary {
            tenant: record.tenant,
            run_id: record.run_id,
            status,
            pack_name: record.pack_name,
            pack_version: record.pack_version,
            plan_hash: record.plan_hash,
            created_at: Timestamp(record.created_at_ms),
            updated_at: Timestamp(record.updated_at_ms),
        })
    }
}

/// One page of a tenant's runs, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunPage {
    /// The runs of this page.
    pub runs: Vec<RunSummary>,
    /// The cursor of the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

impl RunPage {
    /// The view of a stored page.
    pub(crate) fn from_page(page: Page) -> Result<RunPage, RuntimeError> {
        Ok(RunPage {
            runs: page
                .runs
                .into_iter()
                .map(RunSummary::from_record)
                .collect::<Result<_, _>>()?,
            next_cursor: page.next_cursor,
        })
    }
}

/// What a pack output produces (SPEC §5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// A file copied from the run workspace into the blob store.
    File,
    /// A JSON value (`expression_json`).
    Object,
}

impl ArtifactKind {
    /// The API (and stored) spelling: `file`, `object`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::File => artifact::KIND_FILE,
            ArtifactKind::Object => artifact::KIND_OBJECT,
        }
    }

    fn parse(text: &str) -> Option<ArtifactKind> {
        [ArtifactKind::File, ArtifactKind::Object]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// Where an artifact's capture stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactStatus {
    /// Declared, not captured yet (the run has not ended).
    Pending,
    /// Captured.
    Captured,
    /// The capture failed; `notes` say why.
    Failed,
}

impl ArtifactStatus {
    /// The API (and stored) spelling: `pending`, `captured`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactStatus::Pending => artifact::STATUS_PENDING,
            ArtifactStatus::Captured => artifact::STATUS_CAPTURED,
            ArtifactStatus::Failed => artifact::STATUS_FAILED,
        }
    }

    fn parse(text: &str) -> Option<ArtifactStatus> {
        [
            ArtifactStatus::Pending,
            ArtifactStatus::Captured,
            ArtifactStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A run artifact (a declared pack output), SPEC §5.6.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Artifact {
    /// The output's name, unique in the run.
    pub name: String,
    /// File or object.
    pub kind: ArtifactKind,
    /// Its capture state.
    pub status: ArtifactStatus,
    /// The path in the run workspace (file outputs).
    pub source_path: Option<String>,
    /// Where the file is stored, relative to the data directory, once captured.
    pub stored_path: Option<String>,
    /// Why a capture failed, or other remarks.
    pub notes: Option<String>,
    /// When it was captured.
    pub captured_at: Option<Timestamp>,
    /// RFC 8785 JSON of an object output's value.
    pub expression_json: Option<String>,
    /// Bare lowercase hex SHA-256 of a stored file.
    pub sha256: Option<String>,
    /// Size of a stored file in bytes.
    pub size_bytes: Option<u64>,
}

impl Artifact {
    /// The view of a stored row of run `run_id`.
    pub(crate) fn from_record(
        run_id: &str,
        record: ArtifactRecord,
    ) -> Result<Artifact, RuntimeError> {
        let corrupt = |what: &str, text: &str| RuntimeError::Corrupt {
            run_id: run_id.to_owned(),
            message: format!("artifact {}: unknown stored {what} {text:?}", record.name),
        };
        let kind =
            ArtifactKind::parse(&record.kind).ok_or_else(|| corrupt("kind", &record.kind))?;
        let status = ArtifactStatus::parse(&record.status)
            .ok_or_else(|| corrupt("status", &record.status))?;
        Ok(Artifact {
            name: record.name,
            kind,
            status,
            source_path: record.source_path,
            stored_path: record.stored_path,
            notes: record.notes,
            captured_at: record.captured_at_ms.map(Timestamp),
            expression_json: record.expression_json,
            sha256: record.sha256,
            size_bytes: record.size_bytes,
        })
    }
}

/// A stored run status as the engine's enum.
fn parse_run_status(text: &str) -> Option<RunStatus> {
    [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::AwaitingApproval,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: &str) -> RunRecord {
        RunRecord {
            tenant: "t".into(),
            run_id: "r".into(),
            pack_name: "p".into(),
            pack_version: "1.0.0".into(),
            plan_hash: "sha256:x".into(),
            plan_json: "{}".into(),
            created_at_ms: 1,
            updated_at_ms: 2,
            status: status.into(),
            next_wake_at_ms: None,
            journal_len: 0,
            journal_head: None,
            host_digest: None,
            snapshot: None,
        }
    }

    #[test]
    fn every_store_status_has_a_typed_view_and_garbage_is_corrupt() {
        for text in taskrunner_store::status::ALL {
            let summary = RunSummary::from_record(record(text)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(summary.status.as_str(), text);
            assert_eq!(summary.updated_at, Timestamp(2));
        }
        assert!(matches!(
            RunSummary::from_record(record("Sleeping")),
            Err(RuntimeError::Corrupt { .. })
        ));
    }

    #[test]
    fn artifacts_decode_with_the_store_spellings() {
        let row = |kind: &str, status: &str| ArtifactRecord {
            name: "out".into(),
            kind: kind.into(),
            source_path: None,
            stored_path: None,
            status: status.into(),
            notes: None,
            captured_at_ms: Some(5),
            expression_json: None,
            sha256: None,
            size_bytes: Some(3),
        };
        let a = Artifact::from_record("r", row(artifact::KIND_FILE, artifact::STATUS_CAPTURED))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (a.kind, a.status, a.captured_at),
            (
                ArtifactKind::File,
                ArtifactStatus::Captured,
                Some(Timestamp(5))
            )
        );
        for (kind, status) in [("blob", "pending"), ("object", "lost")] {
            let err = Artifact::from_record("r", row(kind, status)).unwrap_err();
            assert!(matches!(err, RuntimeError::Corrupt { .. }), "{err}");
        }
    }
}
