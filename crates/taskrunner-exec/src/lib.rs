//! The executor port and the built-in executors (SPEC §7, rules 17, 18, 19, 28).
//!
//! An [`Executor`] runs one attempt of a `run` step: it receives an [`ExecRequest`] (resolved
//! parameters, the run's workspace, the timeout and the secret values to mask), streams the
//! lines the step prints as [`OutputLine`]s into a bounded channel, and resolves to an
//! [`ExecOutcome`]. Failures are values (`ExecOutcome::Failed` with a stable reason), never
//! panics or `Err`s, so the runtime can record them as they are.
//!
//! Modules:
//! - `request`: the request/outcome/output-line values and the failure reasons;
//! - `executor`: the [`Executor`] trait and the [`ExecutorRegistry`];
//! - [`Masker`] is `taskrunner-secrets`' (the one masker), re-exported;
//! - `lines`: the line splitter (partial lines held, line cap, lossy UTF-8, masking first);
//! - `launcher`: [`Launcher`]/[`SandboxSpec`], the one way a process is started and stopped;
//! - `process`: running a launched process to completion (streaming, timeout, cancel, outputs);
//! - `sandbox`: [`Sandbox`], the Linux [`Isolation`] (namespaces, cgroups, Landlock, rlimits)
//!   and the host [`Capabilities`] it detects;
//! - `builtin`: `builtin:noop|echo|sleep|shell` and the host-configured [`CommandExecutor`].
//!
//! Architecture invariant: this crate knows nothing about plans, runs or stores; it sees one
//! attempt at a time. Process executors never put a script or a secret on argv or into the
//! data directory: scripts reach `/bin/sh` on stdin and the `$TASKRUNNER_OUTPUT` file lives
//! in the system temp directory and is deleted after reading.

mod builtin;
mod error;
mod executor;
mod launcher;
mod lines;
mod process;
mod request;
mod sandbox;

pub use crate::builtin::{
    CommandExecutor, EchoExecutor, NoopExecutor, SCRIPT_BYTES_MAX, SLEEP_SECONDS_MAX,
    ShellExecutor, SleepExecutor,
};
pub use crate::error::ExecError;
pub use crate::executor::{Executor, ExecutorRegistry};
pub use crate::launcher::{
    Confinement, Isolation, LaunchedProcess, Launcher, LauncherConfig, NetworkMode, ProcessSpec,
    STOP_GRACE_MAX, SandboxSpec,
};
pub use crate::lines::LINE_BYTES_MAX;
pub use crate::process::OUTPUT_FILE_BYTES_MAX;
pub use crate::request::{ExecOutcome, ExecRequest, OutputLine, OutputStream, reason};
pub use crate::sandbox::{Capabilities, Control, DEFAULT_READ_ONLY_PATHS, Sandbox, SandboxConfig};
pub use taskrunner_secrets::{MASK, Masker};
