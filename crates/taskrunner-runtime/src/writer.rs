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
        let mut wait = TransientWait::new(&self.run_id, "transition", clock);
        loop {
            match self.commit(transition.clone()).await {
                Err(e) if e.is_transient() => wait.pause(e, stop).await?,
                Err(StoreError::Conflict { expected, actual })
                    if wait.failures > 0 && self.already_stored(&transition).await =>
                {
                    tracing::info!(run_id = %self.run_id, expected, actual, "a transition reported failed had been stored");
                    return Ok(Vec::new());
                }
                other => {
                    wait.done(other.is_ok());
                    return other;
                }
            }
        }
    }

    /// Appends step output lines like [`RunWriter::append_logs`], waiting out a store that
    /// cannot take writes now as [`RunWriter::commit_until_stored`] does (the step's end is
    /// recorded after its output, so the run waits for the store anyway). An append reported
    /// failed that was stored all the same (a connection lost during its commit) is appended
    /// again: a line may then appear twice, never be lost.
    pub(crate) async fn append_logs_until_stored(
        &self,
        logs: Vec<NewLog>,
        clock: &dyn Clock,
        stop: &CancellationToken,
    ) -> Result<Vec<u64>, StoreError> {
        let mut wait = TransientWait::new(&self.run_id, "step output", clock);
        loop {
            match self.append_logs(logs.clone()).await {
                Err(e) if e.is_transient() => wait.pause(e, stop).await?,
                other => {
                    wait.done(other.is_ok());
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

/// The pauses between tries of a write the store refused as transient: 50 ms doubling to 2 s,
/// one warning for the first refusal, one line when the store takes the write.
struct TransientWait<'a> {
    run_id: &'a str,
    clock: &'a dyn Clock,
    what: &'static str,
    pause: Duration,
    failures: u32,
}

impl<'a> TransientWait<'a> {
    fn new(run_id: &'a str, what: &'static str, clock: &'a dyn Clock) -> Self {
        TransientWait {
            run_id,
            clock,
            what,
            pause: STORE_RETRY_FIRST,
            failures: 0,
        }
    }

    /// Sleeps before the next try; `Err(e)` once `stop` is cancelled.
    async fn pause(&mut self, e: StoreError, stop: &CancellationToken) -> Result<(), StoreError> {
        self.failures += 1;
        metrics::counter!("taskrunner_store_write_retries_total").increment(1);
        if self.failures == 1 {
            tracing::warn!(error = %e, run_id = %self.run_id, what = self.what, "store cannot take the run's write now: trying again until it does");
        } else {
            tracing::debug!(error = %e, run_id = %self.run_id, what = self.what, failures = self.failures, "store still cannot take the write");
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => return Err(e),
            () = self.clock.sleep(self.pause) => {}
        }
        self.pause = (self.pause * 2).min(STORE_RETRY_MAX);
        Ok(())
    }

    /// The write ended (`stored` or refused for another reason) after waiting.
    fn done(&self, stored: bool) {
        if self.failures > 0 && stored {
            tracing::info!(run_id = %self.run_id, what = self.what, failures = self.failures, "store takes writes again: stored");
        }
    }
}
