//! Two runtimes as replicas on one store (SPEC rule 29): runs spread over both and finish
//! once; a decision or cancellation reaching the replica that does not drive the run takes
//! effect with the same answers; a replica that shuts down hands its runs to the other.
//!
//! Every test runs on the memory store (two runtimes in one process share it) and on
//! PostgreSQL (a fresh database per test, two store instances = two replicas). Without a
//! reachable PostgreSQL the PostgreSQL half prints that it was skipped — except under
//! `CI=true`, where it fails.
//!
//! Time: the memory half runs in virtual time (`start_paused`): both replicas and the store's
//! lease clock share one [`ManualClock`], so claims, renewals, lease expiry, `builtin:sleep`
//! steps and the polls below cost no real time and happen in the same order however loaded
//! the machine is (on one thread: `start_paused` needs the current-thread runtime). The
//! PostgreSQL half stays in real time, on two worker threads: it waits on sockets (a paused
//! tokio clock would jump to the next timer during every query and expire leases that are
//! fine) and its leases are timed by the server's clock.
//!
//! Throughout every test a sampler checks the replica invariant (`tests/invariant`): at most
//! one replica believes it holds a run's lease at any moment; it is asserted when the cluster
//! is dropped at the end of the test.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod invariant;
#[path = "../../taskrunner-store-postgres/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Map;
use taskrunner_engine::{Decision, Event, RunStatus};
use taskrunner_exec::ExecutorRegistry;
use taskrunner_runtime::{
    Clock, CreateRun, DecisionRequest, ReplicaConfig, Runtime, RuntimeConfig, RuntimeError,
    StaticSecrets, SystemClock,
};
use taskrunner_store::{MemoryStore, Store};
use taskrunner_testkit::ManualClock;
use tokio::time::Instant;

const HEADER: &str =
    "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: rep, version: 1.0.0}\n";
const TENANT: &str = "default";

#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    Postgres,
}

struct Cluster {
    a: Runtime,
    b: Runtime,
    /// The clock of replica B and of the memory store's leases (memory only).
    clock: Option<ManualClock>,
    /// Replica A's clock (memory only): `clock` itself unless the cluster was made with A's
    /// clock apart.
    a_clock: Option<ManualClock>,
    invariant: Arc<invariant::Invariant>,
    sampler: tokio::task::JoinHandle<()>,
    /// Replica A runs on a clock of its own (see [`cluster_with`]).
    a_clock_apart: bool,
    /// A store handle for reading what the replicas wrote.
    reader: Store,
    _dir: tempfile::TempDir,
    _db: Option<support::TestDb>,
}

fn replica(owner: &str) -> ReplicaConfig {
    ReplicaConfig {
        lease_ttl: Duration::from_secs(2),
        renew_every: Duration::from_millis(400),
        claim_every: Duration::from_millis(200),
        claim_batch: 32,
        ..ReplicaConfig::new(ReplicaConfig::unique_owner(owner))
    }
}

async fn runtime(
    store: Store,
    clock: Arc<dyn Clock>,
    dir: &std::path::Path,
    owner: &str,
) -> Runtime {
    Runtime::start(
        store,
        ExecutorRegistry::with_builtins(),
        clock,
        Arc::new(StaticSecrets::new()),
        RuntimeConfig::new(dir.join(format!("ws-{owner}"))).with_replica(replica(owner)),
    )
    .await
    .unwrap()
}

/// Two replicas, or `None` when PostgreSQL is wanted but not reachable (skip notice printed).
async fn cluster(backend: Backend) -> Option<Cluster> {
    cluster_with(backend, false).await
}

/// Two replicas; on the memory store with `a_clock_apart`, replica A gets a clock of its own
/// (started at the same time), so that the test can move B and the store's leases ahead of A.
async fn cluster_with(backend: Backend, a_clock_apart: bool) -> Option<Cluster> {
    let dir = tempfile::tempdir().unwrap();
    let (clock, a_clock) = match backend {
        Backend::Memory => {
            let clock = ManualClock::new();
            let a_clock = if a_clock_apart {
                ManualClock::new()
            } else {
                clock.clone()
            };
            (Some(clock), Some(a_clock))
        }
        Backend::Postgres => (None, None),
    };
    let (sa, sb, reader, db) = match backend {
        Backend::Memory => {
            let lease_clock = clock.clone().unwrap();
            let store = MemoryStore::with_time(move || lease_clock.now().millis());
            (
                Store::new(store.clone()),
                Store::new(store.clone()),
                Store::new(store),
                None,
            )
        }
        Backend::Postgres => {
            if !support::available().await {
                return None;
            }
            let db = support::TestDb::create().await;
            let artifacts = dir.path().join("artifacts");
            (
                Store::new(db.store(&artifacts).await),
                Store::new(db.store(&artifacts).await),
                Store::new(db.store(&artifacts).await),
                Some(db),
            )
        }
    };
    let shared = |clock: &Option<ManualClock>| -> Arc<dyn Clock> {
        match clock {
            Some(clock) => clock.shared(),
            None => Arc::new(SystemClock),
        }
    };
    let a = runtime(sa, shared(&a_clock), dir.path(), "a").await;
    let b = runtime(sb, shared(&clock), dir.path(), "b").await;
    let invariant = invariant::Invariant::new();
    invariant.watch(vec![("a".into(), a.clone()), ("b".into(), b.clone())]);
    let sampler = invariant.sampler(Duration::from_millis(5));
    Some(Cluster {
        a,
        b,
        clock,
        a_clock,
        invariant,
        sampler,
        a_clock_apart,
        reader,
        _dir: dir,
        _db: db,
    })
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.sampler.abort();
        // With A's clock apart, A's clock stands still while B's moves: a replica that cannot
        // see time pass believes in its lease by construction (what that test examines is
        // that the store's fencing keeps it from acting on it), so the invariant is not asked.
        if !std::thread::panicking() && !self.a_clock_apart {
            self.invariant.sample("end of test");
            self.invariant.assert_held();
        }
    }
}

fn create(manifest: &str, run_id: &str) -> CreateRun {
    CreateRun {
        tenant: TENANT.into(),
        run_id: Some(run_id.into()),
        manifest: manifest.into(),
        inputs: Map::new(),
    }
}

/// Polls every [`POLL`] (virtual time on the memory store, so this costs no real time there;
/// a few real milliseconds per poll on PostgreSQL).
const POLL: Duration = Duration::from_millis(5);

/// Waits (up to 60 s, virtual on the memory store) until the stored status of the run is
/// `status`.
async fn wait_status(store: &Store, run_id: &str, status: RunStatus) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = store.runs.get_run(TENANT, run_id).await.unwrap();
        if record.as_ref().is_some_and(|r| r.status == status.as_str()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} never reached {status:?}: {record:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The run's journal, verified against its plan hash; and per step, how many attempts
/// succeeded.
async fn verified_journal(store: &Store, run_id: &str) -> (Vec<Event>, BTreeMap<String, usize>) {
    let (_, records) = taskrunner_runtime::verified_journal(&*store.runs, TENANT, run_id)
        .await
        .unwrap_or_else(|e| panic!("{run_id}: {e}"));
    let mut succeeded = BTreeMap::new();
    for r in &records {
        if let Event::AttemptFinished {
            step_id, outcome, ..
        } = &r.event
            && matches!(outcome, taskrunner_engine::AttemptOutcome::Succeeded { .. })
        {
            *succeeded.entry(step_id.clone()).or_insert(0) += 1;
        }
    }
    (records.into_iter().map(|r| r.event).collect(), succeeded)
}

fn decision(plan_hash: &str, decision: Decision) -> DecisionRequest {
    DecisionRequest {
        decision,
        plan_hash: plan_hash.into(),
        actor: "alice".into(),
        summary: None,
        caller_scopes: None,
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    super::$name(super::Backend::Memory).await;
                }
            )*
        }
        mod postgres {
            $(
                // Real time: see the file's documentation.
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_both_backends!(
    runs_created_on_either_replica_finish_once,
    a_decision_on_the_other_replica_resumes_the_run_with_the_same_answers,
    a_cancellation_on_the_other_replica_stops_the_running_attempt,
    a_decision_while_the_holder_is_busy_is_applied_by_the_holder,
    a_replica_that_shuts_down_hands_its_runs_over,
);

async fn runs_created_on_either_replica_finish_once(backend: Backend) {
    let Some(c) = cluster(backend).await else {
        return;
    };
    let pack = format!(
        "{HEADER}spec:\n  steps:\n    - {{id: s1, run: {{uses: builtin:noop}}}}\n    - {{id: s2, run: {{uses: builtin:echo, with: {{message: hi}}}}}}\n    - {{id: s3, run: {{uses: builtin:noop}}}}\n"
    );
    let ids: Vec<String> = (0..30).map(|i| format!("spread-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let rt = if i % 2 == 0 { &c.a } else { &c.b };
        rt.create_run(create(&pack, id)).await.unwrap();
    }
    for id in &ids {
        wait_status(&c.reader, id, RunStatus::Succeeded).await;
    }
    for id in &ids {
        let (events, succeeded) = verified_journal(&c.reader, id).await;
        assert_eq!(
            succeeded,
            [("s1", 1), ("s2", 1), ("s3", 1)]
                .into_iter()
                .map(|(s, n)| (s.to_owned(), n))
                .collect(),
            "{id}: {events:?}"
        );
        // Either replica reads the same finished state.
        let from_a = c.a.get_run(TENANT, id).await.unwrap().unwrap();
        let from_b = c.b.get_run(TENANT, id).await.unwrap().unwrap();
        assert_eq!(from_a.status, RunStatus::Succeeded);
        assert_eq!(from_b.status, RunStatus::Succeeded);
    }
}

async fn a_decision_on_the_other_replica_resumes_the_run_with_the_same_answers(backend: Backend) {
    let Some(c) = cluster(backend).await else {
        return;
    };
    let pack = format!(
        "{HEADER}spec:\n  approvals: [{{id: go}}, {{id: other}}]\n  steps:\n    - {{id: before, run: {{uses: builtin:noop}}}}\n    - {{id: gate, gate: {{approval: {{id: go}}}}}}\n    - {{id: after, run: {{uses: builtin:echo, with: {{message: shipped}}}}}}\n    - {{id: gate2, gate: {{approval: {{id: other}}}}}}\n"
    );
    let view = c.a.create_run(create(&pack, "gate-1")).await.unwrap();
    let hash = view.plan_hash.clone();
    wait_status(&c.reader, "gate-1", RunStatus::AwaitingApproval).await;
    // Visible on B.
    let seen = c.b.get_run(TENANT, "gate-1").await.unwrap().unwrap();
    assert_eq!(seen.status, RunStatus::AwaitingApproval);
    // Rule 16 order and errors are the same on both replicas.
    for rt in [&c.a, &c.b] {
        let unknown = rt
            .decide(
                TENANT,
                "gate-1",
                "nope",
                decision(&hash, Decision::Approved),
            )
            .await;
        assert!(
            matches!(unknown, Err(RuntimeError::NotFound(_))),
            "{unknown:?}"
        );
        let wrong = rt
            .decide(
                TENANT,
                "gate-1",
                "go",
                decision("sha256:wrong", Decision::Approved),
            )
            .await;
        assert!(
            matches!(wrong, Err(RuntimeError::PlanHashMismatch { .. })),
            "{wrong:?}"
        );
    }
    let answer =
        c.b.decide(TENANT, "gate-1", "go", decision(&hash, Decision::Approved))
            .await
            .unwrap();
    assert_eq!(answer.status, Decision::Approved);
    assert!(answer.resumed);
    // The second gate waits: the run went on from the first one, once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = c.a.get_run(TENANT, "gate-1").await.unwrap().unwrap();
        let after = view.steps.iter().find(|s| s.step_id == "after").unwrap();
        if after.status == taskrunner_engine::StepStatus::Succeeded
            && view.status == RunStatus::AwaitingApproval
        {
            break;
        }
        assert!(Instant::now() < deadline, "never reached gate2: {view:#?}");
        tokio::time::sleep(POLL).await;
    }
    // A repeat of the same decision answers the same on either replica.
    for rt in [&c.a, &c.b] {
        let again = rt
            .decide(TENANT, "gate-1", "go", decision(&hash, Decision::Approved))
            .await
            .unwrap();
        assert_eq!(again, answer);
    }
    let rejected =
        c.a.decide(
            TENANT,
            "gate-1",
            "other",
            decision(&hash, Decision::Rejected),
        )
        .await
        .unwrap();
    assert_eq!(rejected.status, Decision::Rejected);
    wait_status(&c.reader, "gate-1", RunStatus::Failed).await;
    let (_, succeeded) = verified_journal(&c.reader, "gate-1").await;
    assert_eq!(succeeded.get("after"), Some(&1));
    assert!(matches!(
        c.b.decide(TENANT, "gate-1", "go", decision(&hash, Decision::Rejected))
            .await,
        Err(RuntimeError::RunTerminal(_) | RuntimeError::AlreadyDecided(_))
    ));
}

async fn a_cancellation_on_the_other_replica_stops_the_running_attempt(backend: Backend) {
    let Some(c) = cluster(backend).await else {
        return;
    };
    let pack = format!(
        "{HEADER}spec:\n  steps:\n    - {{id: nap, run: {{uses: builtin:sleep, with: {{seconds: 120}}}}}}\n"
    );
    c.a.create_run(create(&pack, "long-1")).await.unwrap();
    wait_status(&c.reader, "long-1", RunStatus::Running).await;
    // A drives it (it created and claimed it): B journals the cancellation, A applies it
    // and kills the attempt — long before the 120 s sleep would end.
    let status =
        c.b.cancel(TENANT, "long-1", Some("bob".into()))
            .await
            .unwrap();
    assert!(matches!(status, RunStatus::Running | RunStatus::Cancelled));
    wait_status(&c.reader, "long-1", RunStatus::Cancelled).await;
    assert_eq!(
        c.a.cancel(TENANT, "long-1", None).await.unwrap(),
        RunStatus::Cancelled
    );
    let (events, succeeded) = verified_journal(&c.reader, "long-1").await;
    assert!(succeeded.is_empty(), "{events:?}");
    assert!(
        events.iter().any(
            |e| matches!(e, Event::CancelRequested { actor } if actor.as_deref() == Some("bob"))
        )
    );
}

async fn a_decision_while_the_holder_is_busy_is_applied_by_the_holder(backend: Backend) {
    let Some(c) = cluster(backend).await else {
        return;
    };
    // The gate waits while a sibling step keeps A busy (and holding the lease) for 4 s.
    let pack = format!(
        "{HEADER}spec:\n  approvals: [{{id: go}}]\n  steps:\n    - id: both\n      parallel:\n        steps:\n          - {{id: nap, run: {{uses: builtin:sleep, with: {{seconds: 4}}}}}}\n          - {{id: gate, gate: {{approval: {{id: go}}}}}}\n    - {{id: after, run: {{uses: builtin:noop}}}}\n"
    );
    let view = c.a.create_run(create(&pack, "busy-1")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = c.b.get_run(TENANT, "busy-1").await.unwrap().unwrap();
        let gate = v.steps.iter().find(|s| s.step_id == "gate").unwrap();
        if gate.status_reason.as_deref() == Some("awaiting-approval") {
            break;
        }
        assert!(Instant::now() < deadline, "gate never waited: {v:#?}");
        tokio::time::sleep(POLL).await;
    }
    let answer =
        c.b.decide(
            TENANT,
            "busy-1",
            "go",
            decision(&view.plan_hash, Decision::Approved),
        )
        .await
        .unwrap();
    assert!(answer.resumed);
    wait_status(&c.reader, "busy-1", RunStatus::Succeeded).await;
    let (events, succeeded) = verified_journal(&c.reader, "busy-1").await;
    assert_eq!(succeeded.get("nap"), Some(&1), "{events:?}");
    assert_eq!(succeeded.get("after"), Some(&1), "{events:?}");
    let decided = events
        .iter()
        .filter(|e| matches!(e, Event::ApprovalDecided { .. }))
        .count();
    assert_eq!(decided, 1, "{events:?}");
}

async fn a_replica_that_shuts_down_hands_its_runs_over(backend: Backend) {
    let Some(c) = cluster(backend).await else {
        return;
    };
    let pack = format!(
        "{HEADER}spec:\n  failure: {{retries: {{maxAttempts: 5, backoffSeconds: 0}}}}\n  steps:\n    - {{id: nap, run: {{uses: builtin:sleep, with: {{seconds: 1}}}}}}\n    - {{id: s2, run: {{uses: builtin:noop}}}}\n"
    );
    let ids: Vec<String> = (0..20).map(|i| format!("handoff-{i}")).collect();
    for id in &ids {
        c.a.create_run(create(&pack, id)).await.unwrap();
    }
    wait_status(&c.reader, &ids[0], RunStatus::Running).await;
    c.a.shutdown_gracefully().await;
    for id in &ids {
        wait_status(&c.reader, id, RunStatus::Succeeded).await;
        let (events, succeeded) = verified_journal(&c.reader, id).await;
        assert_eq!(succeeded.get("nap"), Some(&1), "{id}: {events:?}");
        assert_eq!(succeeded.get("s2"), Some(&1), "{id}: {events:?}");
    }
    // A handed off: B recovered runs whose attempts A had started.
    let mut recovered = 0;
    for id in &ids {
        let (events, _) = verified_journal(&c.reader, id).await;
        recovered += usize::from(events.contains(&Event::Recovered));
    }
    assert!(recovered > 0, "no run was taken over by B");
}

/// Lease renewal and expiry, exactly, in virtual time (memory store; a PostgreSQL lease is
/// timed by the server's clock, which a test cannot move). Replica A drives a long step and
/// keeps its lease by renewing it: B never takes the run, however long A holds it. Then A
/// stalls: B's and the store's clock jump past the lease's end while A's stands still (a
/// paused VM, a long GC pause). B claims the expired lease within its claim interval and
/// recovers the run; A's next renewal no longer holds the run, so A stops its driver at once;
/// the run finishes once, under B, with a journal that verifies.
#[tokio::test(start_paused = true)]
async fn a_lease_is_renewed_while_held_and_taken_over_once_it_expires() {
    let c = cluster_with(Backend::Memory, true).await.unwrap();
    let (clock, a_clock) = (c.clock.clone().unwrap(), c.a_clock.clone().unwrap());
    let config = replica("x");
    let pack = format!(
        "{HEADER}spec:\n  failure: {{retries: {{maxAttempts: 2, backoffSeconds: 0}}}}\n  steps:\n    - {{id: nap, run: {{uses: builtin:sleep, with: {{seconds: 30}}}}}}\n    - {{id: s2, run: {{uses: builtin:noop}}}}\n"
    );
    // Two attempts: the one A was running when it stalled is recorded as interrupted.
    c.a.create_run(create(&pack, "stall-1")).await.unwrap();
    let mut watch =
        c.a.watch(TENANT, "stall-1")
            .expect("A drives the run it created");
    while watch.borrow_and_update().running_attempts == 0 {
        watch.changed().await.unwrap();
    }

    // Renewal: five lease lifetimes pass; A still drives, B never took the run over. (Plus
    // 100 ms: the stall below then falls between two claims of A, which would otherwise race
    // B's claim at the same instant.)
    let held_from = clock.now();
    tokio::time::sleep(config.lease_ttl * 5 + Duration::from_millis(100)).await;
    assert_eq!(
        clock.now().millis() - held_from.millis(),
        10_100,
        "virtual time is exact"
    );
    assert!(
        c.a.watch(TENANT, "stall-1").is_some(),
        "A lost a renewed lease"
    );
    assert!(
        c.b.watch(TENANT, "stall-1").is_none(),
        "B took a renewed lease"
    );
    let (events, _) = verified_journal(&c.reader, "stall-1").await;
    assert!(!events.contains(&Event::Recovered), "{events:?}");

    // Expiry: B and the store jump a lease lifetime and a bit past A.
    let stalled_at = clock.now();
    clock.advance(config.lease_ttl + Duration::from_millis(500));
    let mut waited = Duration::ZERO;
    while c.b.watch(TENANT, "stall-1").is_none() {
        assert!(
            waited <= config.claim_every,
            "B did not claim the expired lease within claim_every"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
        waited += Duration::from_millis(1);
    }
    // A learns it lost the run at its next renewal, and stops driving it.
    let mut waited = Duration::ZERO;
    while c.a.watch(TENANT, "stall-1").is_some() {
        assert!(
            waited <= config.renew_every + Duration::from_millis(50),
            "A still drives a run whose lease B took"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
        waited += Duration::from_millis(1);
    }
    // A's clock stood still: it is now behind B's by the jump.
    assert!(clock.now().millis() - a_clock.now().millis() >= 2_500);

    wait_status(&c.reader, "stall-1", RunStatus::Succeeded).await;
    let entries = c
        .reader
        .runs
        .load_journal(TENANT, "stall-1", 0)
        .await
        .unwrap();
    let recovered: Vec<i64> = entries
        .iter()
        .filter(|e| serde_json::from_str::<Event>(&e.payload_json).unwrap() == Event::Recovered)
        .map(|e| e.at_ms)
        .collect();
    assert_eq!(recovered.len(), 1, "{entries:?}");
    // B claimed the run right at the jump (the advance woke its claimer), at the latest one
    // claim interval later; it found an attempt running, so it waited out A's lease plus one
    // renewal interval before recovering (and retrying) it.
    let hold = i64::try_from((config.lease_ttl + config.renew_every).as_millis()).unwrap();
    let jumped_to = stalled_at.millis() + 2_500 + hold;
    let claim_every = i64::try_from(config.claim_every.as_millis()).unwrap();
    assert!(
        (jumped_to..=jumped_to + claim_every).contains(&recovered[0]),
        "recovered at {} after a jump to {jumped_to}",
        recovered[0]
    );
    let (events, succeeded) = verified_journal(&c.reader, "stall-1").await;
    assert_eq!(succeeded.get("nap"), Some(&1), "{events:?}");
    assert_eq!(succeeded.get("s2"), Some(&1), "{events:?}");
    assert_eq!(
        c.a.get_run(TENANT, "stall-1")
            .await
            .unwrap()
            .unwrap()
            .status,
        RunStatus::Succeeded
    );
}
