//! [`ExecError`], the crate's one error type, and its mapping to failure reasons.

use crate::request::reason;

/// Why an executor could not be built or an attempt could not run.
///
/// Inside `execute` these become `ExecOutcome::Failed` with [`ExecError::reason`]; only
/// constructors such as `CommandExecutor::new` return them directly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The step's `with` parameters are malformed (missing, wrong type, out of range).
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// A host executor's argv template does not parse.
    #[error("invalid argv template {index}: {source}")]
    Template {
        /// Position of the template in the argv array.
        index: usize,
        /// The parse error.
        source: taskrunner_expr::ParseError,
    },
    /// A host executor definition is unusable (for example an empty argv).
    #[error("invalid executor definition: {0}")]
    Definition(String),
    /// The process could not be started.
    #[error("spawn failed: {0}")]
    Spawn(#[source] std::io::Error),
    /// The isolation the step asks for cannot be provided on this host.
    #[error("sandbox unavailable: {0}")]
    SandboxUnavailable(String),
    /// Any other I/O problem around the process (temp files, pipes).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An internal problem (a task that panicked, a file over its limit).
    #[error("{0}")]
    Internal(String),
}

impl ExecError {
    /// The `ExecOutcome::Failed` reason this error maps to.
    pub fn reason(&self) -> &'static str {
        match self {
            ExecError::InvalidParameters(_) | ExecError::Template { .. } => {
                reason::INVALID_PARAMETERS
            }
            ExecError::Spawn(_) => reason::SPAWN_FAILED,
            ExecError::SandboxUnavailable(_) => reason::SANDBOX_UNAVAILABLE,
            ExecError::Definition(_) | ExecError::Io { .. } | ExecError::Internal(_) => {
                reason::EXECUTOR_ERROR
            }
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> ExecError {
        ExecError::InvalidParameters(message.into())
    }
}
