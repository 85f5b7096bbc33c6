//! The engine's vocabulary: [`Event`]s in (the journal payload), [`Command`]s out, and the
//! small value types they carry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::Timestamp;

/// Identity of a run, fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInfo {
    pub run_id: String,
    pub tenant: String,
}

/// Run status (SPEC §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    Pending,
    Running,
    AwaitingApproval,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "Pending",
            RunStatus::Running => "Running",
            RunStatus::AwaitingApproval => "AwaitingApproval",
            RunStatus::Succeeded => "Succeeded",
            RunStatus::Failed => "Failed",
            RunStatus::Cancelled => "Cancelled",
        }
    }

    /// Succeeded, Failed or Cancelled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// Step status: the contract's five values; finer state is in `statusReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

impl StepStatus {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "Pending",
            StepStatus::Running => "Running",
            StepStatus::Succeeded => "Succeeded",
            StepStatus::Failed => "Failed",
            StepStatus::Skipped => "Skipped",
        }
    }

    /// Succeeded, Failed or Skipped.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded | StepStatus::Failed | StepStatus::Skipped
        )
    }
}

/// An approval decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Decision {
    Approved,
    Rejected,
    Expired,
}

impl Decision {
    /// `approved` | `rejected` | `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approved => "approved",
            Decision::Rejected => "rejected",
            Decision::Expired => "expired",
        }
    }
}

/// How one attempt of a `Run` step ended, as reported by the driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum AttemptOutcome {
    /// The executor's JSON object (masked by the engine before it is stored).
    Succeeded { outputs: Map<String, Value> },
    /// `reason`: `exit-code`, `timeout`, `cancelled`, `interrupted`, `executor-error`,
    /// `egress-blocked`, `sandbox-unavailable`, `memory-limit`, …
    Failed { reason: String, message: String },
}

/// What happened to a run: the journal payload. State is a pure fold of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    /// The driver begins executing the run.
    Started,
    /// An attempt the engine asked for ended.
    #[serde(rename_all = "camelCase")]
    AttemptFinished {
        step_id: String,
        attempt: u32,
        outcome: AttemptOutcome,
    },
    /// An approval decision accepted by [`crate::Run::check_decision`].
    #[serde(rename_all = "camelCase")]
    ApprovalDecided {
        approval_id: String,
        decision: Decision,
        actor: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
        plan_hash: String,
    },
    /// Somebody asked to cancel the run.
    CancelRequested {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actor: Option<String>,
    },
    /// The process restarted: attempts still running are failed as `interrupted`.
    Recovered,
    /// A timer may be due (sent at or after a [`Command::WakeAt`]).
    Tick,
}

impl Event {
    /// The event with every secret value masked (executor outputs and messages, decision
    /// summaries). Drivers journal this form: secrets never reach the journal (rule 19).
    pub fn masked(&self, secrets: &crate::secrets::Secrets) -> Event {
        match self {
            Event::AttemptFinished {
                step_id,
                attempt,
                outcome,
            } => Event::AttemptFinished {
                step_id: step_id.clone(),
                attempt: *attempt,
                outcome: match outcome {
                    AttemptOutcome::Succeeded { outputs } => AttemptOutcome::Succeeded {
                        outputs: outputs
                            .iter()
                            .map(|(k, v)| (secrets.mask(k), secrets.mask_value(v)))
                            .collect(),
                    },
                    AttemptOutcome::Failed { reason, message } => AttemptOutcome::Failed {
                        reason: reason.clone(),
                        message: secrets.mask(message),
                    },
                },
            },
            Event::ApprovalDecided {
                approval_id,
                decision,
                actor,
                summary,
                plan_hash,
            } => Event::ApprovalDecided {
                approval_id: approval_id.clone(),
                decision: *decision,
                actor: actor.clone(),
                summary: summary.as_ref().map(|s| secrets.mask(s)),
                plan_hash: plan_hash.clone(),
            },
            other => other.clone(),
        }
    }
}

/// Log level of a [`LogEntry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// `debug` | `info` | `warn` | `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One run log entry (the store assigns `sequence`). Message and metadata are already masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    pub timestamp: Timestamp,
    pub level: Level,
    pub event_type: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// What a pack output resolved to when the run finished (SPEC §5.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum OutputResult {
    /// An `object` output: its evaluated (masked) value, or why evaluation failed.
    Object {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A `file` output: the workspace-relative path for the driver to capture, or why the
    /// path was refused (e.g. `path escapes the workspace`).
    File {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl OutputResult {
    /// The output's name.
    pub fn name(&self) -> &str {
        match self {
            OutputResult::Object { name, .. } | OutputResult::File { name, .. } => name,
        }
    }
}

/// What the driver must do. Commands are values; the engine performs nothing.
///
/// Contract: the driver journals the event first (in its [`Event::masked`] form), then
/// performs the commands in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Start one attempt of a `Run` step. `with` is resolved and may contain secret values:
    /// never journal or log it. Report the end with [`Event::AttemptFinished`].
    StartAttempt {
        step_id: String,
        attempt: u32,
        uses: String,
        with: Value,
        /// min(step `timeoutSeconds`, sandbox `quotaSeconds`); report `Failed{reason: "timeout"}`.
        timeout_seconds: Option<u64>,
        /// `tenant/runId/stepId/attempt`.
        idempotency_key: String,
    },
    /// Stop a running attempt (it still ends with an `AttemptFinished`).
    CancelAttempt { step_id: String, attempt: u32 },
    /// The earliest pending timer; send [`Event::Tick`] at or after it. Re-emitted when it changes.
    WakeAt(Timestamp),
    /// Append to the run log.
    Log(LogEntry),
    /// The run reached a terminal status; capture these outputs.
    Finished {
        status: RunStatus,
        outputs: Vec<OutputResult>,
    },
}
