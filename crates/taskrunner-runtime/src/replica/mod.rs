//! The replica protocol (SPEC rule 29): how a runtime that shares its store with other
//! processes claims runs (the claimer), renews and gives up their leases (the renewer, orphan
//! hand-off) and takes over a run just claimed. What a replica believes it holds and how it
//! loses a lease is in `belief`, the settings ([`ReplicaConfig`]) in `config`, decisions and
//! cancellations for runs another replica drives in `foreign`.
//!
//! A replica drives only the runs whose lease it holds: a claimer takes claimable runs (at
//! least every second and on wake-ups), a renewer extends the leases every few seconds, and a
//! driver whose lease's local deadline passes or whose renewal does not return it loses it at
//! once (its attempts' process groups killed first); every write of a driver is fenced with
//! its lease (see [`crate::writer::RunWriter`]). A driver releases its run when it parks at a
//! gate or ends (`Park`) and on graceful shutdown (`Handoff`).

mod belief;
mod config;
mod foreign;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use taskrunner_engine::{Event, Journal, Run, RunStatus};
use taskrunner_store::{Lease, LeaseStore, Release, StoreError, Wakeup};

pub(crate) use self::belief::{
    Claimed, Claims, Deadline, Loser, local_deadline, lose, takeover_hold, watch_deadline,
};
use self::config::RENEW_RETRY;
pub use self::config::{CLAIM_EVERY_MAX, MAX_DRIVERS_MAX, RENEW_EVERY_MAX, ReplicaConfig};
pub(crate) use self::foreign::FOREIGN_TRIES;
use crate::actor::Msg;
use crate::error::RuntimeError;
use crate::runtime::{Hydrated, Runtime};

/// How long a decision waits for the replica holding a run at a gate to park it (then this
/// replica drives the run), before journaling the decision for that replica instead.
const PARK_WAIT: Duration = Duration::from_secs(2);
/// Pause between looks while waiting for a run to be parked.
const PARK_POLL: Duration = Duration::from_millis(10);

/// A replica's lease port, settings, and the claims it has in flight or not yet adopted.
pub(crate) struct Replica {
    pub(crate) leases: Arc<dyn LeaseStore>,
    pub(crate) config: ReplicaConfig,
    pub(crate) claims: Claims,
}

/// The replica protocol, run by the runtime when it is a replica.
impl Runtime {
    /// Replicas: takes claimable runs at least every `claim_every` and at once on wake-ups; a
    /// wake-up for a run driven here makes its driver apply what another replica journaled.
    pub(crate) async fn claim_loop(self) {
        let Some(replica) = self.replica() else {
            return;
        };
        let (leases, config) = (replica.leases.clone(), replica.config.clone());
        let shutdown = self.shared.shutdown.clone();
        let mut wakeups = leases.wakeups();
        // Woken only because drivers ended: claim once a batch worth of room is free, so a
        // stream of short runs does not turn into one claim query per run.
        let refill = config.claim_batch.min((config.max_drivers / 4).max(1));
        let mut drivers_ended_only = false;
        loop {
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                let room = config.max_drivers.saturating_sub(self.drivers());
                let limit = config.claim_batch.min(room);
                if limit == 0 || (drivers_ended_only && room < refill) {
                    break;
                }
                let ticket = replica
                    .claims
                    .begin(self.shared.clock.monotonic(), config.lease_ttl);
                let claimed = match leases.claim(&config.owner, limit, config.lease_ttl).await {
                    Ok(claimed) => ticket.answered(&claimed),
                    Err(e) => {
                        tracing::warn!(error = %e, "replica: claiming runs failed");
                        break;
                    }
                };
                let full = claimed.len() >= limit;
                for claim in claimed {
                    if let Err(e) = self.adopt(claim).await {
                        tracing::error!(error = %e, "replica: a claimed run could not be loaded");
                    }
                }
                if !full {
                    break;
                }
            }
            drivers_ended_only = false;
            let woken = tokio::select! {
                () = self.shared.clock.sleep(config.claim_every) => None,
                w = wakeups.next() => w,
                () = self.registry.driver_ended() => {
                    drivers_ended_only = true;
                    None
                }
                () = shutdown.cancelled() => return,
            };
            if let Some(first) = woken {
                self.wake_driver(&first);
                // Coalesce a burst of wake-ups into one claim.
                while let Some(Some(w)) = wakeups.next().now_or_never() {
                    self.wake_driver(&w);
                }
            }
        }
    }

    /// Runs driven here now.
    fn drivers(&self) -> usize {
        self.registry.len()
    }

    /// Tells the run's driver, if it is here, to apply what another replica journaled.
    fn wake_driver(&self, wakeup: &Wakeup) {
        if let Some(handle) = self.actor(&wakeup.tenant, &wakeup.run_id) {
            // A full mailbox means a busy driver: its next commit meets the conflict anyway.
            let _ = handle.tx.try_send(Msg::Sync);
        }
    }

    /// Replicas: renews every lease each `renew_every` (after a failed renewal, again after
    /// [`RENEW_RETRY`], so leases are renewed as soon as the store is back). A renewal sent at `sent` that returns
    /// a driver's lease moves its local deadline to `sent + ttl - ttl/10`; a driver whose lease
    /// is missing from the answer was taken over and loses it at once. A renewal that fails
    /// changes nothing: each driver's watchdog ends it at its deadline.
    pub(crate) async fn renew_loop(self) {
        let Some(replica) = self.replica() else {
            return;
        };
        let (leases, config) = (replica.leases.clone(), replica.config.clone());
        let shutdown = self.shared.shutdown.clone();
        let clock = self.shared.clock.clone();
        // Leases held in the store with no driver here, seen at the previous renewal.
        let mut orphans: Vec<Lease> = Vec::new();
        let mut pause = config.renew_every;
        loop {
            tokio::select! {
                () = clock.sleep(pause) => {}
                () = shutdown.cancelled() => return,
            }
            let sent = clock.monotonic();
            let held = match leases.renew(&config.owner, config.lease_ttl).await {
                Ok(held) => {
                    pause = config.renew_every;
                    held
                }
                Err(e) => {
                    tracing::warn!(error = %e, "replica: renewing leases failed");
                    pause = RENEW_RETRY.min(config.renew_every);
                    continue;
                }
            };
            let deadline = local_deadline(sent, config.lease_ttl);
            let tokens: BTreeMap<(String, String), u64> = held
                .iter()
                .map(|l| ((l.tenant.clone(), l.run_id.clone()), l.fencing_token))
                .collect();
            replica.claims.renewed(&tokens, deadline);
            let now = clock.monotonic();
            for (key, handle) in self.registry.handles() {
                let Some(lease) = &handle.lease else { continue };
                if tokens.get(&key) == Some(&lease.fencing_token) {
                    handle.deadline.extend_to(deadline);
                    if now >= handle.deadline.get() {
                        lose(
                            &self.registry,
                            &handle.loser(&key),
                            "its renewal was answered after the lease's local deadline",
                        );
                    }
                } else if handle.claimed_at < sent {
                    lose(
                        &self.registry,
                        &handle.loser(&key),
                        "the renewal did not return it (taken over or expired)",
                    );
                }
            }
            orphans = self.release_orphans(held, &orphans).await;
        }
    }

    /// Leases the store says this replica holds but nothing here uses (a driver that stopped
    /// on an error without releasing): renewing them would keep their runs from every replica.
    /// One still orphaned one renewal later is handed off, so the run is claimed and recovered.
    /// A claim in flight or answered but not adopted yet is not an orphan: while any claim is
    /// in flight nothing is (its answer may hold any of them). Returns the orphans seen now.
    async fn release_orphans(&self, held: Vec<Lease>, before: &[Lease]) -> Vec<Lease> {
        let Some(replica) = self.replica() else {
            return Vec::new();
        };
        if replica.claims.in_flight() {
            return Vec::new();
        }
        let mut now = Vec::new();
        for lease in held {
            let driven = self.actor(&lease.tenant, &lease.run_id).is_some_and(|h| {
                h.lease.as_ref().map(|l| l.fencing_token) == Some(lease.fencing_token)
            });
            if driven || replica.claims.is_pending(&lease) {
                continue;
            }
            let seen = before.iter().any(|b| {
                b.tenant == lease.tenant
                    && b.run_id == lease.run_id
                    && b.fencing_token == lease.fencing_token
            });
            if seen {
                tracing::warn!(run_id = %lease.run_id, "replica: a lease without a driver is handed off");
                let _ = replica.leases.release(&lease, Release::Handoff).await;
            } else {
                now.push(lease);
            }
        }
        now
    }

    /// The leases this replica believes it holds now: those its drivers run under and the
    /// claims not adopted yet, whose local deadline has not passed.
    pub(crate) fn believed_leases(&self) -> Vec<Lease> {
        let Some(replica) = self.replica() else {
            return Vec::new();
        };
        let now = self.shared.clock.monotonic();
        let mut leases: Vec<Lease> = self
            .registry
            .handles()
            .into_iter()
            .filter(|(_, h)| !h.kill.is_cancelled() && now < h.deadline.get())
            .filter_map(|(_, h)| h.lease)
            .collect();
        leases.extend(replica.claims.believed(now));
        leases
    }

    /// A claim answered for `lease`, to be adopted or refused now: refused (`None`, the lease
    /// given back if it is still ours) when its local deadline passed before its driver could
    /// start — another replica may already have claimed the run.
    async fn fresh(&self, replica: &Replica, claim: Claimed) -> Option<Claimed> {
        let taken = replica.claims.take(&claim.lease).unwrap_or(claim);
        if self.shared.clock.monotonic() < taken.deadline {
            return Some(taken);
        }
        tracing::warn!(
            tenant = %taken.lease.tenant,
            run_id = %taken.lease.run_id,
            fencing_token = taken.lease.fencing_token,
            "replica: a claim answered after its lease's local deadline is not adopted"
        );
        let _ = replica.leases.release(&taken.lease, Release::Handoff).await;
        None
    }

    /// Starts driving a run just claimed (a driver left over from an older lease of it here is
    /// stopped first). A new run gets `Started`, any other `Recovered`: attempts its previous
    /// holder was running are recorded as interrupted and retried (SPEC §6.2).
    async fn adopt(&self, claim: Claimed) -> Result<(), RuntimeError> {
        let Some(replica) = self.replica() else {
            return Ok(());
        };
        let _guard = self.registry.hydrate_lock().await;
        let lease = claim.lease.clone();
        let key = (lease.tenant.clone(), lease.run_id.clone());
        if let Some(old) = self.actor(&lease.tenant, &lease.run_id) {
            if old.lease.as_ref().map(|l| l.fencing_token) == Some(lease.fencing_token) {
                // The same lease (renewed by our own `claim_run`): that driver carries on.
                replica.claims.take(&lease);
                return Ok(());
            }
            lose(
                &self.registry,
                &old.loser(&key),
                "this replica claimed the run again with a newer lease",
            );
        }
        let (run, journal) = match self.shared.load(&lease.tenant, &lease.run_id).await {
            Ok(loaded) => loaded,
            Err(e) => {
                // Parked: not claimed over and over; a decision or a due timer tries again.
                replica.claims.take(&lease);
                let _ = replica.leases.release(&lease, Release::Park).await;
                return Err(e);
            }
        };
        if run.is_terminal() {
            replica.claims.take(&lease);
            let _ = replica.leases.release(&lease, Release::Park).await;
            return Ok(());
        }
        let first = if journal.next_seq() == 1 {
            Event::Started
        } else {
            Event::Recovered
        };
        let Some(claim) = self.fresh(replica, claim).await else {
            return Ok(());
        };
        metrics::counter!("taskrunner_runs_claimed_total").increment(1);
        self.spawn_actor(run, journal, Some(claim), Some(first))?;
        Ok(())
    }

    /// Replicas: the run's driver, started here if this replica can claim the run (see
    /// [`Runtime::hydrate`]).
    pub(crate) async fn hydrate_replica(
        &self,
        replica: &Replica,
        tenant: &str,
        run_id: &str,
        wait_for_park: bool,
    ) -> Result<Hydrated, RuntimeError> {
        let clock = &self.shared.clock;
        let deadline = clock.monotonic() + PARK_WAIT;
        loop {
            {
                let guard = self.registry.hydrate_lock_owned().await;
                if let Some(handle) = self.actor(tenant, run_id) {
                    return Ok(Hydrated::Active(handle, None));
                }
                let claimed = match self.claim_one(replica, tenant, run_id).await {
                    Err(StoreError::NotFound) => {
                        return Err(RuntimeError::NotFound(format!("run {run_id}")));
                    }
                    other => other?,
                };
                if let Some(claim) = claimed {
                    let lease = claim.lease.clone();
                    let (run, journal) = match self.shared.load(tenant, run_id).await {
                        Ok(loaded) => loaded,
                        Err(e) => {
                            replica.claims.take(&lease);
                            let _ = replica.leases.release(&lease, Release::Park).await;
                            return Err(e);
                        }
                    };
                    if run.is_terminal() {
                        replica.claims.take(&lease);
                        let _ = replica.leases.release(&lease, Release::Park).await;
                        return Ok(Hydrated::Terminal(Box::new(run)));
                    }
                    let Some(claim) = self.fresh(replica, claim).await else {
                        return Ok(Hydrated::Elsewhere);
                    };
                    // Its last holder may have died with attempts running. The caller sends
                    // its message before the lock is released: the driver cannot retire
                    // in between.
                    let handle =
                        self.spawn_actor(run, journal, Some(claim), Some(Event::Recovered))?;
                    return Ok(Hydrated::Active(handle, Some(guard)));
                }
                let record = self
                    .shared
                    .stores
                    .runs
                    .get_run(tenant, run_id)
                    .await?
                    .ok_or_else(|| RuntimeError::NotFound(format!("run {run_id}")))?;
                if !taskrunner_store::status::is_active(&record.status) {
                    let (run, _) = self.shared.load(tenant, run_id).await?;
                    return Ok(Hydrated::Terminal(Box::new(run)));
                }
                if !wait_for_park
                    || record.status != RunStatus::AwaitingApproval.as_str()
                    || clock.monotonic() >= deadline
                {
                    return Ok(Hydrated::Elsewhere);
                }
            }
            clock.sleep(PARK_POLL).await;
        }
    }

    /// Replicas: claims a run just created and starts its driver (the caller holds the hydrate
    /// lock, so our claimer cannot start a second driver for it in between). Not claimed (full,
    /// taken by another replica first, or the claim failed): it is stored, so whoever holds or
    /// next claims it drives it.
    pub(crate) async fn drive_new_run(
        &self,
        replica: &Replica,
        run: Run,
        journal: Journal,
    ) -> Result<(), RuntimeError> {
        let config = &replica.config;
        let (tenant, run_id) = (run.state().tenant.clone(), run.state().run_id.clone());
        if self.actor(&tenant, &run_id).is_some() {
            return Ok(()); // our claimer took it already
        }
        if self.drivers() >= config.max_drivers {
            // Full: the run waits `Pending` until this or another replica has room.
            return Ok(());
        }
        let claim = match self.claim_one(replica, &tenant, &run_id).await {
            Ok(Some(claim)) => claim,
            // Another replica's claimer took it first (or the claim failed): it is
            // stored, so whoever holds or next claims it drives it.
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "replica: claiming a new run failed");
                return Ok(());
            }
        };
        // A token above 1: the run was claimed (and maybe started and parked) by our claimer
        // before this claim; drive it from what is stored, never from a fresh state.
        if claim.lease.fencing_token > 1 {
            let (run, journal) = match self.shared.load(&tenant, &run_id).await {
                Ok(loaded) => loaded,
                Err(e) => {
                    replica.claims.take(&claim.lease);
                    return Err(e);
                }
            };
            let first = if journal.next_seq() == 1 {
                Event::Started
            } else {
                Event::Recovered
            };
            let Some(claim) = self.fresh(replica, claim).await else {
                return Ok(());
            };
            self.spawn_actor(run, journal, Some(claim), Some(first))?;
            return Ok(());
        }
        let Some(claim) = self.fresh(replica, claim).await else {
            return Ok(());
        };
        self.spawn_actor(run, journal, Some(claim), Some(Event::Started))?;
        Ok(())
    }

    /// Claims one run (`claim_run`) as a pending claim (see [`Claims`]).
    pub(crate) async fn claim_one(
        &self,
        replica: &Replica,
        tenant: &str,
        run_id: &str,
    ) -> Result<Option<Claimed>, StoreError> {
        let config = &replica.config;
        let ticket = replica
            .claims
            .begin(self.shared.clock.monotonic(), config.lease_ttl);
        let claimed = replica
            .leases
            .claim_run(&config.owner, tenant, run_id, config.lease_ttl)
            .await?;
        Ok(ticket.answered(claimed.as_slice()).into_iter().next())
    }
}
