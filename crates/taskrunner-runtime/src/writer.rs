//! [`RunWriter`]: how one driver's writes reach the store. It owns the choice between fenced
//! writes (a replica driving under a lease: every write carries it and is refused with
//! `StaleFencingToken` once the lease is lost) and plain writes (the only process on its store,
//! or a replica journaling a decision for a run it does not drive), so nothing else branches
//! on it. It also owns waiting out a store that cannot take writes now (disk full, database
//! restarting): [`RunWriter::commit_until_stored`].

use std::sync::Arc;
use std::time::Duration;

use taskrunner_store::{ArtifactRecord, Lease, LeaseStore, NewLog, Store, StoreError, Transition};
use tokio_util::sync::CancellationToken;

use crate::ports::Clock;

/// First pause before a transition refused as `Full`/`Unavailable` is tried again.
pub(crate) const STORE_RETRY_FIRST: Duration = Duration::from_millis(50);
/// Longest pause between two tries (the pause doubles from [`STORE_RETRY_FIRST`]).
pub(crate) const STORE_RETRY_MAX: Duration = Duration::from_secs(2);

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

    /// Commits a transition the run cannot do without (an attempt ended, a timer fired): a
    /// store that cannot take writes now (`StoreError::is_transient`: disk full, database
    /// away) is tried again, pausing 50 ms doubling to 2 s, until the transition is stored,
    /// refused for another reason, or `stop` is cancelled (shutdown, lease lost: then the
    /// transient error is returned). The run's state in memory already holds the transition,
    /// so it must not be dropped: an acknowledged transition is never lost, and the run goes
    /// on once the store takes writes again. The pauses are `clock`'s sleeps.
    ///
    /// A commit reported failed may still have been stored (a database connection lost during
    /// the commit itself): the next try then meets `Conflict`, and if the journal holds this
    /// very record (same hash) the transition counts as stored. Its log sequences are unknown
    /// then (an empty list): log followers re-read the store.
    pub(crate) async fn commit_until_stored(
        &self,
        transition: Transition,
        clock: &dyn Clock,
        stop: &CancellationToken,
    ) -> Result<Vec<u64>, StoreError> {
        let mut pause = STORE_RETRY_FIRST;
        let mut failures = 0u32;
        loop {
            match self.commit(transition.clone()).await {
                Err(e) if e.is_transient() => {
                    failures += 1;
                    metrics::counter!("taskrunner_store_write_retries_total").increment(1);
                    if failures == 1 {
                        tracing::warn!(error = %e, run_id = %self.run_id, "store cannot take the run's transition now: trying again until it does");
                    } else {
                        tracing::debug!(error = %e, run_id = %self.run_id, failures, "store still cannot take the transition");
                    }
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => return Err(e),
                        () = clock.sleep(pause) => {}
                    }
                    pause = (pause * 2).min(STORE_RETRY_MAX);
                }
                Err(StoreError::Conflict { expected, actual })
                    if failures > 0 && self.already_stored(&transition).await =>
                {
                    tracing::info!(run_id = %self.run_id, expected, actual, "a transition reported failed had been stored");
                    return Ok(Vec::new());
                }
                other => {
                    if failures > 0 && other.is_ok() {
                        tracing::info!(run_id = %self.run_id, failures, "store takes writes again: transition stored");
                    }
                    return other;
                }
            }
        }
    }

    /// Whether the journal holds `transition`'s records right after its expected length.
    async fn already_stored(&self, transition: &Transition) -> bool {
        let Ok(stored) = self
            .stores
            .runs
            .load_journal(
                &transition.tenant,
                &transition.run_id,
                transition.expected_journal_len,
            )
            .await
        else {
            return false;
        };
        !transition.journal.is_empty()
            && stored.len() >= transition.journal.len()
            && stored
                .iter()
                .zip(&transition.journal)
                .all(|(s, ours)| s.seq == ours.seq && s.hash == ours.hash)
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
