//! The driver (SPEC §5, §6.2): one task per active run feeds events to the pure engine,
//! **persists every transition before acting on it**, then performs the engine's commands —
//! starting executor attempts, cancelling them, arming timers, capturing outputs.
//!
//! Calling contract: every state change goes through a run's actor, so events for one run are
//! applied in order; the journal record, the log entries and the new status of a transition are
//! committed in one store transaction (the SQLite adapter batches concurrent commits into one
//! fsync). On start, every active run is replayed from its journal (verified against the plan
//! hash) and receives `Recovered`: attempts that were running are failed as `interrupted` and
//! retried under their policy; timers are re-armed.
//!
//! As a replica ([`RuntimeConfig::replica`], SPEC rule 29) a runtime drives only the runs whose
//! lease it holds: a claimer takes claimable runs (at least every second and on wake-ups), a
//! renewer extends the leases every few seconds and stops at once any driver whose lease was
//! lost, and every write of a driver is fenced with its lease. A driver releases its run when
//! it parks at a gate or ends (`Park`) and on graceful shutdown (`Handoff`). A decision or a
//! cancellation for a run another replica drives is journaled here with optimistic concurrency
//! (the store wakes the holder, which applies it and performs what follows).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};

use serde_json::{Map, Value};
use taskrunner_engine::{
    AttemptOutcome, Command, Decision, Event, Journal, JournalRecord, LogEntry, OutputResult, Run,
    RunInfo, RunStatus, RunView, Secrets, Timestamp,
};
use taskrunner_exec::{
    ExecOutcome, ExecRequest, ExecutorRegistry, NetworkMode, OutputLine, OutputStream, SandboxSpec,
};
use taskrunner_manifest::{Diagnostic, Diagnostics, Manifest, Step, StepKind};
use taskrunner_plan::{Plan, PlanError};
use taskrunner_store::{
    ArtifactRecord, BlobSource, JournalEntry, Lease, LeaseStore, ListQuery, LogRecord, NewLog,
    NewRun, Page, Release, RunRecord, Store, StoreError, Transition, Wakeup,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::error::RuntimeError;
use crate::ports::{Clock, SecretProvider};
use crate::replica::ReplicaConfig;

/// Codes of run-creation errors (SPEC §5.1), reported like plan errors.
pub mod codes {
    /// A `uses` names an executor this host does not have.
    pub const UNKNOWN_EXECUTOR: &str = "TR-R0001";
    /// A required secret cannot be supplied by the host.
    pub const MISSING_SECRET: &str = "TR-R0002";
    /// A secret value is shorter than 4 bytes (it could not be masked safely).
    pub const SECRET_TOO_SHORT: &str = "TR-R0003";
}

/// Shortest secret value accepted (SPEC §8 rule 19).
pub const SECRET_BYTES_MIN: usize = taskrunner_engine::SECRET_BYTES_MIN;
/// Most run states of runs out of memory kept by `get_run` (the cache starts over when full).
const VIEW_CACHE_MAX: usize = 4096;
/// Capacity of a run's mailbox.
const MAILBOX_CAPACITY: usize = 256;
/// Capacity of an attempt's output line channel (back-pressure on the process beyond it).
const OUTPUT_LINES_CAPACITY: usize = 256;
/// Output lines written to the store in one append at most.
const OUTPUT_BATCH_MAX: usize = 128;
/// How often runs parked out of memory are checked for due timers (approval expiry).
const WAKE_POLL: Duration = Duration::from_millis(500);
/// Attempts to hand a message to a run's driver while it retires concurrently.
const DELIVERY_TRIES: usize = 3;
/// Attempts to journal a decision or cancellation for a run another replica drives while that
/// replica keeps appending (optimistic concurrency).
const FOREIGN_TRIES: usize = 8;
/// How long a decision waits for the replica holding a run at a gate to park it (then this
/// replica drives the run), before journaling the decision for that replica instead.
const PARK_WAIT: Duration = Duration::from_secs(2);
/// Pause between looks while waiting for a run to be parked.
const PARK_POLL: Duration = Duration::from_millis(10);
/// How long graceful shutdown waits for drivers to hand their runs off.
const HANDOFF_WAIT: Duration = Duration::from_secs(5);

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Each run gets `workspace_root/<tenant>/<run_id>/` as its private workspace.
    pub workspace_root: PathBuf,
    /// Capacity of a run's live log broadcast (a slower follower skips ahead and re-reads the store).
    pub log_broadcast_capacity: usize,
    /// Drive runs under leases, as one of several replicas sharing the store (SPEC rule 29).
    /// `None`: this process owns every run of the store (one replica, today's behaviour).
    /// Needs a store with a lease port ([`Store::leases`]).
    pub replica: Option<ReplicaConfig>,
}

impl RuntimeConfig {
    /// Workspaces under `workspace_root`, default capacities.
    pub fn new(workspace_root: impl Into<PathBuf>) -> RuntimeConfig {
        RuntimeConfig {
            workspace_root: workspace_root.into(),
            log_broadcast_capacity: 64,
            replica: None,
        }
    }

    /// The same, as a replica with these lease settings.
    pub fn with_replica(mut self, replica: ReplicaConfig) -> RuntimeConfig {
        self.replica = Some(replica);
        self
    }
}

/// A request to create a run (SPEC §5.1).
#[derive(Debug, Clone, Default)]
pub struct CreateRun {
    pub tenant: String,
    /// Generated when absent (unique, sortable, `^[a-zA-Z0-9_-]+$`).
    pub run_id: Option<String>,
    /// The manifest text.
    pub manifest: String,
    pub inputs: Map<String, Value>,
}

/// A decision on an approval (SPEC §5.4).
#[derive(Debug, Clone)]
pub struct DecisionRequest {
    pub decision: Decision,
    pub plan_hash: String,
    pub actor: String,
    pub summary: Option<String>,
    /// The caller's scopes, checked against the approval's `grants` (SPEC §1.3, rule 16: after
    /// 404, before the plan hash). `None` = unrestricted (`none` mode, the CLI).
    pub caller_scopes: Option<BTreeSet<String>>,
}

/// The answer to a decision: `{status, resumed}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionOutcome {
    pub status: Decision,
    pub resumed: bool,
}

/// What a run looks like right now, as published by its actor.
#[derive(Debug, Clone)]
pub struct RunSnapshot {
    pub view: RunView,
    /// Attempts currently executing.
    pub running_attempts: usize,
    /// A timer is armed (retry backoff, approval expiry).
    pub next_wake: Option<Timestamp>,
    /// The driver has not yet processed an event since the run was (re)loaded: the state may
    /// be stale (a due expiry not yet applied), so it is never taken as settled.
    pub fresh: bool,
}

impl RunSnapshot {
    /// Nothing can progress without a decision (or a far timer such as an approval expiry):
    /// the run waits at a gate with no attempt running and no retry pending.
    pub fn is_parked(&self) -> bool {
        !self.fresh
            && self.view.status == RunStatus::AwaitingApproval
            && self.running_attempts == 0
            && !self
                .view
                .steps
                .iter()
                .any(|s| s.status_reason.as_deref() == Some("retry-scheduled"))
    }
}

enum Msg {
    Event(Event),
    Decide {
        approval_id: String,
        request: DecisionRequest,
        reply: oneshot::Sender<Result<DecisionOutcome, RuntimeError>>,
    },
    Cancel {
        actor: Option<String>,
        reply: oneshot::Sender<Result<RunStatus, RuntimeError>>,
    },
    /// Another replica journaled something for this run: apply it and perform what follows.
    Sync,
}

enum Hydrated {
    /// The driver; with the hydrate lock when it was just started as a replica, so that it
    /// cannot retire before the caller's message is in its mailbox.
    Active(ActorHandle, Option<tokio::sync::OwnedMutexGuard<()>>),
    Terminal(Box<Run>),
    /// Another replica holds the run's live lease.
    Elsewhere,
}

#[derive(Clone)]
struct ActorHandle {
    /// Tells this driver from a later one of the same run.
    id: u64,
    tx: mpsc::Sender<Msg>,
    logs: broadcast::Sender<LogRecord>,
    snapshot: watch::Receiver<RunSnapshot>,
    /// Stops the driver at once (its lease was lost): attempts killed, nothing more written.
    stop: CancellationToken,
    /// The lease it drives under (replicas only).
    lease: Option<Lease>,
    /// When that lease was taken.
    claimed_at: Instant,
}

/// A replica's lease port and settings.
struct Replica {
    leases: Arc<dyn LeaseStore>,
    config: ReplicaConfig,
}

struct Inner {
    stores: Store,
    executors: ExecutorRegistry,
    clock: Arc<dyn Clock>,
    secrets: Arc<dyn SecretProvider>,
    config: RuntimeConfig,
    actors: Mutex<BTreeMap<(String, String), ActorHandle>>,
    /// States of runs out of memory (parked or finished), each with the journal length it was
    /// folded from: valid while the stored length is the same (a change always grows it).
    views: Mutex<BTreeMap<(String, String), (u64, RunView)>>,
    /// Serialises bringing a run into memory and retiring it, so one run never has two drivers.
    hydrate: Arc<tokio::sync::Mutex<()>>,
    shutdown: CancellationToken,
    id_counter: AtomicU64,
    /// Set when the runtime is a replica.
    replica: Option<Replica>,
    /// Ids of drivers.
    actor_ids: AtomicU64,
    /// Driver tasks still running (graceful shutdown waits for their hand-offs).
    live_actors: Arc<AtomicUsize>,
    /// Woken when a driver ends: a replica may have room to claim more runs.
    driver_ended: Arc<tokio::sync::Notify>,
}

/// The embedding API: build it from stores, executors, a clock and a secret provider; it is a
/// cheap handle (clone it freely).
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("workspace_root", &self.inner.config.workspace_root)
            .finish()
    }
}

impl Runtime {
    /// Builds the runtime and recovers every active run from its journal; as a replica
    /// ([`RuntimeConfig::replica`]) it starts claiming runs instead. `BadRequest` when the
    /// replica settings are invalid or the store has no lease port.
    pub async fn start(
        stores: Store,
        executors: ExecutorRegistry,
        clock: Arc<dyn Clock>,
        secrets: Arc<dyn SecretProvider>,
        config: RuntimeConfig,
    ) -> Result<Runtime, RuntimeError> {
        let replica = match &config.replica {
            None => None,
            Some(replica) => {
                replica.check()?;
                let leases = stores.leases.clone().ok_or_else(|| {
                    RuntimeError::BadRequest(
                        "a replica needs a store with a lease port (Store::leases)".into(),
                    )
                })?;
                Some(Replica {
                    leases,
                    config: replica.clone(),
                })
            }
        };
        let is_replica = replica.is_some();
        let runtime = Runtime {
            inner: Arc::new(Inner {
                stores,
                executors,
                clock,
                secrets,
                config,
                actors: Mutex::new(BTreeMap::new()),
                views: Mutex::new(BTreeMap::new()),
                hydrate: Arc::new(tokio::sync::Mutex::new(())),
                shutdown: CancellationToken::new(),
                id_counter: AtomicU64::new(0),
                replica,
                actor_ids: AtomicU64::new(0),
                live_actors: Arc::new(AtomicUsize::new(0)),
                driver_ended: Arc::new(tokio::sync::Notify::new()),
            }),
        };
        if is_replica {
            tokio::spawn(runtime.clone().claim_loop());
            tokio::spawn(runtime.clone().renew_loop());
            return Ok(runtime);
        }
        for (tenant, run_id) in runtime.inner.stores.runs.active_runs().await? {
            let (run, journal) = runtime.load(&tenant, &run_id).await?;
            let first = if journal.next_seq() == 1 {
                Event::Started
            } else {
                Event::Recovered
            };
            let handle = runtime.spawn_actor(run, journal, None)?;
            let _ = handle.tx.send(Msg::Event(first)).await;
        }
        tokio::spawn(runtime.clone().wake_due_runs());
        Ok(runtime)
    }

    /// The replica's lease port and settings, when it is one.
    fn replica(&self) -> Option<&Replica> {
        self.inner.replica.as_ref()
    }

    /// Replicas: takes claimable runs at least every `claim_every` and at once on wake-ups; a
    /// wake-up for a run driven here makes its driver apply what another replica journaled.
    async fn claim_loop(self) {
        let Some(replica) = self.replica() else {
            return;
        };
        let (leases, config) = (replica.leases.clone(), replica.config.clone());
        let shutdown = self.inner.shutdown.clone();
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
                () = tokio::time::sleep(config.claim_every) => None,
                w = wakeups.next() => w,
                () = self.inner.driver_ended.notified() => {
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
        self.inner
            .actors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Tells the run's driver, if it is here, to apply what another replica journaled.
    fn wake_driver(&self, wakeup: &Wakeup) {
        if let Some(handle) = self.actor(&wakeup.tenant, &wakeup.run_id) {
            // A full mailbox means a busy driver: its next commit meets the conflict anyway.
            let _ = handle.tx.try_send(Msg::Sync);
        }
    }

    /// Replicas: renews every lease each `renew_every`; a driver whose lease is missing from
    /// the answer was taken over and is stopped at once. When renewing keeps failing for longer
    /// than a lease lasts, every driver is stopped (another replica may take the runs over).
    async fn renew_loop(self) {
        let Some(replica) = self.replica() else {
            return;
        };
        let (leases, config) = (replica.leases.clone(), replica.config.clone());
        let shutdown = self.inner.shutdown.clone();
        let mut last_ok = Instant::now();
        // Leases held in the store with no driver here, seen at the previous renewal.
        let mut orphans: Vec<Lease> = Vec::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep(config.renew_every) => {}
                () = shutdown.cancelled() => return,
            }
            let started = Instant::now();
            let held = match leases.renew(&config.owner, config.lease_ttl).await {
                Ok(held) => {
                    last_ok = started;
                    orphans = self.release_orphans(held.clone(), &orphans).await;
                    Some(
                        held.into_iter()
                            .map(|l| ((l.tenant, l.run_id), l.fencing_token))
                            .collect::<BTreeMap<_, _>>(),
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, "replica: renewing leases failed");
                    None
                }
            };
            let expired = started.duration_since(last_ok) + config.renew_every >= config.lease_ttl;
            let actors: Vec<((String, String), ActorHandle)> = self
                .inner
                .actors
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|(k, h)| (k.clone(), h.clone()))
                .collect();
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
        let _guard = self.inner.hydrate.lock().await;
        if let Some(old) = self.actor(&lease.tenant, &lease.run_id) {
            if old.lease.as_ref().map(|l| l.fencing_token) == Some(lease.fencing_token) {
                // The same lease (renewed by our own `claim_run`): that driver carries on.
                return Ok(());
            }
            old.stop.cancel();
            self.remove_actor(&lease.tenant, &lease.run_id, old.id);
        }
        let (run, journal) = match self.load(&lease.tenant, &lease.run_id).await {
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
        let handle = self.spawn_actor(run, journal, Some(lease))?;
        let _ = handle.tx.send(Msg::Event(first)).await;
        Ok(())
    }

    /// Stops every driver, kills their attempts, hands their runs off (replicas: `Handoff`,
    /// claimable at once by another replica) and waits up to 5 s for that to finish.
    pub async fn shutdown_gracefully(&self) {
        self.inner.shutdown.cancel();
        let deadline = Instant::now() + HANDOFF_WAIT;
        while self.inner.live_actors.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs that are not in memory (parked at a gate) but have a timer due — an approval
    /// expiry — are brought back and ticked. Active runs keep their own precise timers.
    async fn wake_due_runs(self) {
        let shutdown = self.inner.shutdown.clone();
        loop {
            tokio::select! {
                () = tokio::time::sleep(WAKE_POLL) => {}
                () = shutdown.cancelled() => return,
            }
            let now = self.inner.clock.now().millis();
            let Ok(due) = self.inner.stores.runs.due_runs(now).await else {
                continue;
            };
            for (tenant, run_id, _) in due {
                if self.actor(&tenant, &run_id).is_some() {
                    continue;
                }
                if let Ok(Hydrated::Active(handle, _)) = self.hydrate(&tenant, &run_id, false).await
                {
                    let _ = handle.tx.send(Msg::Event(Event::Tick)).await;
                }
            }
        }
    }

    /// The run's driver, started from the store if the run is not in memory. A replica first
    /// claims the run; when another replica holds its live lease the answer is `Elsewhere`
    /// (with `wait_for_park`, only after waiting up to [`PARK_WAIT`] for that replica to park
    /// the run at its gate, so that the decision is applied by whoever then drives it).
    async fn hydrate(
        &self,
        tenant: &str,
        run_id: &str,
        wait_for_park: bool,
    ) -> Result<Hydrated, RuntimeError> {
        if let Some(handle) = self.actor(tenant, run_id) {
            return Ok(Hydrated::Active(handle, None));
        }
        let Some(replica) = self.replica() else {
            let _guard = self.inner.hydrate.lock().await;
            if let Some(handle) = self.actor(tenant, run_id) {
                return Ok(Hydrated::Active(handle, None));
            }
            let (run, journal) = self.load_existing(tenant, run_id).await?;
            if run.is_terminal() {
                return Ok(Hydrated::Terminal(Box::new(run)));
            }
            return Ok(Hydrated::Active(
                self.spawn_actor(run, journal, None)?,
                None,
            ));
        };
        let config = &replica.config;
        let deadline = Instant::now() + PARK_WAIT;
        loop {
            {
                let guard = self.inner.hydrate.clone().lock_owned().await;
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
                    let (run, journal) = match self.load(tenant, run_id).await {
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
                    let handle = self.spawn_actor(run, journal, Some(lease))?;
                    // Its last holder may have died with attempts running. The caller sends
                    // its message before the lock is released: the driver cannot retire
                    // in between.
                    let _ = handle.tx.send(Msg::Event(Event::Recovered)).await;
                    return Ok(Hydrated::Active(handle, Some(guard)));
                }
                let record = self
                    .inner
                    .stores
                    .runs
                    .get_run(tenant, run_id)
                    .await?
                    .ok_or_else(|| RuntimeError::NotFound(format!("run {run_id}")))?;
                if !taskrunner_store::status::is_active(&record.status) {
                    let (run, _) = self.load(tenant, run_id).await?;
                    return Ok(Hydrated::Terminal(Box::new(run)));
                }
                if !wait_for_park
                    || record.status != RunStatus::AwaitingApproval.as_str()
                    || Instant::now() >= deadline
                {
                    return Ok(Hydrated::Elsewhere);
                }
            }
            tokio::time::sleep(PARK_POLL).await;
        }
    }

    /// The executors this runtime has.
    pub fn executors(&self) -> &ExecutorRegistry {
        &self.inner.executors
    }

    /// Plans and stores a run, then starts it (SPEC §5.1).
    pub async fn create_run(&self, request: CreateRun) -> Result<RunView, RuntimeError> {
        check_tenant(&request.tenant)?;
        if let Some(id) = &request.run_id {
            check_run_id(id)?;
        }
        let manifest = taskrunner_manifest::parse(&request.manifest)
            .map_err(|d| RuntimeError::Plan(PlanError(d)))?;
        let plan = taskrunner_plan::plan(&manifest, &request.inputs).map_err(RuntimeError::Plan)?;
        let mut problems = Diagnostics::default();
        self.check_executors(&manifest, &mut problems);
        let secrets = self.resolve_secrets(&manifest, &mut problems);
        if !problems.is_empty() {
            return Err(RuntimeError::Plan(PlanError(problems)));
        }
        if let Some(max) = plan.slo().max_queue_depth {
            let queued = self
                .inner
                .stores
                .runs
                .queued_count(&request.tenant, &plan.pack().name)
                .await?;
            metrics::gauge!("taskrunner_queue_depth", "pack" => plan.pack().name.clone())
                .set(queued as f64);
            if queued >= max {
                metrics::counter!("taskrunner_queue_full_total").increment(1);
                return Err(RuntimeError::QueueFull(queued));
            }
        }
        let run_id = match request.run_id {
            Some(id) => id,
            None => self.generate_run_id(),
        };
        let now = self.inner.clock.now();
        let plan = Arc::new(plan);
        let info = RunInfo {
            run_id: run_id.clone(),
            tenant: request.tenant.clone(),
        };
        let created = LogEntry {
            timestamp: now,
            level: taskrunner_engine::Level::Info,
            event_type: "run.created".into(),
            message: "Run created.".into(),
            step_id: None,
            metadata: [
                ("planHash".to_owned(), plan.hash().to_owned()),
                ("requestedAt".to_owned(), now.to_rfc3339()),
            ]
            .into_iter()
            .collect(),
        };
        let artifacts = plan
            .outputs()
            .iter()
            .map(|o| ArtifactRecord {
                name: o.name().to_owned(),
                kind: match o {
                    taskrunner_plan::PlanOutput::File { .. } => "file".into(),
                    _ => "object".into(),
                },
                source_path: None,
                stored_path: None,
                status: "pending".into(),
                notes: None,
                captured_at_ms: None,
                expression_json: None,
                sha256: None,
                size_bytes: None,
            })
            .collect();
        let new_run = NewRun {
            tenant: request.tenant.clone(),
            run_id: run_id.clone(),
            pack_name: plan.pack().name.clone(),
            pack_version: plan.pack().version.clone(),
            plan_hash: plan.hash().to_owned(),
            plan_json: plan.canonical_json().to_owned(),
            created_at_ms: now.millis(),
            status: RunStatus::Pending.as_str().to_owned(),
            host_digest: None,
            journal: Vec::new(),
            logs: vec![to_new_log(&created)],
            artifacts,
        };
        match self.inner.stores.runs.create_run(new_run).await {
            Ok(()) => metrics::counter!("taskrunner_runs_created_total").increment(1),
            Err(StoreError::RunExists) => return Err(RuntimeError::RunExists(run_id)),
            Err(e) => return Err(e.into()),
        }
        let _ = secrets; // resolved again by the actor: secret values are never kept around
        let run = Run::new(plan.clone(), info, now);
        let view = run.view();
        let journal = Journal::new(plan.hash());
        // Replicas claim the new run; the hydrate lock keeps our claimer from starting a second
        // driver for it in between.
        let _guard = self.inner.hydrate.lock().await;
        let lease = match self.replica() {
            None => None,
            Some(replica) => {
                let config = &replica.config;
                if self.actor(&request.tenant, &run_id).is_some() {
                    return Ok(view); // our claimer took it already
                }
                if self.drivers() >= config.max_drivers {
                    // Full: the run waits `Pending` until this or another replica has room.
                    return Ok(view);
                }
                match replica
                    .leases
                    .claim_run(&config.owner, &request.tenant, &run_id, config.lease_ttl)
                    .await
                {
                    Ok(Some(lease)) => Some(lease),
                    // Another replica's claimer took it first (or the claim failed): it is
                    // stored, so whoever holds or next claims it drives it.
                    Ok(None) => return Ok(view),
                    Err(e) => {
                        tracing::warn!(error = %e, "replica: claiming a new run failed");
                        return Ok(view);
                    }
                }
            }
        };
        // A token above 1: the run was claimed (and maybe started and parked) by our claimer
        // before this claim; drive it from what is stored, never from a fresh state.
        if let Some(lease) = lease.clone().filter(|l| l.fencing_token > 1) {
            let (run, journal) = self.load(&request.tenant, &run_id).await?;
            let first = if journal.next_seq() == 1 {
                Event::Started
            } else {
                Event::Recovered
            };
            let handle = self.spawn_actor(run, journal, Some(lease))?;
            let _ = handle.tx.send(Msg::Event(first)).await;
            return Ok(view);
        }
        let handle = self.spawn_actor(run, journal, lease)?;
        let _ = handle.tx.send(Msg::Event(Event::Started)).await;
        Ok(view)
    }

    /// The run's state, or `None` when the tenant has no such run.
    pub async fn get_run(
        &self,
        tenant: &str,
        run_id: &str,
    ) -> Result<Option<RunView>, RuntimeError> {
        if let Some(handle) = self.actor(tenant, run_id) {
            return Ok(Some(handle.snapshot.borrow().view.clone()));
        }
        let Some(record) = self.inner.stores.runs.get_run(tenant, run_id).await? else {
            return Ok(None);
        };
        let key = (tenant.to_owned(), run_id.to_owned());
        if let Some((_, view)) = self
            .views()
            .get(&key)
            .filter(|(len, _)| *len == record.journal_len)
        {
            return Ok(Some(view.clone()));
        }
        // Folding the journal (plan decode, hash chain, replay) is the expensive part; a run
        // out of memory changes only through a new journal record, so its fold is kept.
        let view = self.load(tenant, run_id).await?.0.view();
        let mut views = self.views();
        if views.len() >= VIEW_CACHE_MAX {
            views.clear();
        }
        views.insert(key, (record.journal_len, view.clone()));
        Ok(Some(view))
    }

    fn views(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), (u64, RunView)>> {
        self.inner
            .views
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Watches a run's published state (active runs only).
    pub fn watch(&self, tenant: &str, run_id: &str) -> Option<watch::Receiver<RunSnapshot>> {
        self.actor(tenant, run_id).map(|h| h.snapshot)
    }

    /// Waits until the run is terminal or parked at a gate; returns its state.
    pub async fn wait_settled(&self, tenant: &str, run_id: &str) -> Result<RunView, RuntimeError> {
        if let Some(mut rx) = self.watch(tenant, run_id) {
            loop {
                let last = {
                    let snap = rx.borrow_and_update();
                    if snap.is_parked() {
                        return Ok(snap.view.clone());
                    }
                    // A terminal run may still be capturing outputs: wait for its driver to retire.
                    snap.view.status.is_terminal().then(|| snap.view.clone())
                };
                if rx.changed().await.is_err() {
                    // The driver retired; its last published state is final when terminal.
                    match last {
                        Some(view) => return Ok(view),
                        None => break,
                    }
                }
            }
        }
        self.get_run(tenant, run_id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound(format!("run {run_id}")))
    }

    /// Log entries after `after` (SPEC §5.8).
    pub async fn logs(
        &self,
        tenant: &str,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, RuntimeError> {
        match self
            .inner
            .stores
            .logs
            .logs(tenant, run_id, after, limit)
            .await
        {
            Err(StoreError::NotFound) => Err(RuntimeError::NotFound(format!("run {run_id}"))),
            other => Ok(other?),
        }
    }

    /// The stored record of a run (status, pack, times) without replaying its journal, or
    /// `None` when the tenant has no such run.
    pub async fn run_record(
        &self,
        tenant: &str,
        run_id: &str,
    ) -> Result<Option<RunRecord>, RuntimeError> {
        Ok(self.inner.stores.runs.get_run(tenant, run_id).await?)
    }

    /// A page of the tenant's runs, newest first (cursor paging, see `RunStore::list_runs`).
    /// A malformed cursor or a zero limit is `BadRequest`.
    pub async fn list_runs(&self, tenant: &str, query: ListQuery) -> Result<Page, RuntimeError> {
        check_tenant(tenant)?;
        match self.inner.stores.runs.list_runs(tenant, query).await {
            Err(StoreError::Invalid(why)) => Err(RuntimeError::BadRequest(why)),
            other => Ok(other?),
        }
    }

    /// The run's artifacts in declared order (SPEC §5.6).
    pub async fn artifacts(
        &self,
        tenant: &str,
        run_id: &str,
    ) -> Result<Vec<ArtifactRecord>, RuntimeError> {
        match self
            .inner
            .stores
            .artifacts
            .list_artifacts(tenant, run_id)
            .await
        {
            Err(StoreError::NotFound) => Err(RuntimeError::NotFound(format!("run {run_id}"))),
            other => Ok(other?),
        }
    }

    /// Live log entries of an active run, as they are written (`None` once it retired).
    pub fn subscribe_logs(
        &self,
        tenant: &str,
        run_id: &str,
    ) -> Option<broadcast::Receiver<LogRecord>> {
        self.actor(tenant, run_id).map(|h| h.logs.subscribe())
    }

    /// Applies an approval decision (SPEC §5.4, rule 16 order after auth). A run parked at a
    /// gate is brought back into memory to take it.
    pub async fn decide(
        &self,
        tenant: &str,
        run_id: &str,
        approval_id: &str,
        request: DecisionRequest,
    ) -> Result<DecisionOutcome, RuntimeError> {
        for _ in 0..DELIVERY_TRIES {
            let (handle, guard) = match self.hydrate(tenant, run_id, true).await? {
                Hydrated::Active(handle, guard) => (handle, guard),
                // Terminal: let the engine say which answer or error applies.
                Hydrated::Terminal(run) => {
                    return decision_on_terminal(&run, approval_id, &request);
                }
                Hydrated::Elsewhere => {
                    return self
                        .decide_elsewhere(tenant, run_id, approval_id, request)
                        .await;
                }
            };
            let (reply, answer) = oneshot::channel();
            let msg = Msg::Decide {
                approval_id: approval_id.to_owned(),
                request: request.clone(),
                reply,
            };
            let sent = handle.tx.send(msg).await;
            drop(guard);
            if sent.is_err() {
                continue; // the driver retired in between: bring the run back and try again
            }
            match answer.await {
                // The driver lost the run's lease meanwhile: look again (another replica).
                Ok(Err(RuntimeError::Store(StoreError::StaleFencingToken { .. }))) => continue,
                Ok(result) => return result,
                Err(_) => {}
            }
        }
        Err(RuntimeError::Internal("the run's driver stopped".into()))
    }

    /// Cancels a run (SPEC §5.7). Already `Cancelled` answers again; `Succeeded`/`Failed` is
    /// `RunTerminal`.
    pub async fn cancel(
        &self,
        tenant: &str,
        run_id: &str,
        actor: Option<String>,
    ) -> Result<RunStatus, RuntimeError> {
        for _ in 0..DELIVERY_TRIES {
            let (handle, guard) = match self.hydrate(tenant, run_id, false).await? {
                Hydrated::Active(handle, guard) => (handle, guard),
                Hydrated::Terminal(run) => {
                    return match run.status() {
                        RunStatus::Cancelled => Ok(RunStatus::Cancelled),
                        other => Err(RuntimeError::RunTerminal(other.as_str().to_owned())),
                    };
                }
                Hydrated::Elsewhere => return self.cancel_elsewhere(tenant, run_id, actor).await,
            };
            let (reply, answer) = oneshot::channel();
            let sent = handle
                .tx
                .send(Msg::Cancel {
                    actor: actor.clone(),
                    reply,
                })
                .await;
            drop(guard);
            if sent.is_err() {
                continue;
            }
            match answer.await {
                // The driver lost the run's lease meanwhile: look again (another replica).
                Ok(Err(RuntimeError::Store(StoreError::StaleFencingToken { .. }))) => continue,
                Ok(result) => return result,
                Err(_) => {}
            }
        }
        Err(RuntimeError::Internal("the run's driver stopped".into()))
    }

    /// A decision on a run another replica drives: journaled here on top of the stored state
    /// with optimistic concurrency (retried on a conflict); the store wakes the holder, which
    /// applies it and starts what follows. Rule 16 checks and answers are the driver's.
    async fn decide_elsewhere(
        &self,
        tenant: &str,
        run_id: &str,
        approval_id: &str,
        request: DecisionRequest,
    ) -> Result<DecisionOutcome, RuntimeError> {
        for _ in 0..FOREIGN_TRIES {
            let (mut run, mut journal) = self.load_existing(tenant, run_id).await?;
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
    async fn cancel_elsewhere(
        &self,
        tenant: &str,
        run_id: &str,
        actor: Option<String>,
    ) -> Result<RunStatus, RuntimeError> {
        for _ in 0..FOREIGN_TRIES {
            let (mut run, mut journal) = self.load_existing(tenant, run_id).await?;
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
        let (secrets, _) = self.secret_values(run.plan());
        let last = run.state().updated_at;
        let at = Timestamp(self.inner.clock.now().millis().max(last.millis()));
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
        if let Some(outputs) = commands.iter().find_map(|c| match c {
            Command::Finished { outputs, .. } => Some(outputs.clone()),
            _ => None,
        }) {
            let workspace = self.workspace_of(&info);
            let failures = capture_outputs(self, &info, &workspace, None, outputs, &secrets).await;
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
        self.inner.stores.runs.commit(transition).await?;
        metrics::counter!("taskrunner_foreign_commits_total").increment(1);
        Ok(())
    }

    /// Stops every driver without touching run state: runs stay recoverable (running
    /// attempts are killed and will be retried as `interrupted` after a restart; a replica's
    /// drivers hand their runs off, see [`Runtime::shutdown_gracefully`]).
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Removes a driver from the registry unless a later one of the same run replaced it.
    fn remove_actor(&self, tenant: &str, run_id: &str, id: u64) {
        let mut actors = self
            .inner
            .actors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (tenant.to_owned(), run_id.to_owned());
        if actors.get(&key).is_some_and(|h| h.id == id) {
            actors.remove(&key);
        }
        metrics::gauge!("taskrunner_runs_in_memory").set(actors.len() as f64);
    }

    /// `workspace_root/<tenant>/<run_id>`, absolute.
    fn workspace_of(&self, info: &RunInfo) -> PathBuf {
        // Absolute, so `$TASKRUNNER_WORKSPACE` means the same thing from any directory.
        let root = &self.inner.config.workspace_root;
        let root = std::path::absolute(root).unwrap_or_else(|_| root.clone());
        root.join(&info.tenant).join(&info.run_id)
    }

    fn actor(&self, tenant: &str, run_id: &str) -> Option<ActorHandle> {
        let actors = self
            .inner
            .actors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        actors.get(&(tenant.to_owned(), run_id.to_owned())).cloned()
    }

    fn generate_run_id(&self) -> String {
        let now = self.inner.clock.now().millis();
        let n = self.inner.id_counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "run-{now:013}-{:05}-{:04x}",
            std::process::id() % 100_000,
            n & 0xffff
        )
    }

    async fn load_existing(
        &self,
        tenant: &str,
        run_id: &str,
    ) -> Result<(Run, Journal), RuntimeError> {
        if self
            .inner
            .stores
            .runs
            .get_run(tenant, run_id)
            .await?
            .is_none()
        {
            return Err(RuntimeError::NotFound(format!("run {run_id}")));
        }
        self.load(tenant, run_id).await
    }

    /// Reads a run back: the frozen plan (checked against its hash) and the journal (verified
    /// and folded into the state).
    async fn load(&self, tenant: &str, run_id: &str) -> Result<(Run, Journal), RuntimeError> {
        let corrupt = |message: String| RuntimeError::Corrupt {
            run_id: run_id.to_owned(),
            message,
        };
        let record = self
            .inner
            .stores
            .runs
            .get_run(tenant, run_id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound(format!("run {run_id}")))?;
        let plan = Plan::from_canonical_json(&record.plan_json, Some(&record.plan_hash))
            .map_err(|e| corrupt(e.to_string()))?;
        let entries = self
            .inner
            .stores
            .runs
            .load_journal(tenant, run_id, 0)
            .await?;
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
        let (secrets, _) = self.secret_values(&plan);
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

    fn check_executors(&self, manifest: &Manifest, problems: &mut Diagnostics) {
        fn walk(
            steps: &[Step],
            path: &str,
            registry: &ExecutorRegistry,
            problems: &mut Diagnostics,
        ) {
            for (i, step) in steps.iter().enumerate() {
                visit(step, &format!("{path}[{i}]"), registry, problems);
            }
        }
        fn visit(step: &Step, at: &str, registry: &ExecutorRegistry, problems: &mut Diagnostics) {
            match &step.kind {
                StepKind::Run(run) => {
                    if !registry.contains(&run.uses) {
                        let known: Vec<&str> = registry.names().collect();
                        problems.push(Diagnostic {
                            code: codes::UNKNOWN_EXECUTOR,
                            path: format!("{at}.run.uses"),
                            message: format!(
                                "executor '{}' is not available on this host, expected one of: {}",
                                run.uses,
                                known.join(", ")
                            ),
                            line: None,
                            column: None,
                        });
                    }
                }
                StepKind::GateApproval(_) => {}
                StepKind::GatePolicy(gate) => {
                    walk(
                        &gate.on_failure,
                        &format!("{at}.gate.policy.onFailure"),
                        registry,
                        problems,
                    );
                }
                StepKind::Parallel(p) => walk(
                    &p.steps,
                    &format!("{at}.parallel.steps"),
                    registry,
                    problems,
                ),
                // `map.step` is one step, not a list.
                StepKind::Map(m) => visit(&m.step, &format!("{at}.map.step"), registry, problems),
                StepKind::Loop(l) => {
                    walk(&l.steps, &format!("{at}.loop.steps"), registry, problems)
                }
                StepKind::Conditional(c) => {
                    for (b, branch) in c.branches.iter().enumerate() {
                        walk(
                            &branch.steps,
                            &format!("{at}.conditional.branches[{b}].steps"),
                            registry,
                            problems,
                        );
                    }
                    walk(
                        &c.else_steps,
                        &format!("{at}.conditional.else"),
                        registry,
                        problems,
                    );
                }
            }
        }
        walk(
            manifest.steps(),
            "spec.steps",
            &self.inner.executors,
            problems,
        );
    }

    fn resolve_secrets(&self, manifest: &Manifest, problems: &mut Diagnostics) -> Secrets {
        let mut secrets = Secrets::new();
        for (i, def) in manifest.secrets().iter().enumerate() {
            match self.inner.secrets.secret(&def.name) {
                Some(value) if value.len() < SECRET_BYTES_MIN => problems.push(Diagnostic {
                    code: codes::SECRET_TOO_SHORT,
                    path: format!("spec.secrets[{i}].name"),
                    message: format!(
                        "secret '{}' is shorter than {SECRET_BYTES_MIN} bytes and could not be masked safely",
                        def.name
                    ),
                    line: None,
                    column: None,
                }),
                Some(value) => secrets.insert(def.name.clone(), value),
                None if def.required => problems.push(Diagnostic {
                    code: codes::MISSING_SECRET,
                    path: format!("spec.secrets[{i}].name"),
                    message: format!("required secret '{}' is not available on this host", def.name),
                    line: None,
                    column: None,
                }),
                None => {}
            }
        }
        secrets
    }

    /// Required secrets of a stored run that this host cannot supply (now, or shorter than
    /// [`SECRET_BYTES_MIN`]): a run resumed on another host or after a configuration change
    /// would otherwise fail at the step that uses them.
    pub async fn missing_secrets(
        &self,
        tenant: &str,
        run_id: &str,
    ) -> Result<Vec<String>, RuntimeError> {
        let record = self
            .inner
            .stores
            .runs
            .get_run(tenant, run_id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound(format!("run {run_id}")))?;
        let plan =
            Plan::from_canonical_json(&record.plan_json, Some(&record.plan_hash)).map_err(|e| {
                RuntimeError::Corrupt {
                    run_id: run_id.to_owned(),
                    message: e.to_string(),
                }
            })?;
        Ok(plan
            .secrets()
            .iter()
            .filter(|s| s.required)
            .filter(|s| {
                self.inner
                    .secrets
                    .secret(&s.name)
                    .is_none_or(|v| v.len() < SECRET_BYTES_MIN)
            })
            .map(|s| s.name.clone())
            .collect())
    }

    /// The secret values a plan names, from the provider (never stored).
    fn secret_values(&self, plan: &Plan) -> (Secrets, Vec<String>) {
        let mut secrets = Secrets::new();
        let mut values = Vec::new();
        for s in plan.secrets() {
            if let Some(value) = self.inner.secrets.secret(&s.name)
                && value.len() >= SECRET_BYTES_MIN
            {
                secrets.insert(s.name.clone(), value.clone());
                values.push(value);
            }
        }
        (secrets, values)
    }

    fn spawn_actor(
        &self,
        run: Run,
        journal: Journal,
        lease: Option<Lease>,
    ) -> Result<ActorHandle, RuntimeError> {
        let info = RunInfo {
            run_id: run.state().run_id.clone(),
            tenant: run.state().tenant.clone(),
        };
        let workspace = self.workspace_of(&info);
        std::fs::create_dir_all(&workspace).map_err(|e| {
            RuntimeError::Internal(format!(
                "cannot create workspace {}: {e}",
                workspace.display()
            ))
        })?;
        let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
        let (logs, _) = broadcast::channel(self.inner.config.log_broadcast_capacity.max(16));
        let (secrets, secret_values) = self.secret_values(run.plan());
        let snapshot = RunSnapshot {
            view: run.view(),
            running_attempts: 0,
            next_wake: run.next_wake(),
            fresh: true,
        };
        let (snap_tx, snap_rx) = watch::channel(snapshot);
        let id = self.inner.actor_ids.fetch_add(1, Ordering::Relaxed);
        let stop = self.inner.shutdown.child_token();
        let handle = ActorHandle {
            id,
            tx: tx.clone(),
            logs: logs.clone(),
            snapshot: snap_rx,
            stop: stop.clone(),
            lease: lease.clone(),
            claimed_at: Instant::now(),
        };
        {
            let mut actors = self
                .inner
                .actors
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            actors.insert((info.tenant.clone(), info.run_id.clone()), handle.clone());
            metrics::gauge!("taskrunner_runs_in_memory").set(actors.len() as f64);
        }
        let actor = Actor {
            id,
            stop,
            lease,
            claimed_at: handle.claimed_at,
            superseded: false,
            runtime: self.clone(),
            run,
            journal,
            secrets,
            secret_values,
            workspace,
            tx,
            logs,
            snapshot: snap_tx,
            running: BTreeMap::new(),
            timer: None,
            finished: false,
        };
        tracing::debug!(
            tenant = %info.tenant,
            run_id = %info.run_id,
            driver = id,
            fencing_token = ?handle.lease.as_ref().map(|l| l.fencing_token),
            journal_len = handle.snapshot.borrow().view.steps.len(),
            "driver started"
        );
        self.inner.live_actors.fetch_add(1, Ordering::SeqCst);
        let live = LiveActor(
            self.inner.live_actors.clone(),
            self.inner.driver_ended.clone(),
        );
        tokio::spawn(async move {
            let _live = live;
            actor.run(rx).await;
        });
        Ok(handle)
    }
}

/// Counts a driver task while it lives; its end wakes the claimer.
struct LiveActor(Arc<AtomicUsize>, Arc<tokio::sync::Notify>);

impl Drop for LiveActor {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        self.1.notify_one();
    }
}

/// Why a driver ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The runtime shuts down (its lease handed off).
    Shutdown,
    /// Its lease was lost (stopped by the renewer, or a fenced write was refused).
    LeaseLost,
    /// A storage failure: its memory may be ahead of the store (lease handed off).
    Failed,
}

/// One run's driver.
struct Actor {
    /// Its id in the registry.
    id: u64,
    /// Cancelled when its lease is lost (or the runtime shuts down).
    stop: CancellationToken,
    /// The lease it drives under (replicas only); every write carries it.
    lease: Option<Lease>,
    claimed_at: Instant,
    /// Another driver of the run wrote records this one did not (see [`Actor::sync`]).
    superseded: bool,
    runtime: Runtime,
    run: Run,
    journal: Journal,
    secrets: Secrets,
    /// The same values, for executors to mask output lines with.
    secret_values: Vec<String>,
    workspace: PathBuf,
    tx: mpsc::Sender<Msg>,
    logs: broadcast::Sender<LogRecord>,
    snapshot: watch::Sender<RunSnapshot>,
    running: BTreeMap<(String, u32), CancellationToken>,
    timer: Option<tokio::task::JoinHandle<()>>,
    finished: bool,
}

impl Actor {
    fn info(&self) -> RunInfo {
        RunInfo {
            run_id: self.run.state().run_id.clone(),
            tenant: self.run.state().tenant.clone(),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let shutdown = self.runtime.inner.shutdown.clone();
        if let Some(at) = self.run.next_wake() {
            self.arm(at);
        }
        let end = loop {
            let msg = tokio::select! {
                biased;
                () = self.stop.cancelled() => None,
                msg = rx.recv() => msg,
            };
            let Some(msg) = msg else {
                break if shutdown.is_cancelled() || self.lease.is_none() {
                    End::Shutdown
                } else {
                    End::LeaseLost
                };
            };
            if let Err(e) = self.process(msg).await {
                // The in-memory state may be ahead of the store: stop this driver; the run is
                // recovered from its journal when it is next needed.
                tracing::error!(error = %e, run_id = %self.run.state().run_id, "run driver stopped");
                break self.end_after(&e);
            }
            // Retiring may process messages that raced in; they can make the run retirable
            // again (a decision that ends it), so check until it is not.
            while self.retirable() && !self.stop.is_cancelled() {
                match self.retire(rx).await {
                    Some(next) => rx = next,
                    None => return,
                }
            }
        };
        self.unregister();
        self.give_up(end).await;
    }

    /// How a driver that failed with `e` ends: a refused fenced write or another driver's
    /// records mean the run is driven elsewhere (nothing released).
    fn end_after(&self, e: &RuntimeError) -> End {
        if self.superseded || matches!(e, RuntimeError::Store(StoreError::StaleFencingToken { .. }))
        {
            End::LeaseLost
        } else {
            End::Failed
        }
    }

    /// Releases the lease as `end` asks: nothing when it was lost, `Handoff` when the run still
    /// needs a driver now (shutdown, failure).
    async fn give_up(&mut self, end: End) {
        let (Some(replica), Some(lease)) = (self.runtime.replica(), &self.lease) else {
            return;
        };
        let mode = match end {
            End::LeaseLost => return,
            End::Shutdown | End::Failed => Release::Handoff,
        };
        if let Err(e) = replica.leases.release(lease, mode).await {
            tracing::debug!(error = %e, run_id = %lease.run_id, "replica: release failed");
        }
    }

    /// Replicas, when the run parks: releases the lease (`Park`), then looks once more for
    /// records another replica journaled meanwhile (a decision that raced the release). If
    /// there are some and the run can be claimed back, returns `true`: the driver carries on
    /// and applies them.
    async fn release_parked(&mut self) -> bool {
        let Some(replica) = self.runtime.replica() else {
            return false;
        };
        let Some(lease) = self.lease.clone() else {
            return false;
        };
        if let Err(e) = replica.leases.release(&lease, Release::Park).await {
            tracing::debug!(error = %e, run_id = %lease.run_id, "replica: release failed");
            return false;
        }
        if self.finished {
            return false;
        }
        let have = self.journal.next_seq() - 1;
        let newer = self
            .runtime
            .inner
            .stores
            .runs
            .load_journal(&lease.tenant, &lease.run_id, have)
            .await
            .is_ok_and(|entries| !entries.is_empty());
        if !newer {
            return false;
        }
        let config = &replica.config;
        match replica
            .leases
            .claim_run(
                &config.owner,
                &lease.tenant,
                &lease.run_id,
                config.lease_ttl,
            )
            .await
        {
            Ok(Some(lease)) => {
                self.lease = Some(lease);
                self.claimed_at = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Finished, or parked at a gate with nothing running and no retry pending: the run needs
    /// no memory until a decision (or a due timer, found by the store query) brings it back.
    fn retirable(&self) -> bool {
        self.running.is_empty() && (self.finished || self.snapshot.borrow().is_parked())
    }

    /// Leaves memory. Messages that raced in are still processed: then the driver carries on
    /// under a fresh mailbox (returned).
    async fn retire(&mut self, mut rx: mpsc::Receiver<Msg>) -> Option<mpsc::Receiver<Msg>> {
        let runtime = self.runtime.clone();
        let guard = runtime.inner.hydrate.lock().await;
        self.unregister();
        rx.close();
        let mut pending = Vec::new();
        while let Some(msg) = rx.recv().await {
            pending.push(msg);
        }
        if pending.is_empty() {
            if !self.release_parked().await {
                return None;
            }
            pending.push(Msg::Sync);
        }
        let (tx, next) = mpsc::channel(MAILBOX_CAPACITY);
        self.tx = tx.clone();
        let info = self.info();
        let handle = ActorHandle {
            id: self.id,
            tx,
            logs: self.logs.clone(),
            snapshot: self.snapshot.subscribe(),
            stop: self.stop.clone(),
            lease: self.lease.clone(),
            claimed_at: self.claimed_at,
        };
        runtime
            .inner
            .actors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((info.tenant, info.run_id), handle);
        drop(guard);
        if let Some(at) = self.run.next_wake() {
            self.arm(at);
        }
        for msg in pending {
            if let Err(e) = self.process(msg).await {
                tracing::error!(error = %e, run_id = %self.run.state().run_id, "run driver stopped");
                self.unregister();
                let end = self.end_after(&e);
                self.give_up(end).await;
                return None;
            }
        }
        Some(next)
    }

    fn unregister(&mut self) {
        for token in self.running.values() {
            token.cancel();
        }
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
        let info = self.info();
        self.runtime
            .remove_actor(&info.tenant, &info.run_id, self.id);
    }

    async fn process(&mut self, msg: Msg) -> Result<(), RuntimeError> {
        match msg {
            Msg::Event(event) => self.handle(event).await,
            Msg::Decide {
                approval_id,
                request,
                reply,
            } => {
                let answer = self.decide(&approval_id, request).await;
                reply_then_continue(reply, answer, "decision")
            }
            Msg::Cancel { actor, reply } => {
                let answer = match self.run.status() {
                    RunStatus::Cancelled => Ok(RunStatus::Cancelled),
                    s if s.is_terminal() => Err(RuntimeError::RunTerminal(s.as_str().to_owned())),
                    _ => self
                        .handle(Event::CancelRequested { actor })
                        .await
                        .map(|()| self.run.status()),
                };
                reply_then_continue(reply, answer, "cancellation")
            }
            Msg::Sync => self.sync().await,
        }
    }

    /// Applies the records another replica journaled after ours (a decision, a cancellation)
    /// and performs what they command — the holder's half of `commit_elsewhere`.
    async fn sync(&mut self) -> Result<(), RuntimeError> {
        let info = self.info();
        let have = self.journal.next_seq() - 1;
        let entries = self
            .runtime
            .inner
            .stores
            .runs
            .load_journal(&info.tenant, &info.run_id, have)
            .await?;
        let corrupt = |message: String| RuntimeError::Corrupt {
            run_id: info.run_id.clone(),
            message,
        };
        let records = entries
            .iter()
            .map(from_entry)
            .collect::<Result<Vec<_>, _>>()
            .map_err(corrupt)?;
        // Only decisions and cancellations are journaled by replicas that do not drive the run.
        // Anything else means another driver of this run wrote: this one stops at once, before
        // performing anything (its lease is no longer the only one acting).
        if let Some(other) = records.iter().find(|r| {
            !matches!(
                r.event,
                Event::ApprovalDecided { .. } | Event::CancelRequested { .. }
            )
        }) {
            self.superseded = true;
            return Err(RuntimeError::Internal(format!(
                "journal record {} of run {} was written by another driver",
                other.seq, info.run_id
            )));
        }
        for record in records {
            let commands = self.run.apply(record.at, &record.event, &self.secrets);
            let ours = self.journal.append(record.at, record.event);
            if ours.seq != record.seq || ours.hash != record.hash {
                return Err(corrupt(format!(
                    "journal record {} written by another replica does not chain onto record {}",
                    record.seq, have
                )));
            }
            for command in commands {
                self.perform(command).await;
            }
        }
        if !entries.is_empty() {
            self.publish();
        }
        Ok(())
    }

    /// Commits a transition: fenced with the lease when driving as a replica.
    async fn commit(&self, transition: Transition) -> Result<Vec<u64>, StoreError> {
        match (self.runtime.replica(), &self.lease) {
            (Some(replica), Some(lease)) => replica.leases.commit_fenced(lease, transition).await,
            _ => self.runtime.inner.stores.runs.commit(transition).await,
        }
    }

    async fn decide(
        &mut self,
        approval_id: &str,
        request: DecisionRequest,
    ) -> Result<DecisionOutcome, RuntimeError> {
        let check = self.run.check_decision(
            approval_id,
            request.decision,
            &request.actor,
            &request.plan_hash,
        );
        check_grants(
            &self.run,
            approval_id,
            &check,
            request.caller_scopes.as_ref(),
        )?;
        let check = check.map_err(decision_error)?;
        if !check.already_applied {
            self.record_approval_wait(approval_id, request.decision);
            self.handle(Event::ApprovalDecided {
                approval_id: approval_id.to_owned(),
                decision: request.decision,
                actor: request.actor,
                summary: request.summary,
                plan_hash: request.plan_hash,
            })
            .await?;
        }
        Ok(DecisionOutcome {
            status: request.decision,
            resumed: check.resume,
        })
    }

    /// Metrics of a decision on a waiting gate: how long it waited, and whether that broke
    /// the pack's `approvalP95Seconds` target.
    fn record_approval_wait(&self, approval_id: &str, decision: Decision) {
        let now = self.runtime.inner.clock.now().millis();
        let waited_since = self.run.view().steps.iter().find_map(|s| {
            (s.approval_id.as_deref() == Some(approval_id)
                && s.status_reason.as_deref() == Some("awaiting-approval"))
            .then_some(s.last_transition_at)
            .flatten()
        });
        let Some(since) = waited_since else { return };
        let waited = (now - since.millis()).max(0) as f64 / 1000.0;
        metrics::histogram!("taskrunner_approval_wait_seconds", "decision" => decision.as_str())
            .record(waited);
        if let Some(target) = self.run.plan().slo().approval_p95_seconds
            && waited > target as f64
        {
            metrics::counter!("taskrunner_slo_breaches_total", "kind" => "approval").increment(1);
        }
    }

    /// Metrics of a run that just finished: status, duration, and the `runP95Seconds` target.
    fn record_finished(&self, at: Timestamp) {
        let status = self.run.status().as_str();
        metrics::counter!("taskrunner_runs_finished_total", "status" => status).increment(1);
        let seconds = (at.millis() - self.run.state().created_at.millis()).max(0) as f64 / 1000.0;
        let pack = self.run.plan().pack().name.clone();
        metrics::histogram!("taskrunner_run_duration_seconds", "pack" => pack).record(seconds);
        if let Some(target) = self.run.plan().slo().run_p95_seconds
            && seconds > target as f64
        {
            metrics::counter!("taskrunner_slo_breaches_total", "kind" => "run").increment(1);
        }
    }

    /// Applies one event: fold, journal + logs + status in one commit, then act.
    async fn handle(&mut self, event: Event) -> Result<(), RuntimeError> {
        if self.finished && !matches!(event, Event::AttemptFinished { .. }) {
            return Ok(());
        }
        if let Event::AttemptFinished {
            step_id, attempt, ..
        } = &event
        {
            self.running.remove(&(step_id.clone(), *attempt));
        }
        let mut conflicts = 0;
        loop {
            // A replica keeps the state before the event: another replica may have journaled
            // a decision or cancellation first (`Conflict`), applied, then this event again.
            let before = self
                .lease
                .is_some()
                .then(|| (self.run.clone(), self.journal.clone()));
            match self.apply_and_commit(&event).await {
                Err(RuntimeError::Store(StoreError::Conflict { .. }))
                    if conflicts < FOREIGN_TRIES =>
                {
                    let Some((run, journal)) = before else {
                        return Err(RuntimeError::Internal(
                            "journal conflict without a lease".into(),
                        ));
                    };
                    conflicts += 1;
                    tracing::debug!(run_id = %self.info().run_id, driver = self.id, "journal conflict: applying what another replica wrote");
                    self.run = run;
                    self.journal = journal;
                    self.sync().await?;
                    if self.finished && !matches!(event, Event::AttemptFinished { .. }) {
                        return Ok(());
                    }
                }
                other => return other,
            }
        }
    }

    /// One try of [`Actor::handle`]: fold, commit, then act.
    async fn apply_and_commit(&mut self, event: &Event) -> Result<(), RuntimeError> {
        // Time never goes backwards inside a run, whatever the wall clock does.
        let last = self.run.state().updated_at;
        let at = Timestamp(self.runtime.inner.clock.now().millis().max(last.millis()));
        let commands = self.run.apply(at, event, &self.secrets);
        // Secrets never reach the journal (rule 19): journal the masked form.
        let record = self.journal.append(at, event.masked(&self.secrets));
        let mut logs: Vec<NewLog> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Log(entry) => Some(to_new_log(entry)),
                _ => None,
            })
            .collect();
        // Outputs are captured before the run's end is recorded (SPEC §5.3 "End"), so their
        // `artifact.failed` entries precede `run.completed`/`run.failed`. Capturing twice after
        // a crash is harmless: blobs are content-addressed and records are upserted.
        if let Some(outputs) = commands.iter().find_map(|c| match c {
            Command::Finished { outputs, .. } => Some(outputs.clone()),
            _ => None,
        }) {
            let info = self.info();
            let failures = capture_outputs(
                &self.runtime,
                &info,
                &self.workspace,
                self.lease.as_ref(),
                outputs,
                &self.secrets,
            )
            .await;
            splice_before_end(&mut logs, failures);
        }
        let info = self.info();
        let transition = Transition {
            tenant: info.tenant.clone(),
            run_id: info.run_id.clone(),
            expected_journal_len: record.seq - 1,
            journal: vec![to_entry(&record)?],
            logs: logs.clone(),
            status: Some(self.run.status().as_str().to_owned()),
            updated_at_ms: at.millis(),
            next_wake_at_ms: Some(self.run.next_wake().map(Timestamp::millis)),
            snapshot: None,
        };
        let sequences = self.commit(transition).await?;
        for (sequence, log) in sequences.into_iter().zip(logs) {
            let _ = self.logs.send(LogRecord::from_new(sequence, log));
        }
        if commands
            .iter()
            .any(|c| matches!(c, Command::Finished { .. }))
        {
            self.record_finished(at);
        }
        for command in commands {
            self.perform(command).await;
        }
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let _ = self.snapshot.send(RunSnapshot {
            view: self.run.view(),
            running_attempts: self.running.len(),
            next_wake: self.run.next_wake(),
            fresh: false,
        });
    }

    fn arm(&mut self, at: Timestamp) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
        let clock = self.runtime.inner.clock.clone();
        let tx = self.tx.clone();
        self.timer = Some(tokio::spawn(async move {
            loop {
                let wait = at.millis().saturating_sub(clock.now().millis());
                if wait <= 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(
                    u64::try_from(wait).unwrap_or(0).min(60_000),
                ))
                .await;
            }
            let _ = tx.send(Msg::Event(Event::Tick)).await;
        }));
    }

    async fn perform(&mut self, command: Command) {
        match command {
            Command::Log(_) => {} // committed with the transition
            Command::WakeAt(at) => self.arm(at),
            Command::CancelAttempt { step_id, attempt } => {
                if let Some(token) = self.running.get(&(step_id, attempt)) {
                    token.cancel();
                }
            }
            Command::StartAttempt {
                step_id,
                attempt,
                uses,
                with,
                timeout_seconds,
                idempotency_key,
            } => {
                let token = CancellationToken::new();
                self.running
                    .insert((step_id.clone(), attempt), token.clone());
                let info = self.info();
                let request = ExecRequest {
                    tenant: info.tenant.clone(),
                    run_id: info.run_id.clone(),
                    step_id: step_id.clone(),
                    attempt,
                    idempotency_key,
                    uses: uses.clone(),
                    with,
                    workspace: self.workspace.clone(),
                    timeout: timeout_seconds.map(Duration::from_secs),
                    secrets: self.secret_values.clone(),
                    sandbox: sandbox_spec(self.run.plan()),
                };
                let executor = self.runtime.inner.executors.get(&uses);
                let runtime = self.runtime.clone();
                let tx = self.tx.clone();
                let logs = self.logs.clone();
                let secrets = self.secrets.clone();
                let lease = self.lease.clone();
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let outcome = match executor {
                        Some(executor) => {
                            let (line_tx, line_rx) = mpsc::channel(OUTPUT_LINES_CAPACITY);
                            let forward = tokio::spawn(forward_output(
                                runtime.clone(),
                                info,
                                step_id.clone(),
                                line_rx,
                                logs,
                                lease,
                            ));
                            let outcome = executor.execute(request, line_tx, token).await;
                            // Output lines land in the log before the step's end is recorded.
                            let _ = forward.await;
                            outcome
                        }
                        None => ExecOutcome::failed(
                            "executor-unavailable",
                            format!("executor '{uses}' is not available on this host"),
                        ),
                    };
                    let label = match &outcome {
                        ExecOutcome::Succeeded { .. } => "succeeded",
                        ExecOutcome::Failed { .. } => "failed",
                    };
                    metrics::counter!("taskrunner_step_attempts_total", "outcome" => label)
                        .increment(1);
                    metrics::histogram!(
                        "taskrunner_step_attempt_duration_seconds",
                        "outcome" => label
                    )
                    .record(started.elapsed().as_secs_f64());
                    let outcome = match outcome {
                        ExecOutcome::Succeeded { outputs } => AttemptOutcome::Succeeded {
                            outputs: mask_map(&secrets, outputs),
                        },
                        ExecOutcome::Failed {
                            reason, message, ..
                        } => AttemptOutcome::Failed {
                            reason,
                            message: secrets.mask(&message),
                        },
                    };
                    let _ = tx
                        .send(Msg::Event(Event::AttemptFinished {
                            step_id,
                            attempt,
                            outcome,
                        }))
                        .await;
                });
            }
            Command::Finished { .. } => {
                // Outputs were captured with the transition (see `handle`).
                self.finished = true;
                if let Some(timer) = self.timer.take() {
                    timer.abort();
                }
            }
        }
    }
}

/// Captures pack outputs as artifacts (SPEC §5.6, rule 20). A failed capture makes that
/// artifact `failed` and logs `artifact.failed`; it never changes the run's status.
async fn capture_outputs(
    runtime: &Runtime,
    info: &RunInfo,
    workspace: &Path,
    lease: Option<&Lease>,
    outputs: Vec<OutputResult>,
    secrets: &Secrets,
) -> Vec<NewLog> {
    let stores = runtime.inner.stores.clone();
    let now = runtime.inner.clock.now();
    let mut failures = Vec::new();
    for output in outputs {
        let record = match output {
            OutputResult::Object { name, value, error } => match (value, error) {
                (Some(value), _) => ArtifactRecord {
                    status: "captured".into(),
                    captured_at_ms: Some(now.millis()),
                    expression_json: Some(taskrunner_plan::jcs::to_canonical(&value)),
                    ..artifact(&name, "object")
                },
                (None, error) => {
                    let notes = error.unwrap_or_else(|| "the expression produced no value".into());
                    failures.push((name.clone(), notes.clone()));
                    ArtifactRecord {
                        status: "failed".into(),
                        notes: Some(notes),
                        ..artifact(&name, "object")
                    }
                }
            },
            OutputResult::File { name, path, error } => {
                let captured = match (path, error) {
                    (Some(path), None) => {
                        capture_file(&stores, info, workspace, &name, &path, secrets)
                            .await
                            .map(|r| (path, r))
                    }
                    (path, error) => Err((path, error.unwrap_or_else(|| "no path".into()))),
                };
                match captured {
                    Ok((path, (stored_path, sha256, size))) => ArtifactRecord {
                        source_path: Some(path),
                        stored_path: Some(stored_path),
                        status: "captured".into(),
                        captured_at_ms: Some(now.millis()),
                        sha256: Some(sha256),
                        size_bytes: Some(size),
                        ..artifact(&name, "file")
                    },
                    Err((path, notes)) => {
                        failures.push((name.clone(), notes.clone()));
                        ArtifactRecord {
                            source_path: path,
                            status: "failed".into(),
                            notes: Some(notes),
                            ..artifact(&name, "file")
                        }
                    }
                }
            }
        };
        let stored = match (runtime.replica(), lease) {
            (Some(replica), Some(lease)) => {
                replica.leases.upsert_artifact_fenced(lease, record).await
            }
            _ => {
                stores
                    .artifacts
                    .upsert_artifact(&info.tenant, &info.run_id, record)
                    .await
            }
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, "artifact record could not be stored");
        }
    }
    failures
        .into_iter()
        .map(|(name, reason)| NewLog {
            timestamp_ms: now.millis(),
            level: "warn".into(),
            event_type: "artifact.failed".into(),
            message: format!("Output {name} was not captured: {reason}"),
            step_id: None,
            metadata_json: serde_json::json!({"output": name, "reason": reason}).to_string(),
        })
        .collect()
}

async fn capture_file(
    stores: &Store,
    info: &RunInfo,
    workspace: &Path,
    name: &str,
    path: &str,
    secrets: &Secrets,
) -> Result<(String, String, u64), (Option<String>, String)> {
    let fail = |why: String| (Some(path.to_owned()), why);
    let relative = Path::new(path);
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(fail("path escapes the workspace".into()));
    }
    let root = std::fs::canonicalize(workspace)
        .map_err(|e| fail(format!("workspace unavailable: {e}")))?;
    let full = std::fs::canonicalize(root.join(relative))
        .map_err(|_| fail("file not found in the workspace".into()))?;
    if !full.starts_with(&root) {
        return Err(fail(
            "path escapes the workspace (through a symbolic link)".into(),
        ));
    }
    if !full.is_file() {
        return Err(fail("not a regular file".into()));
    }
    // A file holding a secret is refused, never copied into the data directory (rule 19).
    crate::artifact_secrets::refuse_if_secret(secrets.masker(), &full)
        .await
        .map_err(fail)?;
    let blob = stores
        .artifacts
        .put_file(&info.tenant, &info.run_id, name, BlobSource::File(full))
        .await
        .map_err(|e| fail(format!("could not store the file: {e}")))?;
    Ok((blob.stored_path, blob.sha256, blob.size_bytes))
}

/// Puts `artifact.failed` entries before the run's end entry (SPEC §5.3 "End").
fn splice_before_end(logs: &mut Vec<NewLog>, failures: Vec<NewLog>) {
    let end = logs
        .iter()
        .position(|l| {
            matches!(
                l.event_type.as_str(),
                "run.completed" | "run.failed" | "run.cancelled"
            )
        })
        .unwrap_or(logs.len());
    logs.splice(end..end, failures);
}

/// Step output lines → `step.output` log entries (stdout `info`, stderr `warn`), appended in
/// batches; never blocks the run on a slow follower (broadcast drops for laggards).
async fn forward_output(
    runtime: Runtime,
    info: RunInfo,
    step_id: String,
    mut lines: mpsc::Receiver<OutputLine>,
    live: broadcast::Sender<LogRecord>,
    lease: Option<Lease>,
) {
    let clock = runtime.inner.clock.clone();
    let mut batch = Vec::new();
    while let Some(first) = lines.recv().await {
        batch.push(first);
        while batch.len() < OUTPUT_BATCH_MAX {
            match lines.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        let now = clock.now().millis();
        let logs: Vec<NewLog> = batch
            .drain(..)
            .map(|line| {
                let (level, stream) = match line.stream {
                    OutputStream::Stdout => ("info", "stdout"),
                    OutputStream::Stderr => ("warn", "stderr"),
                    // An unenforced control (unsandboxed development mode) is loud.
                    OutputStream::Sandbox if line.metadata.contains_key("unsandboxed") => {
                        ("warn", "sandbox")
                    }
                    OutputStream::Sandbox => ("info", "sandbox"),
                };
                let mut metadata: Map<String, Value> = line
                    .metadata
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                metadata.insert("stream".into(), Value::String(stream.into()));
                NewLog {
                    timestamp_ms: now,
                    level: level.into(),
                    event_type: "step.output".into(),
                    message: line.line,
                    step_id: Some(step_id.clone()),
                    metadata_json: Value::Object(metadata).to_string(),
                }
            })
            .collect();
        let appended = match (runtime.replica(), &lease) {
            (Some(replica), Some(lease)) => {
                replica.leases.append_logs_fenced(lease, logs.clone()).await
            }
            _ => {
                runtime
                    .inner
                    .stores
                    .logs
                    .append_logs(&info.tenant, &info.run_id, logs.clone())
                    .await
            }
        };
        match appended {
            Ok(sequences) => {
                for (sequence, log) in sequences.into_iter().zip(logs) {
                    let _ = live.send(LogRecord::from_new(sequence, log));
                }
            }
            Err(e) => tracing::error!(error = %e, "step output could not be stored"),
        }
    }
}

/// Answers a caller; a storage failure also stops the driver (its memory may be ahead of the
/// store), any other refusal leaves it running.
fn reply_then_continue<T>(
    reply: oneshot::Sender<Result<T, RuntimeError>>,
    answer: Result<T, RuntimeError>,
    what: &str,
) -> Result<(), RuntimeError> {
    let failed = matches!(
        answer,
        Err(RuntimeError::Store(_) | RuntimeError::Internal(_))
    );
    let _ = reply.send(answer);
    if failed {
        Err(RuntimeError::Internal(format!(
            "{what} could not be stored"
        )))
    } else {
        Ok(())
    }
}

/// The isolation a plan's `spec.sandbox` asks of every attempt (SPEC §1.6, §7). `quotaSeconds`
/// is not here: the engine already folds it into each attempt's timeout.
fn sandbox_spec(plan: &Plan) -> SandboxSpec {
    let sandbox = plan.sandbox();
    let network = match sandbox.mode {
        taskrunner_plan::SandboxMode::Sealed => NetworkMode::Sealed,
        taskrunner_plan::SandboxMode::Networked => NetworkMode::Shared,
    };
    SandboxSpec::new(network)
        .with_cpu_limit_millicores(
            sandbox
                .cpu_limit_millicores
                .map(|m| u32::try_from(m).unwrap_or(u32::MAX)),
        )
        .with_memory_limit_mib(sandbox.memory_limit_mib)
        .with_egress_allowlist(sandbox.egress_allowlist.clone())
}

fn artifact(name: &str, kind: &str) -> ArtifactRecord {
    ArtifactRecord {
        name: name.to_owned(),
        kind: kind.to_owned(),
        source_path: None,
        stored_path: None,
        status: "pending".into(),
        notes: None,
        captured_at_ms: None,
        expression_json: None,
        sha256: None,
        size_bytes: None,
    }
}

fn mask_map(secrets: &Secrets, outputs: Map<String, Value>) -> Map<String, Value> {
    match secrets.mask_value(&Value::Object(outputs)) {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Rule 16: an unknown approval is 404 before anything else; then a caller must hold every scope
/// the approval's `grants` lists (403) before the plan hash or the run's state are looked at.
fn check_grants(
    run: &Run,
    approval_id: &str,
    check: &Result<taskrunner_engine::DecisionCheck, taskrunner_engine::Error>,
    scopes: Option<&BTreeSet<String>>,
) -> Result<(), RuntimeError> {
    if let Err(taskrunner_engine::Error::UnknownApproval(id)) = check {
        return Err(RuntimeError::NotFound(format!("approval {id}")));
    }
    let (Some(scopes), Some(approval)) = (scopes, run.plan().approval(approval_id)) else {
        return Ok(());
    };
    let missing: Vec<&str> = approval
        .grants
        .iter()
        .filter(|g| !scopes.contains(*g))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::Forbidden(format!(
            "approval {approval_id} needs the scope(s) {}",
            missing.join(", ")
        )))
    }
}

/// The answer to a decision on a finished run: the engine says which answer or error applies.
fn decision_on_terminal(
    run: &Run,
    approval_id: &str,
    request: &DecisionRequest,
) -> Result<DecisionOutcome, RuntimeError> {
    let check = run.check_decision(
        approval_id,
        request.decision,
        &request.actor,
        &request.plan_hash,
    );
    check_grants(run, approval_id, &check, request.caller_scopes.as_ref())?;
    match check {
        Ok(check) => Ok(DecisionOutcome {
            status: request.decision,
            resumed: check.resume,
        }),
        Err(e) => Err(decision_error(e)),
    }
}

fn decision_error(e: taskrunner_engine::Error) -> RuntimeError {
    use taskrunner_engine::Error as E;
    match e {
        E::UnknownApproval(id) => RuntimeError::NotFound(format!("approval {id}")),
        E::PlanHashMismatch { expected, .. } => RuntimeError::PlanHashMismatch { expected },
        E::RunTerminal(status) => RuntimeError::RunTerminal(status),
        E::ApprovalAlreadyDecided(id) => RuntimeError::AlreadyDecided(id),
        other => RuntimeError::Internal(other.to_string()),
    }
}

fn to_new_log(entry: &LogEntry) -> NewLog {
    NewLog {
        timestamp_ms: entry.timestamp.millis(),
        level: entry.level.as_str().to_owned(),
        event_type: entry.event_type.clone(),
        message: entry.message.clone(),
        step_id: entry.step_id.clone(),
        metadata_json: serde_json::to_string(&entry.metadata).unwrap_or_else(|_| "{}".into()),
    }
}

fn to_entry(record: &JournalRecord) -> Result<JournalEntry, RuntimeError> {
    Ok(JournalEntry {
        seq: record.seq,
        at_ms: record.at.millis(),
        payload_json: serde_json::to_string(&record.event)
            .map_err(|e| RuntimeError::Internal(e.to_string()))?,
        prev_hash: record.prev_hash.clone(),
        hash: record.hash.clone(),
    })
}

fn from_entry(entry: &JournalEntry) -> Result<JournalRecord, String> {
    Ok(JournalRecord {
        seq: entry.seq,
        at: Timestamp(entry.at_ms),
        event: serde_json::from_str(&entry.payload_json)
            .map_err(|e| format!("journal record {}: {e}", entry.seq))?,
        prev_hash: entry.prev_hash.clone(),
        hash: entry.hash.clone(),
    })
}

/// SPEC §8 rule 26: `^[a-z0-9][a-z0-9._-]{0,62}$`.
pub fn check_tenant(tenant: &str) -> Result<(), RuntimeError> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 63
        && tenant.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && tenant
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::BadRequest(format!(
            "tenant '{tenant}' must match ^[a-z0-9][a-z0-9._-]{{0,62}}$"
        )))
    }
}

/// SPEC §8 rule 26: `^[a-zA-Z0-9_-]{1,128}$`.
pub fn check_run_id(run_id: &str) -> Result<(), RuntimeError> {
    let ok = !run_id.is_empty()
        && run_id.len() <= 128
        && run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::BadRequest(format!(
            "runId '{run_id}' must match ^[a-zA-Z0-9_-]{{1,128}}$"
        )))
    }
}
