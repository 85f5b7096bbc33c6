//! The async runtime (SPEC §5, §6.2): drives the pure engine with a store, executors, a clock
//! and a secret provider. This is the embedding API: build a [`Runtime`] and create runs, read
//! their state, stream their logs, decide approvals and cancel.
//!
//! Owns: persist-before-act ordering, per-run serialisation of events, timers, executor
//! attempts and their output lines, artifact capture, recovery on start, and — as one of
//! several replicas on one store — run leases (claim, renew, fenced writes, release). Knows no HTTP, no
//! config files, no signals (those are `bins/`).

mod actor;
mod admission;
mod api;
mod decision;
mod error;
mod output;
mod ports;
mod records;
mod registry;
mod render;
mod replica;
mod runtime;
mod shared;
mod writer;

pub use api::{
    CreateRun, DecisionOutcome, DecisionRequest, RunSnapshot, RuntimeConfig, SECRET_BYTES_MIN,
    check_run_id, check_tenant, codes,
};
pub use error::RuntimeError;
pub use ports::{
    ChainedSecrets, Clock, DirSecrets, EnvSecrets, SecretProvider, SleepFuture, StaticSecrets,
    SystemClock,
};
pub use render::log_entry_json;
pub use replica::{CLAIM_EVERY_MAX, MAX_DRIVERS_MAX, RENEW_EVERY_MAX, ReplicaConfig};
pub use runtime::Runtime;
