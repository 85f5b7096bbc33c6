//! The facade (SPEC §5, §6.2): [`Runtime`], the embedding API. It starts the runtime (recovery,
//! or the replica loops), brings runs into memory when a call needs their driver, and answers
//! the public calls; the work itself is done by the parts it delegates to — admission
//! (`admission.rs`), the drivers (`actor/`), output capture (`output.rs`), the replica protocol
//! (`replica/`) — over the shared handles (`shared.rs`) and the actor registry
//! (`registry.rs`).
//!
//! Calling contract: every state change goes through a run's actor, so events for one run are
//! applied in order; the journal record, the log entries and the new status of a transition are
//! committed in one store transaction (the SQLite adapter batches concurrent commits into one
//! fsync). On start, every active run is replayed from its journal (verified against the plan
//! hash) and receives `Recovered`: attempts that were running are failed as `interrupted` and
//! retried under their policy; timers are re-armed. As a replica ([`RuntimeConfig::replica`],
//! SPEC rule 29) a runtime drives only the runs whose lease it holds (see `replica/`).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskrunner_engine::{Event, Journal, Run, RunStatus, RunView};
use taskrunner_exec::ExecutorRegistry;
use taskrunner_plan::Plan;
use taskrunner_store::{Lease, ListQuery, LogRecord, Store, StoreError};
use tokio::sync::{broadcast, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::actor::{self, Msg};
use crate::api::{
    CreateRun, DecisionOutcome, DecisionRequest, RunSnapshot, RuntimeConfig, check_tenant,
};
use crate::decision::decision_on_terminal;
use crate::error::RuntimeError;
use crate::ports::{Clock, SecretProvider};
use crate::registry::{ActorHandle, Registry, RunKey};
use crate::replica::{Claimed, Claims, Replica};
use crate::shared::Shared;
use crate::views::{Artifact, RunPage, RunSummary};

/// Most run states of runs out of memory kept by `get_run` (the cache starts over when full).
const VIEW_CACHE_MAX: usize = 4096;
/// How often runs parked out of memory are checked for due timers (approval expiry).
const WAKE_POLL: Duration = Duration::from_millis(500);
/// Attempts to hand a message to a run's driver while it retires concurrently.
const DELIVERY_TRIES: usize = 3;
/// How long graceful shutdown waits for drivers to hand their runs off.
const HANDOFF_WAIT: Duration = Duration::from_secs(5);

/// A run brought into memory for a call, or why not.
pub(crate) enum Hydrated {
    /// The driver; with the hydrate lock when it was just started as a replica, so that it
    /// cannot retire before the caller's message is in its mailbox.
    Active(ActorHandle, Option<tokio::sync::OwnedMutexGuard<()>>),
    Terminal(Box<Run>),
    /// Another replica holds the run's live lease.
    Elsewhere,
}

/// States of runs out of memory (parked or finished), each with the journal length it was
/// folded from: valid while the stored length is the same (a change always grows it).
type ViewCache = BTreeMap<RunKey, (u64, RunView)>;

/// The embedding API: build it from stores, executors, a clock and a secret provider; it is a
/// cheap handle (clone it freely).
#[derive(Clone)]
pub struct Runtime {
    pub(crate) shared: Arc<Shared>,
    pub(crate) registry: Arc<Registry>,
    views: Arc<Mutex<ViewCache>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("workspace_root", &self.shared.config.workspace_root)
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
                    claims: Claims::default(),
                    leases,
                    config: replica.clone(),
                })
            }
        };
        let is_replica = replica.is_some();
        let runtime = Runtime {
            shared: Arc::new(Shared {
                stores,
                executors,
                clock,
                secrets,
                config,
                replica,
                shutdown: CancellationToken::new(),
                id_counter: AtomicU64::new(0),
            }),
            registry: Arc::new(Registry::new()),
            views: Arc::new(Mutex::new(BTreeMap::new())),
        };
        if is_replica {
            tokio::spawn(runtime.clone().claim_loop());
            tokio::spawn(runtime.clone().renew_loop());
            return Ok(runtime);
        }
        for (tenant, run_id) in runtime.shared.stores.runs.active_runs().await? {
            let (run, journal) = runtime.shared.load(&tenant, &run_id).await?;
            let first = if journal.next_seq() == 1 {
                Event::Started
            } else {
                Event::Recovered
            };
            runtime.spawn_actor(run, journal, None, Some(first))?;
        }
        tokio::spawn(runtime.clone().wake_due_runs());
        Ok(runtime)
    }

    /// The replica's lease port and settings, when it is one.
    pub(crate) fn replica(&self) -> Option<&Replica> {
        self.shared.replica()
    }

    /// The run's driver here, if any.
    pub(crate) fn actor(&self, tenant: &str, run_id: &str) -> Option<ActorHandle> {
        self.registry.get(tenant, run_id)
    }

    /// Starts a driver for `run` (see [`actor::spawn`]).
    pub(crate) fn spawn_actor(
        &self,
        run: Run,
        journal: Journal,
        claimed: Option<Claimed>,
        first: Option<Event>,
    ) -> Result<ActorHandle, RuntimeError> {
        actor::spawn(&self.shared, &self.registry, run, journal, claimed, first)
    }

    /// Stops every driver, kills their attempts, hands their runs off (replicas: `Handoff`,
    /// claimable at once by another replica) and waits up to 5 s for that to finish.
    pub async fn shutdown_gracefully(&self) {
        self.shared.shutdown.cancel();
        let clock = &self.shared.clock;
        let deadline = clock.monotonic() + HANDOFF_WAIT;
        while self.registry.live() > 0 && clock.monotonic() < deadline {
            clock.sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs that are not in memory (parked at a gate) but have a timer due — an approval
    /// expiry — are brought back and ticked. Active runs keep their own precise timers.
    async fn wake_due_runs(self) {
        let shutdown = self.shared.shutdown.clone();
        loop {
            tokio::select! {
                () = self.shared.clock.sleep(WAKE_POLL) => {}
                () = shutdown.cancelled() => return,
            }
            let now = self.shared.clock.now().millis();
            let Ok(due) = self.shared.stores.runs.due_runs(now).await else {
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
    /// (with `wait_for_park`, only after waiting up to 2 s for that replica to park
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
            let _guard = self.registry.hydrate_lock().await;
            if let Some(handle) = self.actor(tenant, run_id) {
                return Ok(Hydrated::Active(handle, None));
            }
            let (run, journal) = self.shared.load_existing(tenant, run_id).await?;
            if run.is_terminal() {
                return Ok(Hydrated::Terminal(Box::new(run)));
            }
            return Ok(Hydrated::Active(
                self.spawn_actor(run, journal, None, None)?,
                None,
            ));
        };
        self.hydrate_replica(replica, tenant, run_id, wait_for_park)
            .await
    }

    /// Replicas: the leases this replica believes it holds now — those its drivers run under
    /// and the claims not adopted yet — whose local deadline (the time the claim or last
    /// renewal returning them was sent, plus the TTL minus a tenth) has not passed. Empty for
    /// a runtime that is not a replica. Tests check with it that at most one replica believes
    /// it holds a run at any moment.
    pub fn held_leases(&self) -> Vec<Lease> {
        self.believed_leases()
    }

    /// The executors this runtime has.
    pub fn executors(&self) -> &ExecutorRegistry {
        &self.shared.executors
    }

    /// Plans and stores a run, then starts it (SPEC §5.1).
    pub async fn create_run(&self, request: CreateRun) -> Result<RunView, RuntimeError> {
        let (run, journal) = self.shared.admit(request).await?;
        let view = run.view();
        // Replicas claim the new run; the hydrate lock keeps our claimer from starting a second
        // driver for it in between.
        let _guard = self.registry.hydrate_lock().await;
        if let Some(replica) = self.replica() {
            self.drive_new_run(replica, run, journal).await?;
            return Ok(view);
        }
        self.spawn_actor(run, journal, None, Some(Event::Started))?;
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
        let Some(record) = self.shared.stores.runs.get_run(tenant, run_id).await? else {
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
        let view = self.shared.load(tenant, run_id).await?.0.view();
        let mut views = self.views();
        if views.len() >= VIEW_CACHE_MAX {
            views.clear();
        }
        views.insert(key, (record.journal_len, view.clone()));
        Ok(Some(view))
    }

    fn views(&self) -> std::sync::MutexGuard<'_, ViewCache> {
        self.views
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
            .shared
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
    ) -> Result<Option<RunSummary>, RuntimeError> {
        self.shared
            .stores
            .runs
            .get_run(tenant, run_id)
            .await?
            .map(RunSummary::from_record)
            .transpose()
    }

    /// A page of the tenant's runs, newest first (cursor paging, see `RunStore::list_runs`).
    /// A malformed cursor or a zero limit is `BadRequest`.
    pub async fn list_runs(&self, tenant: &str, query: ListQuery) -> Result<RunPage, RuntimeError> {
        check_tenant(tenant)?;
        match self.shared.stores.runs.list_runs(tenant, query).await {
            Err(StoreError::Invalid(why)) => Err(RuntimeError::BadRequest(why)),
            other => RunPage::from_page(other?),
        }
    }

    /// The run's artifacts in declared order (SPEC §5.6).
    pub async fn artifacts(
        &self,
        tenant: &str,
        run_id: &str,
    ) -> Result<Vec<Artifact>, RuntimeError> {
        match self
            .shared
            .stores
            .artifacts
            .list_artifacts(tenant, run_id)
            .await
        {
            Err(StoreError::NotFound) => Err(RuntimeError::NotFound(format!("run {run_id}"))),
            other => other?
                .into_iter()
                .map(|record| Artifact::from_record(run_id, record))
                .collect(),
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

    /// Stops every driver without touching run state: runs stay recoverable (running
    /// attempts are killed and will be retried as `interrupted` after a restart; a replica's
    /// drivers hand their runs off, see [`Runtime::shutdown_gracefully`]).
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// What the evidence of a finished run is built from (see [`crate::evidence_source`]).
    /// A run whose driver is still in memory here is not finished yet, even when its status is
    /// terminal: it may still be capturing its outputs.
    pub async fn evidence_source(
        &self,
        tenant: &str,
        run_id: &str,
    ) -> Result<crate::EvidenceSource, RuntimeError> {
        if let Some(handle) = self.actor(tenant, run_id) {
            let status = handle.snapshot.borrow().view.status;
            return Err(RuntimeError::RunNotFinished(if status.is_terminal() {
                format!("{} (capturing outputs)", status.as_str())
            } else {
                status.as_str().to_owned()
            }));
        }
        crate::evidence_source(
            &self.shared.stores,
            self.shared.secrets.as_ref(),
            tenant,
            run_id,
        )
        .await
    }

    /// Required secrets of a stored run that this host cannot supply (now, or shorter than
    /// [`crate::SECRET_BYTES_MIN`]): a run resumed on another host or after a configuration
    /// change would otherwise fail at the step that uses them.
    pub async fn missing_secrets(
        &self,
        tenant: &str,
        run_id: &str,
    ) -> Result<Vec<String>, RuntimeError> {
        let record = self
            .shared
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
        Ok(self
            .shared
            .resolve_secrets(&plan)
            .unavailable
            .into_iter()
            .filter(|s| s.required)
            .map(|s| s.name)
            .collect())
    }
}
