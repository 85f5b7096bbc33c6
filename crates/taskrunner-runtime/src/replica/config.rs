//! The replica settings ([`ReplicaConfig`]) and their limits (SPEC rule 29).

use std::time::Duration;

use taskrunner_store::{CLAIM_LIMIT_MAX, LEASE_TTL_MAX, check_owner};

use crate::error::RuntimeError;

/// Longest renewal interval (rule 29: a lease is renewed at least every 3 s).
pub const RENEW_EVERY_MAX: Duration = Duration::from_secs(3);
/// Pause before renewing again after a renewal failed (the database away): the leases are
/// renewed as soon as it is back, not a whole renewal interval later, when they may have
/// expired on the server meanwhile.
pub(crate) const RENEW_RETRY: Duration = Duration::from_millis(250);
/// Longest claim interval (an expired lease is taken over within 2 s, rule 29).
pub const CLAIM_EVERY_MAX: Duration = Duration::from_secs(1);

/// How a runtime drives runs as one of several replicas on one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// Lease owner id, unique per process (see [`ReplicaConfig::unique_owner`]); reusing one
    /// after a restart would let the new process renew the old one's leases.
    pub owner: String,
    /// Lease time-to-live, 1 ms..=10 s.
    pub lease_ttl: Duration,
    /// Renewal interval: at most 3 s and at most half the TTL.
    pub renew_every: Duration,
    /// How often claimable runs are looked for (besides wake-ups), at most 1 s.
    pub claim_every: Duration,
    /// Most runs taken by one claim, 1..=1000.
    pub claim_batch: usize,
    /// Most runs driven at once (runs parked at a gate do not count), 1..=100,000. Beyond it
    /// new runs wait in the store, `Pending`, until a driver ends here or another replica has
    /// room: every held lease is renewed every `renew_every`, so holding fewer keeps renewals
    /// cheap and shares the work between replicas.
    pub max_drivers: usize,
}

/// Largest `max_drivers`.
pub const MAX_DRIVERS_MAX: usize = 100_000;

impl ReplicaConfig {
    /// The rule-29 defaults: 10 s leases renewed every 3 s, claims every second, 64 at a time.
    pub fn new(owner: impl Into<String>) -> ReplicaConfig {
        ReplicaConfig {
            owner: owner.into(),
            lease_ttl: LEASE_TTL_MAX,
            renew_every: RENEW_EVERY_MAX,
            claim_every: CLAIM_EVERY_MAX,
            claim_batch: 64,
            max_drivers: 256,
        }
    }

    /// An owner id unique to this call: `<name>/<pid>/<random>-<n>` (the name is cut to 64
    /// characters and anything but ASCII letters, digits, `.`, `_` and `-` dropped; `<random>`
    /// is 64 bits from the OS's random source, so a restarted process that gets the same pid
    /// still differs; `<n>` counts the calls in this process). No clock is read.
    pub fn unique_owner(name: &str) -> String {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .take(64)
            .collect();
        // Randomly keyed by the standard library (seeded from the OS once per thread).
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let n = CALLS.fetch_add(1, Ordering::Relaxed);
        let name = if name.is_empty() { "taskrunner" } else { &name };
        format!("{name}/{}/{random:016x}-{n}", std::process::id())
    }

    /// Refuses settings that break rule 29 or the store's limits, naming the field.
    pub fn check(&self) -> Result<(), RuntimeError> {
        let bad = |what: String| Err(RuntimeError::BadRequest(what));
        check_owner(&self.owner).map_err(|e| RuntimeError::BadRequest(e.to_string()))?;
        if self.lease_ttl.is_zero() || self.lease_ttl > LEASE_TTL_MAX {
            return bad(format!(
                "lease_ttl {:?} must be between 1 ms and {LEASE_TTL_MAX:?}",
                self.lease_ttl
            ));
        }
        if self.renew_every.is_zero()
            || self.renew_every > RENEW_EVERY_MAX
            || self.renew_every > self.lease_ttl / 2
        {
            return bad(format!(
                "renew_every {:?} must be more than 0, at most {RENEW_EVERY_MAX:?} and at most \
                 half of lease_ttl {:?}",
                self.renew_every, self.lease_ttl
            ));
        }
        if self.claim_every.is_zero() || self.claim_every > CLAIM_EVERY_MAX {
            return bad(format!(
                "claim_every {:?} must be more than 0 and at most {CLAIM_EVERY_MAX:?}",
                self.claim_every
            ));
        }
        if self.claim_batch == 0 || self.claim_batch > CLAIM_LIMIT_MAX {
            return bad(format!(
                "claim_batch {} must be 1 to {CLAIM_LIMIT_MAX}",
                self.claim_batch
            ));
        }
        if self.max_drivers == 0 || self.max_drivers > MAX_DRIVERS_MAX {
            return bad(format!(
                "max_drivers {} must be 1 to {MAX_DRIVERS_MAX}",
                self.max_drivers
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_rule_29_and_limits_are_named() {
        let config = ReplicaConfig::new("replica-a");
        assert_eq!(config.check().ok(), Some(()));
        let too_long = ReplicaConfig {
            lease_ttl: Duration::from_secs(11),
            ..config.clone()
        };
        assert!(
            too_long
                .check()
                .unwrap_err()
                .to_string()
                .contains("lease_ttl")
        );
        let slow_renew = ReplicaConfig {
            lease_ttl: Duration::from_secs(4),
            renew_every: Duration::from_secs(3),
            ..config.clone()
        };
        assert!(
            slow_renew
                .check()
                .unwrap_err()
                .to_string()
                .contains("renew_every")
        );
        let slow_claim = ReplicaConfig {
            claim_every: Duration::from_secs(2),
            ..config.clone()
        };
        assert!(
            slow_claim
                .check()
                .unwrap_err()
                .to_string()
                .contains("claim_every")
        );
        let no_batch = ReplicaConfig {
            claim_batch: 0,
            ..config.clone()
        };
        assert!(
            no_batch
                .check()
                .unwrap_err()
                .to_string()
                .contains("claim_batch")
        );
        let no_drivers = ReplicaConfig {
            max_drivers: 0,
            ..config.clone()
        };
        assert!(
            no_drivers
                .check()
                .unwrap_err()
                .to_string()
                .contains("max_drivers")
        );
        let bad_owner = ReplicaConfig::new("a b");
        assert!(bad_owner.check().is_err());
    }

    #[test]
    fn unique_owners_are_valid_and_differ() {
        let a = ReplicaConfig::unique_owner("host one!");
        let b = ReplicaConfig::unique_owner("host one!");
        assert!(a.starts_with("hostone/"), "{a}");
        assert_ne!(a, b);
        assert!(check_owner(&a).is_ok());
        assert!(ReplicaConfig::unique_owner("").starts_with("taskrunner/"));
    }
}
