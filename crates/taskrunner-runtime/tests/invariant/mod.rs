//! The replica invariant (issue 10, item 5), shared by the runtime's replica tests: at any
//! moment at most one replica believes it holds a run's lease (`Runtime::held_leases`: the
//! leases it drives or has claimed, whose local deadline has not passed), and a lease a replica
//! believes it holds carries the run's current fencing token (the highest one the store issued,
//! when the test sees the claims).
//!
//! [`Invariant::sample`] checks it once; tests call it from a sampling task and, where they
//! wrap the lease port, on every lease call. Violations are collected and asserted at the end
//! ([`Invariant::assert_held`]), so a test reports the first one with its context.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use taskrunner_runtime::Runtime;
use taskrunner_runtime::store::Lease;

/// `(tenant, run_id)`.
type RunKey = (String, String);

/// The invariant over a set of replicas.
#[derive(Default)]
pub struct Invariant {
    replicas: OnceLock<Vec<(String, Runtime)>>,
    /// Highest fencing token issued per run (seen through wrapped lease ports).
    tokens: Mutex<BTreeMap<RunKey, u64>>,
    violations: Mutex<Vec<String>>,
    samples: AtomicUsize,
}

impl Invariant {
    pub fn new() -> Arc<Invariant> {
        Arc::new(Invariant::default())
    }

    /// The replicas to watch (once), by name.
    pub fn watch(&self, replicas: Vec<(String, Runtime)>) {
        let _ = self.replicas.set(replicas);
    }

    /// A claim answered with `lease`: its token is now the run's current one.
    pub fn issued(&self, lease: &Lease) {
        let mut tokens = self.tokens.lock().unwrap();
        let entry = tokens
            .entry((lease.tenant.clone(), lease.run_id.clone()))
            .or_insert(0);
        *entry = (*entry).max(lease.fencing_token);
    }

    /// Checks the invariant now; records a violation (with `context`) if it does not hold.
    pub fn sample(&self, context: &str) {
        let Some(replicas) = self.replicas.get() else {
            return;
        };
        self.samples.fetch_add(1, Ordering::Relaxed);
        let mut believers: BTreeMap<RunKey, Vec<(String, u64)>> = BTreeMap::new();
        for (name, runtime) in replicas {
            for lease in runtime.held_leases() {
                believers
                    .entry((lease.tenant.clone(), lease.run_id.clone()))
                    .or_default()
                    .push((name.clone(), lease.fencing_token));
            }
        }
        let tokens = self.tokens.lock().unwrap().clone();
        let mut violations = self.violations.lock().unwrap();
        for (key, who) in believers {
            if who.len() > 1 {
                violations.push(format!(
                    "{context}: run {} believed held by {} replicas at once: {who:?}",
                    key.1,
                    who.len()
                ));
            }
            if let Some(current) = tokens.get(&key) {
                for (name, token) in &who {
                    if token != current {
                        violations.push(format!(
                            "{context}: {name} believes it holds run {} with token {token}, \
                             the current token is {current}",
                            key.1
                        ));
                    }
                }
            }
        }
    }

    /// Samples every `every` until the returned task is aborted.
    pub fn sampler(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.sample("sampler");
                tokio::time::sleep(every).await;
            }
        })
    }

    /// How many samples were taken.
    pub fn samples(&self) -> usize {
        self.samples.load(Ordering::Relaxed)
    }

    /// The violations seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    /// Fails with the first violations, if any; also fails when nothing was sampled.
    pub fn assert_held(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "replica invariant violated {} times; first: {:#?}",
            violations.len(),
            &violations[..violations.len().min(5)]
        );
        assert!(self.samples() > 0, "the invariant was never sampled");
    }
}
