//! The memory store's leases: claims, renewals, releases and fenced writes.

use crate::error::StoreError;
use crate::lease::{self, Lease, LeaseStore, Release, WakeStream};
use crate::ports::StoreFuture;
use crate::records::{ArtifactRecord, NewLog, Transition, status};
use crate::validate;

use super::{Key, MemoryStore, State, ready};

impl LeaseStore for MemoryStore {
    fn claim<'a>(
        &'a self,
        owner: &'a str,
        limit: usize,
        ttl: std::time::Duration,
    ) -> StoreFuture<'a, Vec<Lease>> {
        let result = (|| {
            let ttl_ms = lease::check_claim(owner, limit, ttl)?;
            let now = self.now_ms();
            let mut state = self.lock()?;
            let mut candidates: Vec<(i64, Key)> = state
                .runs
                .iter()
                .filter(|(_, r)| {
                    status::is_active(&r.record.status)
                        && r.lease.claimable(r.record.next_wake_at_ms, now)
                })
                .map(|(k, r)| (r.record.next_wake_at_ms.unwrap_or(i64::MIN), k.clone()))
                .collect();
            candidates.sort();
            let mut out = Vec::new();
            for (_, k) in candidates.into_iter().take(limit) {
                let run = state.runs.get_mut(&k).ok_or(StoreError::NotFound)?;
                out.push(State::take(run, owner, now.saturating_add(ttl_ms)));
            }
            Ok(out)
        })();
        ready(result)
    }

    fn claim_run<'a>(
        &'a self,
        owner: &'a str,
        tenant: &'a str,
        run_id: &'a str,
        ttl: std::time::Duration,
    ) -> StoreFuture<'a, Option<Lease>> {
        let result = (|| {
            let ttl_ms = lease::check_claim(owner, 1, ttl)?;
            validate::run_key(tenant, run_id)?;
            let now = self.now_ms();
            let mut state = self.lock()?;
            let run = state.run_mut(tenant, run_id)?;
            if !status::is_active(&run.record.status) || run.lease.held_by_other(owner, now) {
                return Ok(None);
            }
            let expires = now.saturating_add(ttl_ms);
            if run.lease.held_by(owner, now) {
                run.lease.expires_at_ms = Some(expires);
                return Ok(Some(State::lease_of(run, owner)));
            }
            Ok(Some(State::take(run, owner, expires)))
        })();
        ready(result)
    }

    fn renew<'a>(
        &'a self,
        owner: &'a str,
        ttl: std::time::Duration,
    ) -> StoreFuture<'a, Vec<Lease>> {
        let result = (|| {
            let ttl_ms = lease::check_claim(owner, 0, ttl)?;
            let now = self.now_ms();
            let mut state = self.lock()?;
            let mut out = Vec::new();
            for run in state.runs.values_mut() {
                // An expired lease is not renewed: it may be claimed at any moment.
                if run.lease.held_by(owner, now) {
                    run.lease.expires_at_ms = Some(now.saturating_add(ttl_ms));
                    out.push(State::lease_of(run, owner));
                }
            }
            Ok(out)
        })();
        ready(result)
    }

    fn release<'a>(&'a self, held: &'a Lease, mode: Release) -> StoreFuture<'a, ()> {
        let result = (|| {
            lease::check_lease(held)?;
            let mut state = self.lock()?;
            let run = state.run_mut(&held.tenant, &held.run_id)?;
            run.lease.fence(held)?;
            run.lease.owner = None;
            run.lease.expires_at_ms = None;
            run.lease.parked = mode == Release::Park;
            drop(state);
            if mode == Release::Handoff {
                self.wake.send(&held.tenant, &held.run_id);
            }
            Ok(())
        })();
        ready(result)
    }

    fn commit_fenced<'a>(
        &'a self,
        held: &'a Lease,
        transition: Transition,
    ) -> StoreFuture<'a, Vec<u64>> {
        let result = (|| {
            lease::check_lease(held)?;
            lease::check_lease_matches(held, &transition)?;
            self.lock()?.commit(transition, Some(held))
        })();
        ready(result)
    }

    fn append_logs_fenced<'a>(
        &'a self,
        held: &'a Lease,
        logs: Vec<NewLog>,
    ) -> StoreFuture<'a, Vec<u64>> {
        let result = (|| {
            lease::check_lease(held)?;
            validate::new_logs(&logs)?;
            self.lock()?
                .append_logs(&held.tenant, &held.run_id, logs, Some(held))
        })();
        ready(result)
    }

    fn upsert_artifact_fenced<'a>(
        &'a self,
        held: &'a Lease,
        record: ArtifactRecord,
    ) -> StoreFuture<'a, ()> {
        let result = (|| {
            lease::check_lease(held)?;
            validate::artifact_to_write(&record)?;
            self.lock()?
                .upsert(&held.tenant, &held.run_id, record, Some(held))
        })();
        ready(result)
    }

    fn wakeups(&self) -> WakeStream {
        self.wake.subscribe()
    }
}
