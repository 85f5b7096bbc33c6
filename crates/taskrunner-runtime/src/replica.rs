//! The replica protocol (SPEC rule 29): how a runtime that shares its store with other
//! processes claims runs (the claimer), renews and gives up their leases (the renewer, orphan
//! hand-off), takes over a run just claimed, and journals decisions and cancellations for runs
//! another replica drives. The settings ([`ReplicaConfig`]) live here too.
//!
//! A replica drives only the runs whose lease it holds: a claimer takes claimable runs (at
//! least every second and on wake-ups), a renewer extends the leases every few seconds and
//! stops at once any driver whose lease was lost, and every write of a driver is fenced with
//! its lease (see [`crate::writer::RunWriter`]). A driver releases its run when it parks at a
//! gate or ends (`Park`) and on graceful shutdown (`Handoff`). A decision or a cancellation for
//! a run another replica drives is journaled here with optimistic concurrency (the store wakes
//! the holder, which applies it and performs what follows).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use taskrunner_engine::{Command, Event, Journal, Run, RunInfo, RunStatus, Timestamp};
use taskrunner_store::{
    CLAIM_LIMIT_MAX, LEASE_TTL_MAX, Lease, LeaseStore, NewLog, Release, StoreError, Transition,
    Wakeup, check_owner,
};

use crate::actor::Msg;
use crate::api::{DecisionOutcome, DecisionRequest};
use crate::decision::{check_grants, decision_error, decision_on_terminal};
use crate::error::RuntimeError;
use crate::output::{capture_outputs, splice_before_end};
use crate::records::{to_entry, to_new_log};
use crate::registry::ActorHandle;
use crate::runtime::{Hydrated, Runtime};
use crate::writer::RunWriter;

/// Longest renewal interval (rule 29: a lease is renewed at least every 3 s).
pub const RENEW_EVERY_MAX: Duration = Duration::from_secs(3);
/// Pause before renewing again after a renewal failed (the database away): the leases are
/// renewed as soon as it is back, not a whole renewal interval later, when they may have
/// expired on the server meanwhile.
pub(crate) const RENEW_RETRY: Duration = Duration::from_millis(250);
/// Longest claim interval (an expired lease is taken over within 2 s, rule 29).
pub const CLAIM_EVERY_MAX: Duration = Duration::from_secs(1);

/// How a runtime drives runs as one of several replicas on one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// Lease owner id, unique per process (see [`ReplicaConfig::unique_owner`]); reusing one
    /// after a restart would let the new process renew the old one's leases.
    pub owner: String,
    /// Lease time-to-live, 1 ms..=10 s.
    pub lease_ttl: Duration,
    /// Renewal interval: at most 3 s and at most half the TTL.
    pub renew_every: Duration,
    /// How often claimable runs are looked for (besides wake-ups), at most 1 s.
    pub claim_every: Duration,
    /// Most runs taken by one claim, 1..=1000.
    pub claim_batch: usize,
    /// Most runs driven at once (runs parked at a gate do not count), 1..=100,000. Beyond it
    /// new runs wait in the store, `Pending`, until a driver ends here or another replica has
    /// room: every held lease is renewed every `renew_every`, so holding fewer keeps renewals
    /// cheap and shares the work between replicas.
    pub max_drivers: usize,
}

/// Largest `max_drivers`.
pub const MAX_DRIVERS_MAX: usize = 100_000;

/// Attempts to journal a decision or cancellation for a run another replica drives while that
/// replica keeps appending (optimistic concurrency).
pub(crate) const FOREIGN_TRIES: usize = 8;
/// How long a decision waits for the replica holding a run at a gate to park it (then this
/// replica drives the run), before journaling the decision for that replica instead.
const PARK_WAIT: Duration = Duration::from_secs(2);
/// Pause between looks while waiting for a run to be parked.
const PARK_POLL: Duration = Duration::from_millis(10);

/// A replica's lease port and settings.
pub(crate) struct Replica {
    pub(crate) leases: Arc<dyn LeaseStore>,
    pub(crate) config: ReplicaConfig,
}

impl ReplicaConfig {
    /// The rule-29 defaults: 10 s leases renewed every 3 s, claims every second, 64 at a time.
    pub fn new(owner: impl Into<String>) -> ReplicaConfig {
        ReplicaConfig {
            owner: owner.into(),
            lease_ttl: LEASE_TTL_MAX,
            renew_every: RENEW_EVERY_MAX,
            claim_every: CLAIM_EVERY_MAX,
            claim_batch: 64,
            max_drivers: 256,
        }
    }

    /// An owner id unique to this call: `<name>/<pid>/<random>-<n>` (the name is cut to 64
    /// characters and anything but ASCII letters, digits, `.`, `_` and `-` dropped; `<random>`
    /// is 64 bits from the OS's random source, so a restarted process that gets the same pid
    /// still differs; `<n>` counts the calls in this process). No clock is read.
    pub fn unique_owner(name: &str) -> String {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .take(64)
            .collect();
        // Randomly keyed by the standard library (seeded from the OS once per thread).
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let n = CALLS.fetch_add(1, Ordering::Relaxed);
        let name = if name.is_empty() { "taskrunner" } else { &name };
        format!("{name}/{}/{random:016x}-{n}", std::process::id())
    }

    /// Refuses settings that break rule 29 or the store's limits, naming the field.
    pub fn check(&self) -> Result<(), RuntimeError> {
        let bad = |what: String| Err(RuntimeError::BadRequest(what));
        check_owner(&self.owner).map_err(|e| RuntimeError::BadRequest(e.to_string()))?;
        if self.lease_ttl.is_zero() || self.lease_ttl > LEASE_TTL_MAX {
            return bad(format!(
                "lease_ttl {:?} must be between 1 ms and {LEASE_TTL_MAX:?}",
                self.lease_ttl
            ));
        }
        if self.renew_every.is_zero()
            || self.renew_every > RENEW_EVERY_MAX
            || self.renew_every > self.lease_ttl / 2
        {
            return bad(format!(
                "renew_every {:?} must be more than 0, at most {RENEW_EVERY_MAX:?} and at most \
                 half of lease_ttl {:?}",
                self.renew_every, self.lease_ttl
            ));
        }
        if self.claim_every.is_zero() || self.claim_every > CLAIM_EVERY_MAX {
            return bad(format!(
                "claim_every {:?} must be more than 0 and at most {CLAIM_EVERY_MAX:?}",
                self.claim_every
            ));
        }
        if self.claim_batch == 0 || self.claim_batch > CLAIM_LIMIT_MAX {
            return bad(format!(
                "claim_batch {} must be 1 to {CLAIM_LIMIT_MAX}",
                self.claim_batch
            ));
        }
        if self.max_drivers == 0 || self.max_drivers > MAX_DRIVERS_MAX {
            return bad(format!(
                "max_drivers {} must be 1 to {MAX_DRIVERS_MAX}",
                self.max_drivers
            ));
        }
        Ok(())
    }
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
                let claimed = match leases.claim(&config.owner, limit, config.lease_ttl).await {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        tracing::warn!(error = %e, "replica: claiming runs failed");
                        break;
                    }
                };
                let full = claimed.len() >= limit;
                for lease in claimed {
                    if let Err(e) = self.adopt(lease).await {
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
    /// [`RENEW_RETRY`]); a driver whose lease is missing from the answer was taken over and is
    /// stopped at once. When renewing keeps failing for longer than a lease lasts (less one
    /// renewal interval), every driver is stopped (another replica may take the runs over).
    pub(crate) async fn renew_loop(self) {
        let Some(replica) = self.replica() else {
            return;
        };
        let (leases, config) = (replica.leases.clone(), replica.config.clone());
        let shutdown = self.shared.shutdown.clone();
        let mut last_ok = self.shared.clock.monotonic();
        // Leases held in the store with no driver here, seen at the previous renewal.
        let mut orphans: Vec<Lease> = Vec::new();
        let mut pause = config.renew_every;
        loop {
            tokio::select! {
                () = self.shared.clock.sleep(pause) => {}
                () = shutdown.cancelled() => return,
            }
            let started = self.shared.clock.monotonic();
            let held = match leases.renew(&config.owner, config.lease_ttl).await {
                Ok(held) => {
                    last_ok = started;
                    pause = config.renew_every;
                    orphans = self.release_orphans(held.clone(), &orphans).await;
                    Some(
                        held.into_iter()
                            .map(|l| ((l.tenant, l.run_id), l.fencing_token))
                            .collect::<BTreeMap<_, _>>(),
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, "replica: renewing leases failed");
                    pause = RENEW_RETRY.min(config.renew_every);
                    None
                }
            };
            let expired = started.saturating_sub(last_ok) + config.renew_every >= config.lease_ttl;
            let actors: Vec<((String, String), ActorHandle)> = self.registry.handles();
            for (key, handle) in actors {
                let Some(lease) = &handle.lease else { continue };
                let lost = match &held {
                    Some(held) => {
                        handle.claimed_at < started && held.get(&key) != Some(&lease.fencing_token)
                    }
                    None => expired,
                };
                if lost {
                    tracing::warn!(tenant = %key.0, run_id = %key.1, "replica: lease lost, driver stopped");
                    metrics::counter!("taskrunner_leases_lost_total").increment(1);
                    handle.stop.cancel();
                }
            }
        }
    }

    /// Leases the store says this replica holds but no driver here uses (a driver that
    /// stopped on an error without releasing): renewing them would keep their runs from every
    /// replica. One still orphaned one renewal later (a claim being adopted is not) is handed
    /// off, so the run is claimed and recovered. Returns the orphans seen now.
    async fn release_orphans(&self, held: Vec<Lease>, before: &[Lease]) -> Vec<Lease> {
        let Some(replica) = self.replica() else {
            return Vec::new();
        };
        let mut now = Vec::new();
        for lease in held {
            let driven = self.actor(&lease.tenant, &lease.run_id).is_some_and(|h| {
                h.lease.as_ref().map(|l| l.fencing_token) == Some(lease.fencing_token)
            });
            if driven {
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

    /// Starts driving a run just claimed (a driver left over from an older lease of it here is
    /// stopped first). A new run gets `Started`, any other `Recovered`: attempts its previous
    /// holder was running are recorded as interrupted and retried (SPEC §6.2).
    async fn adopt(&self, lease: Lease) -> Result<(), RuntimeError> {
        let Some(replica) = self.replica() else {
            return Ok(());
        };
        let _guard = self.registry.hydrate_lock().await;
        if let Some(old) = self.actor(&lease.tenant, &lease.run_id) {
            if old.lease.as_ref().map(|l| l.fencing_token) == Some(lease.fencing_token) {
                // The same lease (renewed by our own `claim_run`): that driver carries on.
                return Ok(());
            }
            old.stop.cancel();
            self.registry
                .remove(&(lease.tenant.clone(), lease.run_id.clone()), old.id);
        }
        let (run, journal) = match self.shared.load(&lease.tenant, &lease.run_id).await {
            Ok(loaded) => loaded,
            Err(e) => {
                // Parked: not claimed over and over; a decision or a due timer tries again.
                let _ = replica.leases.release(&lease, Release::Park).await;
                return Err(e);
            }
        };
        if run.is_terminal() {
            let _ = replica.leases.release(&lease, Release::Park).await;
            return Ok(());
        }
        let first = if journal.next_seq() == 1 {
            Event::Started
        } else {
            Event::Recovered
        };
        metrics::counter!("taskrunner_runs_claimed_total").increment(1);
        self.spawn_actor(run, journal, Some(lease), Some(first))?;
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
        let config = &replica.config;
        let clock = &self.shared.clock;
        let deadline = clock.monotonic() + PARK_WAIT;
        loop {
            {
                let guard = self.registry.hydrate_lock_owned().await;
                if let Some(handle) = self.actor(tenant, run_id) {
                    return Ok(Hydrated::Active(handle, None));
                }
                let claimed = match replica
                    .leases
                    .claim_run(&config.owner, tenant, run_id, config.lease_ttl)
                    .await
                {
                    Err(StoreError::NotFound) => {
                        return Err(RuntimeError::NotFound(format!("run {run_id}")));
                    }
                    other => other?,
                };
                if let Some(lease) = claimed {
                    let (run, journal) = match self.shared.load(tenant, run_id).await {
                        Ok(loaded) => loaded,
                        Err(e) => {
                            let _ = replica.leases.release(&lease, Release::Park).await;
                            return Err(e);
                        }
                    };
                    if run.is_terminal() {
                        let _ = replica.leases.release(&lease, Release::Park).await;
                        return Ok(Hydrated::Terminal(Box::new(run)));
                    }
                    // Its last holder may have died with attempts running. The caller sends
                    // its message before the lock is released: the driver cannot retire
                    // in between.
                    let handle =
                        self.spawn_actor(run, journal, Some(lease), Some(Event::Recovered))?;
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
        let lease = match replica
            .leases
            .claim_run(&config.owner, &tenant, &run_id, config.lease_ttl)
            .await
        {
            Ok(Some(lease)) => lease,
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
        if lease.fencing_token > 1 {
            let (run, journal) = self.shared.load(&tenant, &run_id).await?;
            let first = if journal.next_seq() == 1 {
                Event::Started
            } else {
                Event::Recovered
            };
            self.spawn_actor(run, journal, Some(lease), Some(first))?;
            return Ok(());
        }
        self.spawn_actor(run, journal, Some(lease), Some(Event::Started))?;
        Ok(())
    }

    /// A decision on a run another replica drives: journaled here on top of the stored state
    /// with optimistic concurrency (retried on a conflict); the store wakes the holder, which
    /// applies it and starts what follows. Rule 16 checks and answers are the driver's.
    pub(crate) async fn decide_elsewhere(
        &self,
        tenant: &str,
        run_id: &str,
        approval_id: &str,
        request: DecisionRequest,
    ) -> Result<DecisionOutcome, RuntimeError> {
        for _ in 0..FOREIGN_TRIES {
            let (mut run, mut journal) = self.shared.load_existing(tenant, run_id).await?;
            if run.is_terminal() {
                return decision_on_terminal(&run, approval_id, &request);
            }
            let check = run.check_decision(
                approval_id,
                request.decision,
                &request.actor,
                &request.plan_hash,
            );
            check_grants(&run, approval_id, &check, request.caller_scopes.as_ref())?;
            let check = check.map_err(decision_error)?;
            let outcome = DecisionOutcome {
                status: request.decision,
                resumed: check.resume,
            };
            if check.already_applied {
                return Ok(outcome);
            }
            let event = Event::ApprovalDecided {
                approval_id: approval_id.to_owned(),
                decision: request.decision,
                actor: request.actor.clone(),
                summary: request.summary.clone(),
                plan_hash: request.plan_hash.clone(),
            };
            match self.commit_elsewhere(&mut run, &mut journal, event).await {
                Ok(()) => return Ok(outcome),
                Err(RuntimeError::Store(StoreError::Conflict { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RuntimeError::Internal(format!(
            "run {run_id} kept changing while its decision was journaled"
        )))
    }

    /// A cancellation of a run another replica drives (see [`Runtime::decide_elsewhere`]).
    pub(crate) async fn cancel_elsewhere(
        &self,
        tenant: &str,
        run_id: &str,
        actor: Option<String>,
    ) -> Result<RunStatus, RuntimeError> {
        for _ in 0..FOREIGN_TRIES {
            let (mut run, mut journal) = self.shared.load_existing(tenant, run_id).await?;
            match run.status() {
                RunStatus::Cancelled => return Ok(RunStatus::Cancelled),
                s if s.is_terminal() => {
                    return Err(RuntimeError::RunTerminal(s.as_str().to_owned()));
                }
                _ => {}
            }
            let event = Event::CancelRequested {
                actor: actor.clone(),
            };
            match self.commit_elsewhere(&mut run, &mut journal, event).await {
                Ok(()) => return Ok(run.status()),
                Err(RuntimeError::Store(StoreError::Conflict { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RuntimeError::Internal(format!(
            "run {run_id} kept changing while its cancellation was journaled"
        )))
    }

    /// Folds `event` into a run loaded from the store and commits it unfenced with the loaded
    /// journal length expected (`Conflict` when the run moved on). Commands are left to the
    /// holder, which the store wakes; outputs of a run this ends are captured here.
    async fn commit_elsewhere(
        &self,
        run: &mut Run,
        journal: &mut Journal,
        event: Event,
    ) -> Result<(), RuntimeError> {
        let secrets = self.shared.resolve_secrets(run.plan()).secrets;
        let last = run.state().updated_at;
        let at = Timestamp(self.shared.clock.now().millis().max(last.millis()));
        let commands = run.apply(at, &event, &secrets);
        let record = journal.append(at, event.masked(&secrets));
        let mut logs: Vec<NewLog> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Log(entry) => Some(to_new_log(entry)),
                _ => None,
            })
            .collect();
        let info = RunInfo {
            run_id: run.state().run_id.clone(),
            tenant: run.state().tenant.clone(),
        };
        // Unfenced: this replica does not hold the run's lease; the expected journal length
        // guards the write instead.
        let writer = RunWriter::plain(&self.shared.stores, &info.tenant, &info.run_id);
        if let Some(outputs) = commands.iter().find_map(|c| match c {
            Command::Finished { outputs, .. } => Some(outputs.clone()),
            _ => None,
        }) {
            let workspace = self.shared.workspace_of(&info);
            let failures = capture_outputs(
                &self.shared,
                &writer,
                &info.tenant,
                &info.run_id,
                &workspace,
                outputs,
                &secrets,
            )
            .await;
            splice_before_end(&mut logs, failures);
        }
        let transition = Transition {
            tenant: info.tenant.clone(),
            run_id: info.run_id.clone(),
            expected_journal_len: record.seq - 1,
            journal: vec![to_entry(&record)?],
            logs,
            status: Some(run.status().as_str().to_owned()),
            updated_at_ms: at.millis(),
            next_wake_at_ms: Some(run.next_wake().map(Timestamp::millis)),
            snapshot: None,
        };
        writer.commit(transition).await?;
        metrics::counter!("taskrunner_foreign_commits_total").increment(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_rule_29_and_limits_are_named() {
        let config = ReplicaConfig::new("replica-a");
        assert_eq!(config.check().ok(), Some(()));
        let too_long = ReplicaConfig {
            lease_ttl: Duration::from_secs(11),
            ..config.clone()
        };
        assert!(
            too_long
                .check()
                .unwrap_err()
                .to_string()
                .contains("lease_ttl")
        );
        let slow_renew = ReplicaConfig {
            lease_ttl: Duration::from_secs(4),
            renew_every: Duration::from_secs(3),
            ..config.clone()
        };
        assert!(
            slow_renew
                .check()
                .unwrap_err()
                .to_string()
                .contains("renew_every")
        );
        let slow_claim = ReplicaConfig {
            claim_every: Duration::from_secs(2),
            ..config.clone()
        };
        assert!(
            slow_claim
                .check()
                .unwrap_err()
                .to_string()
                .contains("claim_every")
        );
        let no_batch = ReplicaConfig {
            claim_batch: 0,
            ..config.clone()
        };
        assert!(
            no_batch
                .check()
                .unwrap_err()
                .to_string()
                .contains("claim_batch")
        );
        let no_drivers = ReplicaConfig {
            max_drivers: 0,
            ..config.clone()
        };
        assert!(
            no_drivers
                .check()
                .unwrap_err()
                .to_string()
                .contains("max_drivers")
        );
        let bad_owner = ReplicaConfig::new("a b");
        assert!(bad_owner.check().is_err());
    }

    #[test]
    fn unique_owners_are_valid_and_differ() {
        let a = ReplicaConfig::unique_owner("host one!");
        let b = ReplicaConfig::unique_owner("host one!");
        assert!(a.starts_with("hostone/"), "{a}");
        assert_ne!(a, b);
        assert!(check_owner(&a).is_ok());
        assert!(ReplicaConfig::unique_owner("").starts_with("taskrunner/"));
    }
}
