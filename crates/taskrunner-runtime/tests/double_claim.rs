//! The double claim (issue 10, item 5): two replicas on one store, a shared virtual clock, and
//! delays injected between a lease call and its answer (a slow network or a stalled process).
//! Each case replays one interleaving deterministically (`start_paused`: tokio's clock only
//! moves when every task waits) and checks, on every lease call and every 5 ms, the replica
//! invariant of `tests/invariant`: at most one replica believes it holds the run's lease, with
//! the current fencing token. The step is a probe that counts its live copies: two copies of
//! one step never run at once.
//!
//! The fault that was found: a claim whose answer was late looked like an orphan to the
//! renewer (a lease held in the store with no driver here) and was handed off; the other
//! replica claimed and drove the run, then the late answer was adopted with its stale lease.
//! Likewise a replica whose renewal answer was late (or never sent) went on believing in a
//! lease the store had already let expire, its step still running, while the other replica
//! took the run over and retried the step.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod invariant;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use invariant::Invariant;
use serde_json::Map;
use taskrunner_engine::{AttemptOutcome, Event, RunStatus};
use taskrunner_runtime::exec::{
    BoxFuture, ExecOutcome, ExecRequest, Executor, ExecutorRegistry, OutputLine,
};
use taskrunner_runtime::store::{LeaseStore, MemoryStore, RunStore, Store, StoreError};
use taskrunner_runtime::{
    CancellationToken, Clock, CreateRun, ReplicaConfig, Runtime, RuntimeConfig, StaticSecrets,
};
use taskrunner_store::{ArtifactRecord, Lease, NewLog, Release, Transition, WakeStream};
use taskrunner_testkit::ManualClock;
use tokio::sync::mpsc::Sender;

const TENANT: &str = "default";
const RUN: &str = "contested";
const TTL: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_millis(400);

/// Faults injected into one replica's lease calls (times are the shared clock's monotonic).
#[derive(Default)]
struct Faults {
    /// `claim_run` answers "taken by someone else": a run created here waits for a claimer.
    refuse_claim_run: bool,
    /// Claims answer nothing before this time (a claimer that is slow to start).
    blind_until: Duration,
    /// The next claim that takes a run is answered this much later.
    late_claim_answer: Option<Duration>,
    /// Renewals fail (`Unavailable`) within this window.
    renew_fails: Option<(Duration, Duration)>,
    /// The next renewal is answered this much later (it was applied at once).
    late_renew_answer: Option<Duration>,
    /// The next renewal is sent this much later (the replica stalls before sending it).
    stalled_renew: Option<Duration>,
}

/// One replica's lease port: the shared memory store with faults, sampling the invariant.
struct Faulty {
    inner: MemoryStore,
    faults: Arc<Mutex<Faults>>,
    clock: ManualClock,
    invariant: Arc<Invariant>,
}

impl Faulty {
    fn now(&self) -> Duration {
        self.clock.monotonic()
    }
}

impl LeaseStore for Faulty {
    fn claim<'a>(
        &'a self,
        owner: &'a str,
        limit: usize,
        ttl: Duration,
    ) -> taskrunner_store::StoreFuture<'a, Vec<Lease>> {
        async move {
            self.invariant.sample("before claim");
            if self.now() < self.faults.lock().unwrap().blind_until {
                return Ok(Vec::new());
            }
            let claimed = self.inner.claim(owner, limit, ttl).await?;
            claimed.iter().for_each(|l| self.invariant.issued(l));
            let late = if claimed.is_empty() {
                None
            } else {
                self.faults.lock().unwrap().late_claim_answer.take()
            };
            if let Some(late) = late {
                self.clock.sleep(late).await;
            }
            self.invariant.sample("claim answered");
            Ok(claimed)
        }
        .boxed()
    }

    fn claim_run<'a>(
        &'a self,
        owner: &'a str,
        tenant: &'a str,
        run_id: &'a str,
        ttl: Duration,
    ) -> taskrunner_store::StoreFuture<'a, Option<Lease>> {
        async move {
            self.invariant.sample("before claim_run");
            if self.faults.lock().unwrap().refuse_claim_run {
                return Ok(None);
            }
            let claimed = self.inner.claim_run(owner, tenant, run_id, ttl).await?;
            claimed.iter().for_each(|l| self.invariant.issued(l));
            Ok(claimed)
        }
        .boxed()
    }

    fn renew<'a>(
        &'a self,
        owner: &'a str,
        ttl: Duration,
    ) -> taskrunner_store::StoreFuture<'a, Vec<Lease>> {
        async move {
            self.invariant.sample("before renew");
            let stall = self.faults.lock().unwrap().stalled_renew.take();
            if let Some(stall) = stall {
                self.clock.sleep(stall).await;
            }
            let now = self.now();
            let fails = self
                .faults
                .lock()
                .unwrap()
                .renew_fails
                .is_some_and(|(from, until)| from <= now && now < until);
            if fails {
                return Err(StoreError::Unavailable("injected".into()));
            }
            let held = self.inner.renew(owner, ttl).await?;
            let late = self.faults.lock().unwrap().late_renew_answer.take();
            if let Some(late) = late {
                self.clock.sleep(late).await;
            }
            self.invariant.sample("renew answered");
            Ok(held)
        }
        .boxed()
    }

    fn release<'a>(
        &'a self,
        lease: &'a Lease,
        mode: Release,
    ) -> taskrunner_store::StoreFuture<'a, ()> {
        self.invariant.sample("release");
        self.inner.release(lease, mode)
    }

    fn commit_fenced<'a>(
        &'a self,
        lease: &'a Lease,
        transition: Transition,
    ) -> taskrunner_store::StoreFuture<'a, Vec<u64>> {
        self.invariant.sample("commit_fenced");
        self.inner.commit_fenced(lease, transition)
    }

    fn append_logs_fenced<'a>(
        &'a self,
        lease: &'a Lease,
        logs: Vec<NewLog>,
    ) -> taskrunner_store::StoreFuture<'a, Vec<u64>> {
        self.invariant.sample("append_logs_fenced");
        self.inner.append_logs_fenced(lease, logs)
    }

    fn upsert_artifact_fenced<'a>(
        &'a self,
        lease: &'a Lease,
        record: ArtifactRecord,
    ) -> taskrunner_store::StoreFuture<'a, ()> {
        self.invariant.sample("upsert_artifact_fenced");
        self.inner.upsert_artifact_fenced(lease, record)
    }

    fn wakeups(&self) -> WakeStream {
        self.inner.wakeups()
    }
}

/// Copies of the probe step: live now, most at once, and when each started and ended.
#[derive(Debug, Default)]
struct Copies {
    live: usize,
    most: usize,
    log: Vec<String>,
}

/// `uses: probe`: runs `with.seconds` of virtual time; stops when cancelled or killed.
#[derive(Debug)]
struct Probe {
    copies: Arc<Mutex<Copies>>,
    clock: ManualClock,
}

impl Executor for Probe {
    fn execute(
        &self,
        request: ExecRequest,
        _output: Sender<OutputLine>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, ExecOutcome> {
        let copies = self.copies.clone();
        let clock = self.clock.clone();
        let seconds = request.with["seconds"].as_f64().unwrap_or(1.0);
        Box::pin(async move {
            let name = format!("{}#{}", request.step_id, request.attempt);
            {
                let mut c = copies.lock().unwrap();
                c.live += 1;
                c.most = c.most.max(c.live);
                c.log.push(format!("{:?} {name} starts", clock.monotonic()));
            }
            let outcome = tokio::select! {
                () = cancel.cancelled() => ExecOutcome::failed("cancelled", "cancelled"),
                () = clock.sleep(Duration::from_secs_f64(seconds)) => ExecOutcome::succeeded(Map::new()),
            };
            let mut c = copies.lock().unwrap();
            c.live -= 1;
            c.log.push(format!("{:?} {name} ends", clock.monotonic()));
            outcome
        })
    }
}

/// Two replicas `a` and `b` on one memory store with a shared virtual clock.
struct Pair {
    store: MemoryStore,
    a: Runtime,
    /// Kept running for the test's length.
    _b: Runtime,
    fa: Arc<Mutex<Faults>>,
    invariant: Arc<Invariant>,
    copies: Arc<Mutex<Copies>>,
    _dir: tempfile::TempDir,
}

const PACK: &str = "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: dc, version: 1.0.0}\nspec:\n  failure: {retries: {maxAttempts: 3, backoffSeconds: 0}}\n  steps:\n    - {id: work, run: {uses: probe, with: {seconds: 10}}}\n    - {id: after, run: {uses: builtin:noop}}\n";

impl Pair {
    async fn new(fa: Faults, fb: Faults) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let wall = clock.clone();
        let store = MemoryStore::with_time(move || wall.now().millis());
        let invariant = Invariant::new();
        let copies = Arc::new(Mutex::new(Copies::default()));
        let (fa, fb) = (Arc::new(Mutex::new(fa)), Arc::new(Mutex::new(fb)));
        let mut runtimes = Vec::new();
        for (name, faults) in [("a", &fa), ("b", &fb)] {
            let leases = Faulty {
                inner: store.clone(),
                faults: faults.clone(),
                clock: clock.clone(),
                invariant: invariant.clone(),
            };
            let shared = Arc::new(store.clone());
            let stores = Store::from_parts(shared.clone(), shared.clone(), shared)
                .with_leases(Arc::new(leases));
            let mut executors = ExecutorRegistry::with_builtins();
            executors.register(
                "probe",
                Arc::new(Probe {
                    copies: copies.clone(),
                    clock: clock.clone(),
                }),
            );
            let config = ReplicaConfig {
                lease_ttl: TTL,
                renew_every: RENEW,
                claim_every: Duration::from_millis(200),
                ..ReplicaConfig::new(format!("replica-{name}"))
            };
            let runtime = Runtime::start(
                stores,
                executors,
                clock.shared(),
                Arc::new(StaticSecrets::new()),
                RuntimeConfig::new(dir.path().join(name)).with_replica(config),
            )
            .await
            .unwrap();
            runtimes.push((name.to_owned(), runtime));
        }
        invariant.watch(runtimes.clone());
        let b = runtimes.pop().unwrap().1;
        let a = runtimes.pop().unwrap().1;
        Pair {
            store,
            a,
            _b: b,
            fa,
            invariant,
            copies,
            _dir: dir,
        }
    }

    async fn create_on_a(&self) {
        self.a
            .create_run(CreateRun {
                tenant: TENANT.into(),
                run_id: Some(RUN.into()),
                manifest: PACK.into(),
                inputs: Map::new(),
            })
            .await
            .unwrap();
    }

    /// Waits (virtual time) until the run is stored with `status`.
    async fn wait_status(&self, status: RunStatus) {
        for _ in 0..6000 {
            let record = self.store.get_run(TENANT, RUN).await.unwrap();
            if record.is_some_and(|r| r.status == status.as_str()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "run never reached {status:?}; copies: {:#?}",
            self.copies.lock().unwrap().log
        );
    }

    /// Asserts the run finished once and well: the invariant held, two copies of the step
    /// never ran at once, and each step succeeded exactly once.
    async fn assert_clean(&self) {
        self.wait_status(RunStatus::Succeeded).await;
        self.invariant.assert_held();
        {
            let copies = self.copies.lock().unwrap();
            assert_eq!(
                copies.most, 1,
                "two copies of one step ran at once: {:#?}",
                copies.log
            );
        }
        let entries = self.store.load_journal(TENANT, RUN, 0).await.unwrap();
        let mut succeeded: BTreeMap<String, usize> = BTreeMap::new();
        for entry in entries {
            let event: Event = serde_json::from_str(&entry.payload_json).unwrap();
            if let Event::AttemptFinished {
                step_id,
                outcome: AttemptOutcome::Succeeded { .. },
                ..
            } = event
            {
                *succeeded.entry(step_id).or_default() += 1;
            }
        }
        assert_eq!(succeeded.get("work"), Some(&1), "{succeeded:?}");
        assert_eq!(succeeded.get("after"), Some(&1), "{succeeded:?}");
    }
}

/// The claim of A is answered 1 s late; meanwhile A's renewer renews that lease twice and,
/// finding no driver for it, handed it off (old code); B claimed and drove the run; then A
/// adopted its late answer: two drivers. A claim in flight is not an orphan.
#[tokio::test(start_paused = true)]
async fn a_late_claim_answer_is_not_an_orphan() {
    let pair = Pair::new(
        Faults {
            refuse_claim_run: true,
            late_claim_answer: Some(Duration::from_millis(1000)),
            ..Faults::default()
        },
        Faults {
            blind_until: Duration::from_millis(300),
            ..Faults::default()
        },
    )
    .await;
    let sampler = pair.invariant.sampler(Duration::from_millis(5));
    pair.create_on_a().await;
    pair.assert_clean().await;
    sampler.abort();
    // A drove it, once: B never had to take it over.
    let log = pair.copies.lock().unwrap().log.clone();
    assert_eq!(log.len(), 2, "{log:#?}");
    assert!(log[0].ends_with("work#1 starts"), "{log:#?}");
}

/// The claim of A is answered 3 s late while A cannot renew: the lease (2 s) ran out in the
/// store and B took the run. A must not adopt a claim that is stale by its own clock.
#[tokio::test(start_paused = true)]
async fn a_claim_answered_after_its_lease_ran_out_is_not_adopted() {
    let pair = Pair::new(
        Faults {
            refuse_claim_run: true,
            late_claim_answer: Some(Duration::from_millis(3000)),
            renew_fails: Some((Duration::ZERO, Duration::from_secs(5))),
            ..Faults::default()
        },
        Faults {
            blind_until: Duration::from_millis(300),
            ..Faults::default()
        },
    )
    .await;
    let sampler = pair.invariant.sampler(Duration::from_millis(5));
    pair.create_on_a().await;
    pair.assert_clean().await;
    sampler.abort();
}

/// A's renewal is applied but answered 6 s late — longer than the lease plus B's hold: the
/// store lets the lease run out meanwhile and B takes the run over. A must give the run up (and
/// kill its step) by its own clock, before the store's expiry, not when the answer comes; and B
/// must wait the lease out before retrying the step.
#[tokio::test(start_paused = true)]
async fn a_late_renewal_answer_loses_the_lease_by_the_local_deadline() {
    let pair = Pair::new(Faults::default(), Faults::default()).await;
    let sampler = pair.invariant.sampler(Duration::from_millis(5));
    pair.create_on_a().await;
    pair.wait_status(RunStatus::Running).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    {
        let mut fa = pair.fa.lock().unwrap();
        fa.late_renew_answer = Some(Duration::from_millis(6000));
        // A's claimer finds nothing from now on: B, not A, takes the run over.
        fa.blind_until = Duration::from_secs(3600);
    }
    pair.assert_clean().await;
    sampler.abort();
    let log = pair.copies.lock().unwrap().log.clone();
    assert!(log.iter().any(|l| l.contains("work#2 starts")), "{log:#?}");
    assert_eq!(
        pair.a.held_leases(),
        Vec::new(),
        "A still believes it holds the run"
    );
}

/// A's renewer stalls for 6 s before sending a renewal (a partition, a stuck connection): its
/// leases run out in the store and B takes the run over. Same expectations as a late answer:
/// the driver's watchdog does not wait for the renewer.
#[tokio::test(start_paused = true)]
async fn a_stalled_renewal_loses_the_lease_by_the_local_deadline() {
    let pair = Pair::new(Faults::default(), Faults::default()).await;
    let sampler = pair.invariant.sampler(Duration::from_millis(5));
    pair.create_on_a().await;
    pair.wait_status(RunStatus::Running).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    {
        let mut fa = pair.fa.lock().unwrap();
        fa.stalled_renew = Some(Duration::from_millis(6000));
        // A's claimer finds nothing from now on: B, not A, takes the run over.
        fa.blind_until = Duration::from_secs(3600);
    }
    pair.assert_clean().await;
    sampler.abort();
    let log = pair.copies.lock().unwrap().log.clone();
    assert!(log.iter().any(|l| l.contains("work#2 starts")), "{log:#?}");
    assert_eq!(
        pair.a.held_leases(),
        Vec::new(),
        "A still believes it holds the run"
    );
}
