//! The handles every part of the runtime shares: the stores, the executors, the clock, the
//! secret provider, the settings and (as a replica) the lease port. Also reading a run back
//! from the store, which every part needs in the same way.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use taskrunner_engine::{Journal, Run, RunInfo, Timestamp};
use taskrunner_exec::ExecutorRegistry;
use taskrunner_plan::Plan;
use taskrunner_store::{Lease, Store};
use tokio_util::sync::CancellationToken;

use crate::api::RuntimeConfig;
use crate::error::RuntimeError;
use crate::ports::{Clock, SecretProvider};
use crate::records::from_entry;
use crate::replica::Replica;
use crate::writer::RunWriter;

/// The shared handles (one per runtime, behind an `Arc`).
pub(crate) struct Shared {
    pub(crate) stores: Store,
    pub(crate) executors: ExecutorRegistry,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) secrets: Arc<dyn SecretProvider>,
    pub(crate) config: RuntimeConfig,
    /// Set when the runtime is a replica.
    pub(crate) replica: Option<Replica>,
    /// Cancelled when the runtime shuts down; every driver's stop token is a child of it.
    pub(crate) shutdown: CancellationToken,
    /// Counter of generated run ids.
    pub(crate) id_counter: AtomicU64,
}

impl Shared {
    /// The replica's lease port and settings, when it is one.
    pub(crate) fn replica(&self) -> Option<&Replica> {
        self.replica.as_ref()
    }

    /// A writer for the run: fenced with `lease` when this runtime is a replica.
    pub(crate) fn writer(&self, tenant: &str, run_id: &str, lease: Option<Lease>) -> RunWriter {
        RunWriter::new(
            &self.stores,
            self.replica().map(|r| &r.leases),
            tenant,
            run_id,
            lease,
        )
    }

    /// `workspace_root/<tenant>/<run_id>`, absolute.
    pub(crate) fn workspace_of(&self, info: &RunInfo) -> PathBuf {
        // Absolute, so `$TASKRUNNER_WORKSPACE` means the same thing from any directory.
        let root = &self.config.workspace_root;
        let root = std::path::absolute(root).unwrap_or_else(|_| root.clone());
        root.join(&info.tenant).join(&info.run_id)
    }

    /// A fresh run id: unique, sortable, `^[a-zA-Z0-9_-]+$`.
    pub(crate) fn generate_run_id(&self) -> String {
        let now = self.clock.now().millis();
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "run-{now:013}-{:05}-{:04x}",
            std::process::id() % 100_000,
            n & 0xffff
        )
    }

    /// [`Shared::load`], `NotFound` first when the tenant has no such run.
    pub(crate) async fn load_existing(
        &self,
        tenant: &str,
        run_id: &str,
    ) -> Result<(Run, Journal), RuntimeError> {
        if self.stores.runs.get_run(tenant, run_id).await?.is_none() {
            return Err(RuntimeError::NotFound(format!("run {run_id}")));
        }
        self.load(tenant, run_id).await
    }

    /// Reads a run back: the frozen plan (checked against its hash) and the journal (verified
    /// and folded into the state).
    pub(crate) async fn load(
        &self,
        tenant: &str,
        run_id: &str,
    ) -> Result<(Run, Journal), RuntimeError> {
        let corrupt = |message: String| RuntimeError::Corrupt {
            run_id: run_id.to_owned(),
            message,
        };
        let record = self
            .stores
            .runs
            .get_run(tenant, run_id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound(format!("run {run_id}")))?;
        let plan = Plan::from_canonical_json(&record.plan_json, Some(&record.plan_hash))
            .map_err(|e| corrupt(e.to_string()))?;
        let entries = self.stores.runs.load_journal(tenant, run_id, 0).await?;
        let records = entries
            .iter()
            .map(from_entry)
            .collect::<Result<Vec<_>, _>>()
            .map_err(corrupt)?;
        let info = RunInfo {
            run_id: run_id.to_owned(),
            tenant: tenant.to_owned(),
        };
        let plan = Arc::new(plan);
        let secrets = self.resolve_secrets(&plan).secrets;
        let run = taskrunner_engine::replay(
            plan.clone(),
            info,
            Timestamp(record.created_at_ms),
            &records,
            &secrets,
        )
        .map_err(|e| corrupt(e.to_string()))?;
        let journal = Journal::resume(plan.hash(), &records).map_err(|e| corrupt(e.to_string()))?;
        Ok((run, journal))
    }
}
