//! What a replica believes it holds, and for how long (issue 10, items 5 and 6).
//!
//! A replica believes it holds a run's lease from the moment a claim answers with it until its
//! **local deadline**: the time (its own monotonic clock) the claim or the last renewal that
//! returned the lease was *sent*, plus the TTL minus a tenth. The store's lease runs from when
//! it received the request, so the local deadline comes first however late the answer arrives
//! (as long as the two clocks' rates differ by less than a tenth): by the time the store lets
//! the lease expire and another replica can claim it, this one has stopped believing.
//!
//! - A claim in flight or answered but not yet adopted is **pending**, never an orphan; a claim
//!   whose deadline passed before its driver started is refused ([`Claims`]).
//! - A driver whose deadline passes, or whose renewal is refused, **loses** its lease
//!   ([`lose`]): first its attempts' process groups are killed (SIGKILL, the kill token in
//!   every `ExecRequest`), then it is logged, then the driver is stopped and leaves the
//!   registry. Each driver has a watchdog on its deadline ([`watch_deadline`]) that does not
//!   depend on the renewer (which may be stuck in a renewal) or on the driver (which may be
//!   stuck in a write).
//! - A replica taking over a run whose journal shows attempts running waits out the lease plus
//!   one renewal interval ([`takeover_hold`]) before retrying them, so the previous holder's
//!   copies are gone (killed by its deadline) before new copies start.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use taskrunner_engine::{Run, StepStatus};
use taskrunner_store::Lease;
use tokio_util::sync::CancellationToken;

use super::ReplicaConfig;
use crate::ports::Clock;
use crate::registry::{Registry, RunKey};

/// When a lease whose claim or renewal was sent at `sent` stops being believed: `sent + ttl -
/// ttl/10` (monotonic).
pub(crate) fn local_deadline(sent: Duration, ttl: Duration) -> Duration {
    sent.saturating_add(ttl.saturating_sub(ttl / 10))
}

/// How long a replica that claimed a run with attempts running waits before retrying them: the
/// lease plus one renewal interval. Zero when nothing was running.
pub(crate) fn takeover_hold(run: &Run, config: &ReplicaConfig) -> Duration {
    let running = run
        .view()
        .steps
        .iter()
        .any(|s| s.status == StepStatus::Running);
    if running {
        config.lease_ttl.saturating_add(config.renew_every)
    } else {
        Duration::ZERO
    }
}

/// A driver's local deadline (monotonic nanoseconds), shared by its handle, its watchdog and
/// the renewer; only ever moved later.
#[derive(Debug)]
pub(crate) struct Deadline(AtomicU64);

impl Deadline {
    /// A deadline at `at`.
    pub(crate) fn at(at: Duration) -> Arc<Deadline> {
        Arc::new(Deadline(AtomicU64::new(nanos(at))))
    }

    /// Never (a runtime that is not a replica).
    pub(crate) fn never() -> Arc<Deadline> {
        Arc::new(Deadline(AtomicU64::new(u64::MAX)))
    }

    /// The deadline.
    pub(crate) fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }

    /// Moves it to `at` if that is later.
    pub(crate) fn extend_to(&self, at: Duration) {
        self.0.fetch_max(nanos(at), Ordering::SeqCst);
    }

    /// Sets it to `at` (a new lease of the same driver).
    pub(crate) fn reset(&self, at: Duration) {
        self.0.store(nanos(at), Ordering::SeqCst);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A lease just claimed, with its local deadline, for a driver to start under.
#[derive(Debug, Clone)]
pub(crate) struct Claimed {
    pub(crate) lease: Lease,
    pub(crate) deadline: Duration,
}

/// Claims in flight and claims answered but not yet adopted by a driver.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    state: Mutex<ClaimState>,
}

#[derive(Debug, Default)]
struct ClaimState {
    in_flight: usize,
    pending: BTreeMap<RunKey, Claimed>,
}

impl Claims {
    fn state(&self) -> MutexGuard<'_, ClaimState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A claim is about to be sent at `sent` (monotonic): until the returned ticket is dropped
    /// the renewer hands no lease off as an orphan (the claim's answer may hold it).
    pub(crate) fn begin(&self, sent: Duration, ttl: Duration) -> ClaimTicket<'_> {
        self.state().in_flight += 1;
        ClaimTicket {
            claims: self,
            deadline: local_deadline(sent, ttl),
        }
    }

    /// Whether a claim is in flight now.
    pub(crate) fn in_flight(&self) -> bool {
        self.state().in_flight > 0
    }

    /// Whether `lease` was claimed and not yet adopted (or refused).
    pub(crate) fn is_pending(&self, lease: &Lease) -> bool {
        self.state()
            .pending
            .get(&key(lease))
            .is_some_and(|c| c.lease.fencing_token == lease.fencing_token)
    }

    /// Takes the pending claim of `lease` (to adopt or refuse it). `None`: not claimed here.
    pub(crate) fn take(&self, lease: &Lease) -> Option<Claimed> {
        let mut state = self.state();
        let k = key(lease);
        if state
            .pending
            .get(&k)
            .is_some_and(|c| c.lease.fencing_token == lease.fencing_token)
        {
            state.pending.remove(&k)
        } else {
            None
        }
    }

    /// A renewal sent at `deadline`'s origin returned these leases: pending ones among them
    /// are believed until `deadline`.
    pub(crate) fn renewed(&self, held: &BTreeMap<RunKey, u64>, deadline: Duration) {
        for (k, claimed) in &mut self.state().pending {
            if held.get(k) == Some(&claimed.lease.fencing_token) {
                claimed.deadline = claimed.deadline.max(deadline);
            }
        }
    }

    /// Pending claims still believed at `now`.
    pub(crate) fn believed(&self, now: Duration) -> Vec<Lease> {
        self.state()
            .pending
            .values()
            .filter(|c| now < c.deadline)
            .map(|c| c.lease.clone())
            .collect()
    }
}

/// A claim in flight (see [`Claims::begin`]).
pub(crate) struct ClaimTicket<'a> {
    claims: &'a Claims,
    deadline: Duration,
}

impl ClaimTicket<'_> {
    /// The claim answered with `leases`: they are pending until adopted or refused.
    pub(crate) fn answered(self, leases: &[Lease]) -> Vec<Claimed> {
        let claimed: Vec<Claimed> = leases
            .iter()
            .map(|lease| Claimed {
                lease: lease.clone(),
                deadline: self.deadline,
            })
            .collect();
        let mut state = self.claims.state();
        for c in &claimed {
            state.pending.insert(key(&c.lease), c.clone());
        }
        claimed
    }
}

impl Drop for ClaimTicket<'_> {
    fn drop(&mut self) {
        let mut state = self.claims.state();
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

fn key(lease: &Lease) -> RunKey {
    (lease.tenant.clone(), lease.run_id.clone())
}

/// What it takes to make a driver give its lease up at once.
#[derive(Debug, Clone)]
pub(crate) struct Loser {
    pub(crate) key: RunKey,
    /// The driver's id in the registry.
    pub(crate) id: u64,
    /// Kills its attempts' process groups (SIGKILL).
    pub(crate) kill: CancellationToken,
    /// Stops the driver.
    pub(crate) stop: CancellationToken,
    pub(crate) token: u64,
}

/// The driver lost its lease (`why`): its attempts' process groups are killed first, then
/// this is logged, then the driver is stopped and leaves the registry (it believes no more).
pub(crate) fn lose(registry: &Registry, loser: &Loser, why: &str) {
    if loser.kill.is_cancelled() {
        return;
    }
    loser.kill.cancel();
    tracing::warn!(
        tenant = %loser.key.0,
        run_id = %loser.key.1,
        fencing_token = loser.token,
        why,
        "replica: lease lost; the run's attempts were killed and its driver stopped"
    );
    metrics::counter!("taskrunner_leases_lost_total").increment(1);
    loser.stop.cancel();
    registry.remove(&loser.key, loser.id);
}

/// A driver's watchdog: when its own clock passes the lease's local deadline, the lease is
/// lost ([`lose`]). Ends when the driver ends (`ended`) or its lease is lost otherwise.
pub(crate) async fn watch_deadline(
    clock: Arc<dyn Clock>,
    registry: Arc<Registry>,
    deadline: Arc<Deadline>,
    loser: Loser,
    ended: CancellationToken,
) {
    loop {
        let now = clock.monotonic();
        let at = deadline.get();
        if now >= at {
            if !ended.is_cancelled() {
                lose(
                    &registry,
                    &loser,
                    "its clock passed the lease's local deadline",
                );
            }
            return;
        }
        tokio::select! {
            () = clock.sleep(at - now) => {}
            () = ended.cancelled() => return,
            () = loser.kill.cancelled() => return,
        }
    }
}
