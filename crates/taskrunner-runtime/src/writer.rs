//! [`RunWriter`]: how one driver's writes reach the store. It owns the choice between fenced
//! writes (a replica driving under a lease: every write carries it and is refused with
//! `StaleFencingToken` once the lease is lost) and plain writes (the only process on its store,
//! or a replica journaling a decision for a run it does not drive), so nothing else branches
//! on it.

use std::sync::Arc;

use taskrunner_store::{ArtifactRecord, Lease, LeaseStore, NewLog, Store, StoreError, Transition};

/// Where one run's transitions, log lines and artifact records are written.
#[derive(Clone)]
pub(crate) struct RunWriter {
    stores: Store,
    tenant: String,
    run_id: String,
    /// The lease port (replicas only).
    leases: Option<Arc<dyn LeaseStore>>,
    /// The lease the run is driven under (replicas only).
    lease: Option<Lease>,
}

impl RunWriter {
    /// Plain writes to `stores`.
    pub(crate) fn plain(stores: &Store, tenant: &str, run_id: &str) -> RunWriter {
        RunWriter {
            stores: stores.clone(),
            tenant: tenant.to_owned(),
            run_id: run_id.to_owned(),
            leases: None,
            lease: None,
        }
    }

    /// Writes fenced with `lease` through `leases` when both are given (a replica driving
    /// under a lease), plain writes otherwise.
    pub(crate) fn new(
        stores: &Store,
        leases: Option<&Arc<dyn LeaseStore>>,
        tenant: &str,
        run_id: &str,
        lease: Option<Lease>,
    ) -> RunWriter {
        RunWriter {
            leases: leases.cloned(),
            lease,
            ..RunWriter::plain(stores, tenant, run_id)
        }
    }

    /// The lease the run is driven under, if any.
    pub(crate) fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// From now on, writes are fenced with this newer lease of the run (claimed back after
    /// parking).
    pub(crate) fn set_lease(&mut self, lease: Lease) {
        self.lease = Some(lease);
    }

    /// The lease port and lease to fence with, when both are there.
    fn fence(&self) -> Option<(&Arc<dyn LeaseStore>, &Lease)> {
        self.leases.as_ref().zip(self.lease.as_ref())
    }

    /// Commits a transition; returns the sequences of its log entries.
    pub(crate) async fn commit(&self, transition: Transition) -> Result<Vec<u64>, StoreError> {
        match self.fence() {
            Some((leases, lease)) => leases.commit_fenced(lease, transition).await,
            None => self.stores.runs.commit(transition).await,
        }
    }

    /// Appends log entries that go with no transition (step output); returns their sequences.
    pub(crate) async fn append_logs(&self, logs: Vec<NewLog>) -> Result<Vec<u64>, StoreError> {
        match self.fence() {
            Some((leases, lease)) => leases.append_logs_fenced(lease, logs).await,
            None => {
                self.stores
                    .logs
                    .append_logs(&self.tenant, &self.run_id, logs)
                    .await
            }
        }
    }

    /// Inserts or replaces an artifact record of the run.
    pub(crate) async fn upsert_artifact(&self, record: ArtifactRecord) -> Result<(), StoreError> {
        match self.fence() {
            Some((leases, lease)) => leases.upsert_artifact_fenced(lease, record).await,
            None => {
                self.stores
                    .artifacts
                    .upsert_artifact(&self.tenant, &self.run_id, record)
                    .await
            }
        }
    }
}
