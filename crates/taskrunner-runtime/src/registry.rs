//! The actor registry: which runs have a driver in this process, and the lock that keeps a run
//! from ever having two. A driver holds a [`Registration`]: it withdraws its entry itself when
//! it retires and reports its end by dropping the registration (which wakes the claimer and
//! lets graceful shutdown finish) — it never calls back into the facade.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use taskrunner_store::{Lease, LogRecord};
use tokio::sync::{Notify, OwnedMutexGuard, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::actor::Msg;
use crate::api::RunSnapshot;
use crate::replica::{Deadline, Loser};

/// `(tenant, run_id)`.
pub(crate) type RunKey = (String, String);

/// What the rest of the runtime holds of a driver.
#[derive(Clone)]
pub(crate) struct ActorHandle {
    /// Tells this driver from a later one of the same run.
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<Msg>,
    pub(crate) logs: broadcast::Sender<LogRecord>,
    pub(crate) snapshot: watch::Receiver<RunSnapshot>,
    /// Stops the driver at once (its lease was lost): attempts killed, nothing more written.
    pub(crate) stop: CancellationToken,
    /// Kills its attempts' process groups at once (SIGKILL): its lease was lost.
    pub(crate) kill: CancellationToken,
    /// The lease it drives under (replicas only).
    pub(crate) lease: Option<Lease>,
    /// When that lease was taken, in the clock's monotonic time.
    pub(crate) claimed_at: Duration,
    /// When it stops believing in that lease unless a renewal moves it (replicas only).
    pub(crate) deadline: Arc<Deadline>,
}

impl ActorHandle {
    /// What [`crate::replica::lose`] needs to make this driver give its lease up.
    pub(crate) fn loser(&self, key: &RunKey) -> Loser {
        Loser {
            key: key.clone(),
            id: self.id,
            kill: self.kill.clone(),
            stop: self.stop.clone(),
            token: self.lease.as_ref().map_or(0, |l| l.fencing_token),
        }
    }
}

/// The drivers of this process.
pub(crate) struct Registry {
    actors: Mutex<BTreeMap<RunKey, ActorHandle>>,
    /// Serialises bringing a run into memory and retiring it, so one run never has two drivers.
    hydrate: Arc<tokio::sync::Mutex<()>>,
    /// Ids of drivers.
    ids: AtomicU64,
    /// Driver tasks still running (graceful shutdown waits for their hand-offs).
    live: AtomicUsize,
    /// Woken when a driver ends: a replica may have room to claim more runs.
    ended: Notify,
}

impl Registry {
    pub(crate) fn new() -> Registry {
        Registry {
            actors: Mutex::new(BTreeMap::new()),
            hydrate: Arc::new(tokio::sync::Mutex::new(())),
            ids: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            ended: Notify::new(),
        }
    }

    fn actors(&self) -> MutexGuard<'_, BTreeMap<RunKey, ActorHandle>> {
        self.actors.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The run's driver here, if any.
    pub(crate) fn get(&self, tenant: &str, run_id: &str) -> Option<ActorHandle> {
        self.actors()
            .get(&(tenant.to_owned(), run_id.to_owned()))
            .cloned()
    }

    /// Runs driven here now.
    pub(crate) fn len(&self) -> usize {
        self.actors().len()
    }

    /// Every driver here now.
    pub(crate) fn handles(&self) -> Vec<(RunKey, ActorHandle)> {
        self.actors()
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect()
    }

    /// An id for a new driver.
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes the hydrate lock (bringing a run into memory or retiring it).
    pub(crate) async fn hydrate_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.hydrate.lock().await
    }

    /// The hydrate lock, held past the borrow of the registry.
    pub(crate) async fn hydrate_lock_owned(&self) -> OwnedMutexGuard<()> {
        self.hydrate.clone().lock_owned().await
    }

    /// Driver tasks still running.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Resolves when a driver ends.
    pub(crate) async fn driver_ended(&self) {
        self.ended.notified().await;
    }

    /// Registers a new driver under `key`, replacing any earlier one, and counts its task as
    /// live until the returned registration is dropped.
    pub(crate) fn register(self: &Arc<Self>, key: RunKey, handle: ActorHandle) -> Registration {
        let id = handle.id;
        self.insert(key.clone(), handle);
        self.live.fetch_add(1, Ordering::SeqCst);
        Registration {
            registry: self.clone(),
            key,
            id,
        }
    }

    fn insert(&self, key: RunKey, handle: ActorHandle) {
        let mut actors = self.actors();
        actors.insert(key, handle);
        metrics::gauge!("taskrunner_runs_in_memory").set(actors.len() as f64);
    }

    /// Removes a driver unless a later one of the same run replaced it.
    pub(crate) fn remove(&self, key: &RunKey, id: u64) {
        let mut actors = self.actors();
        if actors.get(key).is_some_and(|h| h.id == id) {
            actors.remove(key);
        }
        metrics::gauge!("taskrunner_runs_in_memory").set(actors.len() as f64);
    }
}

/// A driver's place in the registry; dropping it (the driver task ends) reports the end.
pub(crate) struct Registration {
    registry: Arc<Registry>,
    key: RunKey,
    id: u64,
}

impl Registration {
    /// The registry (for its hydrate lock).
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Leaves the registry (the driver retires or stops); a later driver of the run stays.
    pub(crate) fn withdraw(&self) {
        self.registry.remove(&self.key, self.id);
    }

    /// Comes back under a new handle (a retiring driver that found messages to process).
    pub(crate) fn reinstate(&self, handle: ActorHandle) {
        self.registry.insert(self.key.clone(), handle);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.live.fetch_sub(1, Ordering::SeqCst);
        self.registry.ended.notify_one();
    }
}
