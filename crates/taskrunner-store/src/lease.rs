//! The work-distribution port (SPEC rule 29): run leases with fencing tokens, and wake-ups.
//!
//! Several replicas share one store; each run is driven by at most one of them at a time, the
//! holder of its **lease**. A lease is claimed for a time-to-live of at most [`LEASE_TTL_MAX`]
//! and renewed well before it runs out; a replica that stalls or dies loses it, and another one
//! takes the run over. Every claim increments the run's **fencing token**; every write of a
//! holder carries its [`Lease`], and the store refuses it with
//! [`StoreError::StaleFencingToken`] once the run has been claimed again, so a stalled replica
//! that wakes up can never write over a run another replica took over.
//!
//! Times are the store's clock (the database server's for PostgreSQL), so replicas' clocks
//! need not agree. Memory and SQLite implement the same contract for their single process.

use std::time::Duration;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::ports::StoreFuture;
use crate::records::{ArtifactRecord, NewLog, Transition};

/// Longest lease (rule 29: a lease lasts at most 10 s).
pub const LEASE_TTL_MAX: Duration = Duration::from_secs(10);
/// Longest lease owner id.
pub const LEASE_OWNER_BYTES_MAX: usize = 256;
/// Most runs claimed by one [`LeaseStore::claim`] call.
pub const CLAIM_LIMIT_MAX: usize = 1000;
/// Name of the PostgreSQL `LISTEN/NOTIFY` channel (payload `tenant/run_id`).
pub const WAKEUP_CHANNEL: &str = "taskrunner_runs";

/// A held lease: the proof of ownership every write of the holder carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// Tenant of the run.
    pub tenant: String,
    /// Run id.
    pub run_id: String,
    /// Who holds it (a replica id, unique per process).
    pub owner: String,
    /// The fencing token: incremented by every claim of the run, never reused.
    pub fencing_token: u64,
    /// When the lease runs out unless renewed (store clock, ms since the Unix epoch).
    pub expires_at_ms: i64,
}

/// What a released run waits for before it can be claimed again by [`LeaseStore::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The run still needs a driver now (graceful shutdown with work in flight): claimable at
    /// once by any replica.
    Handoff,
    /// Nothing to do until its wake time (`next_wake_at_ms`) or until a write that is not
    /// fenced (a decision, a cancel) touches it: the run is parked.
    Park,
}

/// A run that needs a look: created, handed off, or written by someone other than its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wakeup {
    /// Tenant of the run.
    pub tenant: String,
    /// Run id.
    pub run_id: String,
}

impl Wakeup {
    /// The `LISTEN/NOTIFY` payload: `tenant/run_id` (neither contains a slash).
    pub fn payload(&self) -> String {
        format!("{}/{}", self.tenant, self.run_id)
    }

    /// Parses a payload written by [`Wakeup::payload`]; `None` for anything else.
    pub fn parse(payload: &str) -> Option<Wakeup> {
        let (tenant, run_id) = payload.split_once('/')?;
        crate::validate::run_key(tenant, run_id).ok()?;
        Some(Wakeup {
            tenant: tenant.to_owned(),
            run_id: run_id.to_owned(),
        })
    }
}

/// A stream of wake-ups. Best effort: a wake-up may be lost (a dropped connection, a slow
/// reader), so a replica also polls [`LeaseStore::claim`] at least every second.
pub type WakeStream = BoxStream<'static, Wakeup>;

/// Leases on runs, fenced writes and wake-ups.
///
/// A run is **claimable** by [`LeaseStore::claim`] when its status is active and either
/// - nobody holds it and it is not parked (new runs, hand-offs, runs touched by an unfenced
///   write), or it is parked and its `next_wake_at_ms` is due; or
/// - its lease has expired (the holder stalled or died): taken over at once, whatever the wake
///   time, so interrupted attempts are recovered.
pub trait LeaseStore: Send + Sync {
    /// Claims up to `limit` (≤ [`CLAIM_LIMIT_MAX`]) claimable runs for `owner` for `ttl`
    /// (≤ [`LEASE_TTL_MAX`]), oldest wake time first. Two owners never get the same run while
    /// a lease is live; each claim gets a fencing token greater than any before on that run.
    fn claim<'a>(
        &'a self,
        owner: &'a str,
        limit: usize,
        ttl: Duration,
    ) -> StoreFuture<'a, Vec<Lease>>;

    /// Claims one given run (to drive a run just created, or to apply a decision to a parked
    /// run), whether parked or not. `None` when the run is terminal or another owner holds a
    /// live lease on it; `NotFound` when it does not exist. If `owner` already holds a live
    /// lease on it, the lease is renewed and keeps its token; an expired lease of its own is
    /// not renewed but claimed anew, with a new token (see [`LeaseStore::renew`]).
    fn claim_run<'a>(
        &'a self,
        owner: &'a str,
        tenant: &'a str,
        run_id: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, Option<Lease>>;

    /// Extends every live lease `owner` holds to `ttl` from now (one round trip) and returns
    /// them. A lease missing from the answer was lost: taken over, or expired. An expired
    /// lease is never renewed, even when nobody took it over yet: its holder must already have
    /// stopped acting under it (its own clock told it the lease ran out), and reviving it would
    /// leave the run held by a replica that no longer drives it. (Until a claim takes it, its
    /// token still fences writes: the store refuses nothing it would not refuse anyway.)
    fn renew<'a>(&'a self, owner: &'a str, ttl: Duration) -> StoreFuture<'a, Vec<Lease>>;

    /// Gives the run up. `StaleFencingToken` if the lease was already lost (nothing changes).
    fn release<'a>(&'a self, lease: &'a Lease, mode: Release) -> StoreFuture<'a, ()>;

    /// [`crate::RunStore::commit`] by a lease holder: also refused with `StaleFencingToken`
    /// (nothing written) unless `lease` is the run's current lease. `Invalid` when the lease is
    /// for another run than the transition.
    fn commit_fenced<'a>(
        &'a self,
        lease: &'a Lease,
        transition: Transition,
    ) -> StoreFuture<'a, Vec<u64>>;

    /// [`crate::LogStore::append_logs`] by a lease holder (fenced like `commit_fenced`).
    fn append_logs_fenced<'a>(
        &'a self,
        lease: &'a Lease,
        logs: Vec<NewLog>,
    ) -> StoreFuture<'a, Vec<u64>>;

    /// [`crate::ArtifactStore::upsert_artifact`] by a lease holder (fenced like
    /// `commit_fenced`).
    fn upsert_artifact_fenced<'a>(
        &'a self,
        lease: &'a Lease,
        record: ArtifactRecord,
    ) -> StoreFuture<'a, ()>;

    /// Wake-ups from now on: every `create_run`, every `Release::Handoff`, and every unfenced
    /// `commit`/`commit_many` transition (a state change by a non-holder, which also unparks
    /// the run) sends one for its run, from this process or (PostgreSQL) any replica. Log and
    /// artifact writes send none.
    fn wakeups(&self) -> WakeStream;
}

/// Checks `owner`, `limit` and `ttl` of a claim; returns the TTL in milliseconds.
pub fn check_claim(owner: &str, limit: usize, ttl: Duration) -> Result<i64, StoreError> {
    check_owner(owner)?;
    if limit > CLAIM_LIMIT_MAX {
        return Err(StoreError::Invalid(format!(
            "claim limit {limit} is above {CLAIM_LIMIT_MAX}"
        )));
    }
    check_ttl(ttl)
}

/// Checks a lease TTL: more than 0, at most [`LEASE_TTL_MAX`]; returns it in milliseconds.
pub fn check_ttl(ttl: Duration) -> Result<i64, StoreError> {
    if ttl.is_zero() || ttl > LEASE_TTL_MAX {
        return Err(StoreError::Invalid(format!(
            "lease ttl {ttl:?} is not between 1 ms and {LEASE_TTL_MAX:?}"
        )));
    }
    // At most 10 000 ms: always fits.
    Ok(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1))
}

/// Checks a lease owner id: 1..=[`LEASE_OWNER_BYTES_MAX`] bytes of visible ASCII.
pub fn check_owner(owner: &str) -> Result<(), StoreError> {
    let ok = !owner.is_empty()
        && owner.len() <= LEASE_OWNER_BYTES_MAX
        && owner.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "lease owner {owner:?} is not 1 to {LEASE_OWNER_BYTES_MAX} visible ASCII characters"
        )))
    }
}

/// Checks a presented lease before a fenced write (owner, run key, token range).
pub fn check_lease(lease: &Lease) -> Result<(), StoreError> {
    check_owner(&lease.owner)?;
    crate::validate::run_key(&lease.tenant, &lease.run_id)?;
    to_i64_token(lease.fencing_token).map(|_| ())
}

/// A fencing token as stored (signed 64-bit in SQL databases).
pub fn to_i64_token(token: u64) -> Result<i64, StoreError> {
    i64::try_from(token)
        .map_err(|_| StoreError::Invalid(format!("fencing token {token} is out of range")))
}

/// `Invalid` unless the transition is for the leased run.
pub fn check_lease_matches(lease: &Lease, transition: &Transition) -> Result<(), StoreError> {
    if lease.tenant == transition.tenant && lease.run_id == transition.run_id {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "lease for {}/{} presented with a transition of {}/{}",
            lease.tenant, lease.run_id, transition.tenant, transition.run_id
        )))
    }
}

/// The stored lease of a run, as the adapters keep it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseState {
    /// Holder, `None` when free.
    pub owner: Option<String>,
    /// Last token handed out (0: never claimed).
    pub token: u64,
    /// When the holder's lease runs out.
    pub expires_at_ms: Option<i64>,
    /// Released with [`Release::Park`] and not touched since.
    pub parked: bool,
}

impl LeaseState {
    /// Whether `lease` is the current lease (owner and token; an expired lease nobody took
    /// over is still current). Otherwise the `StaleFencingToken` error to return.
    pub fn fence(&self, lease: &Lease) -> Result<(), StoreError> {
        if self.owner.as_deref() == Some(lease.owner.as_str()) && self.token == lease.fencing_token
        {
            Ok(())
        } else {
            Err(StoreError::StaleFencingToken {
                presented: lease.fencing_token,
                current: self.token,
            })
        }
    }

    /// Whether [`LeaseStore::claim`] may take the run at `now_ms` (status checked by caller).
    pub fn claimable(&self, next_wake_at_ms: Option<i64>, now_ms: i64) -> bool {
        match (&self.owner, self.expires_at_ms) {
            (Some(_), Some(expires)) => expires <= now_ms,
            (Some(_), None) => true,
            (None, _) => !self.parked || next_wake_at_ms.is_some_and(|w| w <= now_ms),
        }
    }

    /// Whether `owner` holds a live lease at `now_ms` (renewable, re-claimable with its token).
    pub fn held_by(&self, owner: &str, now_ms: i64) -> bool {
        self.owner.as_deref() == Some(owner) && self.expires_at_ms.is_some_and(|e| e > now_ms)
    }

    /// Whether someone other than `owner` holds a live lease at `now_ms`.
    pub fn held_by_other(&self, owner: &str, now_ms: i64) -> bool {
        match (&self.owner, self.expires_at_ms) {
            (Some(o), Some(expires)) => o != owner && expires > now_ms,
            (Some(o), None) => o != owner,
            (None, _) => false,
        }
    }
}

/// In-process wake-up fan-out for single-process adapters (memory, SQLite).
#[derive(Debug, Clone)]
pub struct WakeHub {
    tx: tokio::sync::broadcast::Sender<Wakeup>,
}

impl Default for WakeHub {
    fn default() -> Self {
        WakeHub {
            tx: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

impl WakeHub {
    /// Sends a wake-up to every current subscriber (none is fine).
    pub fn send(&self, tenant: &str, run_id: &str) {
        let _ = self.tx.send(Wakeup {
            tenant: tenant.to_owned(),
            run_id: run_id.to_owned(),
        });
    }

    /// A stream of the wake-ups sent from now on; a subscriber that lags skips what it missed.
    pub fn subscribe(&self) -> WakeStream {
        let rx = self.tx.subscribe();
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(w) => return Some((w, rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }
}

/// Milliseconds since the Unix epoch on this host (the lease clock of single-process stores).
pub fn system_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakeup_payload_round_trips_and_garbage_is_refused() {
        let w = Wakeup {
            tenant: "acme".to_owned(),
            run_id: "run-1".to_owned(),
        };
        assert_eq!(w.payload(), "acme/run-1");
        assert_eq!(Wakeup::parse(&w.payload()), Some(w));
        for bad in [
            "",
            "acme",
            "acme/",
            "/run",
            "Acme/run",
            "acme/a/b",
            "acme/run 1",
        ] {
            assert_eq!(Wakeup::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ttl_and_owner_limits() {
        assert_eq!(check_ttl(Duration::from_millis(1)), Ok(1));
        assert_eq!(check_ttl(LEASE_TTL_MAX), Ok(10_000));
        assert!(check_ttl(Duration::ZERO).is_err());
        assert!(check_ttl(LEASE_TTL_MAX + Duration::from_millis(1)).is_err());
        assert!(check_owner("replica-1/4242").is_ok());
        assert!(check_owner("").is_err());
        assert!(check_owner("a b").is_err());
        assert!(check_owner(&"x".repeat(LEASE_OWNER_BYTES_MAX + 1)).is_err());
        assert!(to_i64_token(u64::MAX).is_err());
    }

    #[test]
    fn claimable_follows_owner_expiry_and_parking() {
        let free = LeaseState::default();
        assert!(free.claimable(None, 100));
        let parked = LeaseState {
            parked: true,
            ..LeaseState::default()
        };
        assert!(!parked.claimable(None, 100));
        assert!(!parked.claimable(Some(101), 100));
        assert!(parked.claimable(Some(100), 100));
        let held = LeaseState {
            owner: Some("a".to_owned()),
            token: 3,
            expires_at_ms: Some(200),
            parked: false,
        };
        assert!(!held.claimable(None, 199));
        assert!(
            held.claimable(Some(i64::MAX), 200),
            "expired: wake time ignored"
        );
        assert!(held.held_by_other("b", 199));
        assert!(!held.held_by_other("a", 199));
        assert!(!held.held_by_other("b", 200));
        assert!(held.held_by("a", 199));
        assert!(
            !held.held_by("a", 200),
            "expired: no longer held, not renewable"
        );
        assert!(!held.held_by("b", 199));
        assert!(!LeaseState::default().held_by("a", 0));
    }

    #[test]
    fn fence_needs_owner_and_token() {
        let state = LeaseState {
            owner: Some("a".to_owned()),
            token: 3,
            expires_at_ms: Some(0),
            parked: false,
        };
        let lease = Lease {
            tenant: "t".to_owned(),
            run_id: "r".to_owned(),
            owner: "a".to_owned(),
            fencing_token: 3,
            expires_at_ms: 0,
        };
        assert_eq!(
            state.fence(&lease),
            Ok(()),
            "expired but not taken over: still current"
        );
        let old = Lease {
            fencing_token: 2,
            ..lease.clone()
        };
        assert_eq!(
            state.fence(&old),
            Err(StoreError::StaleFencingToken {
                presented: 2,
                current: 3
            })
        );
        let other = Lease {
            owner: "b".to_owned(),
            ..lease
        };
        assert!(state.fence(&other).is_err());
    }
}
