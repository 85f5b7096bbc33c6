//! The values that cross the executor port: [`ExecRequest`] in, [`OutputLine`]s and one
//! [`ExecOutcome`] out, and the stable failure [`reason`]s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::error::ExecError;
use crate::launcher::SandboxSpec;

/// One attempt of one `run` step, as the runtime hands it to an executor.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// Tenant of the run.
    pub tenant: String,
    /// Run id.
    pub run_id: String,
    /// Step id (iteration-qualified, e.g. `m[1]::leaf`).
    pub step_id: String,
    /// Attempt number, starting at 1.
    pub attempt: u32,
    /// `tenant/runId/stepId/attempt` (rule 22).
    pub idempotency_key: String,
    /// The executor name, e.g. `builtin:shell`.
    pub uses: String,
    /// Resolved parameters. May contain secret values: never log or persist this.
    pub with: Value,
    /// The run's private workspace directory (it exists).
    pub workspace: PathBuf,
    /// Wall-time limit of the attempt; `None` = unlimited.
    pub timeout: Option<Duration>,
    /// Secret values to mask (verbatim occurrences become `***`) in output lines and outputs.
    pub secrets: Vec<String>,
    /// The isolation the pack asks for (`spec.sandbox`); process executors run under it and
    /// `builtin:http` enforces its egress allowlist.
    pub sandbox: SandboxSpec,
    /// The kill token: cancelled when the runtime must stop this attempt at once, without the
    /// SIGTERM grace of a cancellation (its replica lost the run's lease and another replica
    /// may retry the step). Process executors then SIGKILL the whole process group (and
    /// cgroup); a fresh token that is never cancelled asks for nothing.
    pub kill: CancellationToken,
}

/// Which stream of the step's process a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutputStream {
    /// Standard output (logged at `info`).
    Stdout,
    /// Standard error (logged at `warn`).
    Stderr,
    /// A line from the sandbox about the attempt (how each control is enforced, or a loud
    /// warning that one is not); its `metadata` says more.
    Sandbox,
}

/// One complete, masked line a step printed (without its newline). A line longer than
/// [`crate::LINE_BYTES_MAX`] arrives as several `OutputLine`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// The stream the line was written to.
    pub stream: OutputStream,
    /// The text, with secrets masked and invalid UTF-8 replaced by U+FFFD.
    pub line: String,
    /// Extra log metadata (string values); empty for process output.
    pub metadata: BTreeMap<String, String>,
}

impl OutputLine {
    /// A line without metadata.
    pub fn new(stream: OutputStream, line: impl Into<String>) -> OutputLine {
        OutputLine {
            stream,
            line: line.into(),
            metadata: BTreeMap::new(),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecOutcome {
    /// The attempt succeeded with these (masked) outputs.
    Succeeded {
        /// The step's outputs (`steps.<id>.outputs`).
        outputs: Map<String, Value>,
    },
    /// The attempt failed.
    Failed {
        /// One of the [`reason`] constants.
        reason: String,
        /// Human-readable detail (lowercase, no trailing period).
        message: String,
        /// Whatever outputs are known (e.g. `exitCode`), masked.
        outputs: Map<String, Value>,
    },
}

impl ExecOutcome {
    /// A success with no outputs.
    pub fn succeeded(outputs: Map<String, Value>) -> ExecOutcome {
        ExecOutcome::Succeeded { outputs }
    }

    /// A failure without outputs.
    pub fn failed(reason: &str, message: impl Into<String>) -> ExecOutcome {
        ExecOutcome::Failed {
            reason: reason.to_owned(),
            message: message.into(),
            outputs: Map::new(),
        }
    }

    /// True for `Succeeded`.
    pub fn is_success(&self) -> bool {
        matches!(self, ExecOutcome::Succeeded { .. })
    }

    /// The failure reason, or `None` for a success.
    pub fn failure_reason(&self) -> Option<&str> {
        match self {
            ExecOutcome::Succeeded { .. } => None,
            ExecOutcome::Failed { reason, .. } => Some(reason),
        }
    }

    /// The outputs, whichever way the attempt ended.
    pub fn outputs(&self) -> &Map<String, Value> {
        match self {
            ExecOutcome::Succeeded { outputs } | ExecOutcome::Failed { outputs, .. } => outputs,
        }
    }
}

impl From<ExecError> for ExecOutcome {
    fn from(error: ExecError) -> ExecOutcome {
        ExecOutcome::failed(error.reason(), error.to_string())
    }
}

/// Stable failure reasons (`ExecOutcome::Failed::reason`, the step's `statusReason`).
pub mod reason {
    /// The process exited with a non-zero code or was killed by a signal it did not get from us.
    pub const EXIT_CODE: &str = "exit-code";
    /// The attempt ran longer than its timeout and was stopped.
    pub const TIMEOUT: &str = "timeout";
    /// The attempt was cancelled and stopped.
    pub const CANCELLED: &str = "cancelled";
    /// The `with` parameters are malformed.
    pub const INVALID_PARAMETERS: &str = "invalid-parameters";
    /// The process could not be started.
    pub const SPAWN_FAILED: &str = "spawn-failed";
    /// The host cannot provide the isolation the pack asks for (SPEC §7).
    pub const SANDBOX_UNAVAILABLE: &str = "sandbox-unavailable";
    /// Anything else that went wrong inside the executor.
    pub const EXECUTOR_ERROR: &str = "executor-error";
    /// The attempt was killed by its cgroup's OOM killer (`memoryLimitMiB`).
    pub const MEMORY_LIMIT: &str = "memory-limit";
    /// `builtin:http` refused a request outside the egress allowlist.
    pub const EGRESS_BLOCKED: &str = "egress-blocked";
}
