//! The async runtime (SPEC §5, §6.2): drives the pure engine with a store, executors, a clock
//! and a secret provider. This is the embedding API: build a [`Runtime`] and create runs, read
//! their state, stream their logs, decide approvals and cancel.
//!
//! Owns: persist-before-act ordering, per-run serialisation of events, timers, executor
//! attempts and their output lines, artifact capture, recovery on start, and — as one of
//! several replicas on one store — run leases (claim, renew, fenced writes, release). Knows no HTTP, no
//! config files, no signals (those are `bins/`).
//!
//! **Embedding needs this one crate** (plus `tokio`): it re-exports the executor port and
//! registry ([`exec`]), the store port and the in-memory store ([`store`]; the durable adapters
//! are `taskrunner-store-sqlite` and `taskrunner-store-postgres`), decisions, statuses and views
//! of the engine, the cancellation token executors receive, and `serde_json` (requests and
//! outputs are JSON). The README's "Embedding" section is compiled and run as a doctest.

#![warn(missing_docs)]

mod actor;
mod admission;
mod api;
mod artifact_secrets;
mod decision;
mod error;
mod evidence;
mod ledger;
mod output;
mod plans;
mod ports;
mod records;
mod registry;
mod render;
mod replica;
mod runtime;
mod shared;
mod views;
mod writer;

pub use api::{
    CreateRun, DecisionOutcome, DecisionRequest, RunSnapshot, RuntimeConfig, SECRET_BYTES_MIN,
    check_run_id, check_tenant, codes,
};
pub use error::RuntimeError;
pub use evidence::{EvidenceSource, evidence_source};
pub use ledger::{
    LedgerDecision, LedgerEntry, LedgerPage, LedgerQuery, LedgerStatus, approval_ledger,
};
pub use plans::{StoredPlan, approvals_all_approved};
pub use ports::{
    ChainedSecrets, Clock, DirSecrets, EnvSecrets, SecretProvider, SleepFuture, StaticSecrets,
    SystemClock,
};
pub use records::{from_entry as journal_record, verified_journal};
pub use render::log_entry_json;
pub use replica::{CLAIM_EVERY_MAX, MAX_DRIVERS_MAX, RENEW_EVERY_MAX, ReplicaConfig};
pub use runtime::Runtime;
pub use views::{Artifact, ArtifactKind, ArtifactStatus, RunPage, RunSummary};

/// JSON, as requests, inputs and step outputs are.
pub use serde_json;
/// What the engine answers: decisions, statuses, a run's view and time stamps.
pub use taskrunner_engine::{Decision, RunStatus, RunView, StepStatus, StepView, Timestamp};
/// The plan's error type, as [`RuntimeError::Plan`] carries it, and its diagnostics; the plan
/// itself, as [`Runtime::run_plan_decoded`] answers it.
pub use taskrunner_plan::{Diagnostic, Diagnostics, Plan, PlanError};
/// Cancels an executor's attempt (the run was cancelled, or its step timed out).
pub use tokio_util::sync::CancellationToken;

/// Executors: the port a host implements for its own `uses`, the registry with the built-ins,
/// and what an attempt receives and answers.
pub mod exec {
    pub use futures::future::BoxFuture;
    pub use taskrunner_exec::{
        ExecOutcome, ExecRequest, Executor, ExecutorRegistry, NetworkMode, OutputLine,
        OutputStream, SandboxSpec,
    };
}

/// Storage: the ports a store implements, the bundle the runtime is built from, the in-memory
/// store, and the records the log API answers with.
pub mod store {
    pub use taskrunner_store::{
        ArtifactStore, Lease, LeaseStore, ListQuery, LogRecord, LogStore, MemoryStore, RunStore,
        Store, StoreError,
    };
}

/// The README's embedding example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
mod readme {}
