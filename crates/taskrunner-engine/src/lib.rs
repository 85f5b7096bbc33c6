//! The run engine (SPEC §5, §6.2, §8.2–§8.3): a pure, sans-I/O state machine for one run.
//!
//! Events in, commands out: the driver journals an [`Event`], calls [`Run::apply`] with the
//! event's time and the host's [`Secrets`], and performs the returned [`Command`]s. The engine
//! never reads a clock, touches a file, socket or thread, and never stores a secret value. Run
//! state is a pure fold of the journal ([`replay`]); the journal is hash-chained from the plan
//! hash ([`verify`]).
//!
//! Modules: `time` ([`Timestamp`]), `secrets` (masking), `event` (the vocabulary), `state`
//! (the serialisable fold), `run` (the state machine), `view` (`RunStateResponse` data),
//! `journal` (hash chain, verify, replay), `error` (the crate's one error enum).

mod error;
mod event;
mod journal;
mod run;
mod secrets;
mod state;
mod time;
mod view;

pub use error::{DecisionError, Error, JournalError};
pub use event::{
    AttemptOutcome, Command, Decision, Event, Level, LogEntry, OutputResult, RunInfo, RunStatus,
    StepStatus,
};
pub use journal::{Journal, JournalRecord, record_hash, replay, verify};
pub use run::{DecisionCheck, MAP_ITEMS_MAX, RUN_STEPS_MAX, Run};
pub use secrets::{MASK, Masker, SECRET_BYTES_MIN, Secrets};
pub use state::{DecisionRecord, GateWait, HeldDecision, Node, PolicyPhase, RunState};
pub use time::Timestamp;
pub use view::{FailurePolicyView, RunView, StepView};
