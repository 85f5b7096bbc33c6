//! Lease renewal while the database is away: after a failed renewal the replica tries again
//! within [`RENEW_RETRY`]-sized pauses, not a whole renewal interval later, so its leases are
//! renewed as soon as the store answers again and its runs are not taken over (and run twice)
//! after a short outage (found by `bins/taskrunner/tests/pg_restart.rs`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Map;
use taskrunner_engine::RunStatus;
use taskrunner_exec::ExecutorRegistry;
use taskrunner_runtime::{
    CreateRun, ReplicaConfig, Runtime, RuntimeConfig, StaticSecrets, SystemClock,
};
use taskrunner_store::{
    ArtifactRecord, Lease, LeaseStore, MemoryStore, NewLog, Release, Store, StoreError,
    StoreFuture, Transition, WakeStream,
};

/// The memory store's leases; `renew` refused as `Unavailable` while `down`.
struct Flaky {
    inner: MemoryStore,
    down: AtomicBool,
    /// When each renewal was asked for, and whether it was refused.
    renewals: Mutex<Vec<(Instant, bool)>>,
}

impl LeaseStore for Flaky {
    fn claim<'a>(
        &'a self,
        owner: &'a str,
        limit: usize,
        ttl: Duration,
    ) -> StoreFuture<'a, Vec<Lease>> {
        self.inner.claim(owner, limit, ttl)
    }
    fn claim_run<'a>(
        &'a self,
        owner: &'a str,
        tenant: &'a str,
        run_id: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, Option<Lease>> {
        self.inner.claim_run(owner, tenant, run_id, ttl)
    }
    fn renew<'a>(&'a self, owner: &'a str, ttl: Duration) -> StoreFuture<'a, Vec<Lease>> {
        let down = self.down.load(Ordering::SeqCst);
        self.renewals.lock().unwrap().push((Instant::now(), down));
        if down {
            return Box::pin(async { Err(StoreError::Unavailable("connection refused".into())) });
        }
        self.inner.renew(owner, ttl)
    }
    fn release<'a>(&'a self, lease: &'a Lease, mode: Release) -> StoreFuture<'a, ()> {
        self.inner.release(lease, mode)
    }
    fn commit_fenced<'a>(
        &'a self,
        lease: &'a Lease,
        transition: Transition,
    ) -> StoreFuture<'a, Vec<u64>> {
        self.inner.commit_fenced(lease, transition)
    }
    fn append_logs_fenced<'a>(
        &'a self,
        lease: &'a Lease,
        logs: Vec<NewLog>,
    ) -> StoreFuture<'a, Vec<u64>> {
        self.inner.append_logs_fenced(lease, logs)
    }
    fn upsert_artifact_fenced<'a>(
        &'a self,
        lease: &'a Lease,
        record: ArtifactRecord,
    ) -> StoreFuture<'a, ()> {
        self.inner.upsert_artifact_fenced(lease, record)
    }
    fn wakeups(&self) -> WakeStream {
        self.inner.wakeups()
    }
}

const PACK: &str = "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: renew, version: 1.0.0}\nspec:\n  steps:\n    - {id: nap, run: {uses: builtin:sleep, with: {seconds: 3}}}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_renewal_is_tried_again_soon_and_the_leases_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let memory = MemoryStore::new();
    let leases = Arc::new(Flaky {
        inner: memory.clone(),
        down: AtomicBool::new(false),
        renewals: Mutex::new(Vec::new()),
    });
    let store = Store::from_parts(
        Arc::new(memory.clone()),
        Arc::new(memory.clone()),
        Arc::new(memory.clone()),
    )
    .with_leases(leases.clone());
    let every = Duration::from_millis(1500);
    let rt = Runtime::start(
        store,
        ExecutorRegistry::with_builtins(),
        Arc::new(SystemClock),
        Arc::new(StaticSecrets::new()),
        RuntimeConfig::new(dir.path().join("ws")).with_replica(ReplicaConfig {
            lease_ttl: Duration::from_secs(5),
            renew_every: every,
            claim_every: Duration::from_millis(200),
            ..ReplicaConfig::new(ReplicaConfig::unique_owner("renew"))
        }),
    )
    .await
    .unwrap();
    rt.create_run(CreateRun {
        tenant: "default".into(),
        run_id: Some("held".into()),
        manifest: PACK.into(),
        inputs: Map::new(),
    })
    .await
    .unwrap();

    // Renewals fail for 2 s (more than one renewal interval, less than the lease).
    leases.down.store(true, Ordering::SeqCst);
    let outage = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    leases.down.store(false, Ordering::SeqCst);
    let back = Instant::now();
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let renewals = leases.renewals.lock().unwrap().clone();
    let refused: Vec<Instant> = renewals
        .iter()
        .filter(|(at, down)| *down && *at >= outage)
        .map(|(at, _)| *at)
        .collect();
    // The first refusal comes at the next scheduled renewal; then every 250 ms.
    assert!(refused.len() >= 2, "refused renewals: {}", refused.len());
    for pair in refused.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap < every / 2, "tried again only after {gap:?}");
    }
    let first_ok = renewals
        .iter()
        .find(|(at, down)| !*down && *at >= back)
        .map(|(at, _)| *at - back)
        .expect("no renewal after the store came back");
    assert!(
        first_ok < Duration::from_millis(700),
        "renewed {first_ok:?} after the store came back"
    );
    // The run kept its driver: one attempt, no takeover.
    let view = rt.wait_settled("default", "held").await.unwrap();
    assert_eq!(view.status, RunStatus::Succeeded, "{view:#?}");
    let journal = taskrunner_store::RunStore::load_journal(&memory, "default", "held", 0)
        .await
        .unwrap();
    assert!(
        !journal
            .iter()
            .any(|e| e.payload_json.to_ascii_lowercase().contains("recovered")),
        "{journal:#?}"
    );
}
