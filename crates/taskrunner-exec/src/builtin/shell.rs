//! `builtin:shell`: `with.script` through `/bin/sh -eu` (script on stdin, never on argv) or
//! `with.command` (an argv array, no shell), with `with.env`, in the run's workspace.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use crate::builtin::params;
use crate::error::ExecError;
use crate::executor::Executor;
use crate::launcher::Launcher;
use crate::process::{Invocation, execute_invocation};
use crate::request::{ExecOutcome, ExecRequest, OutputLine};

/// The largest `with.script`.
pub const SCRIPT_BYTES_MAX: usize = 1024 * 1024;

/// `builtin:shell`.
///
/// Parameters: exactly one of `script` (string) and `command` (non-empty array of strings);
/// optional `env` (object of strings). The environment is cleared: the process sees `env`,
/// `PATH=/usr/local/bin:/usr/bin:/bin` unless `env.PATH` is given, and the `TASKRUNNER_*`
/// variables (which override `env`). Outputs: `exitCode` plus the `key=value` lines of
/// `$TASKRUNNER_OUTPUT`.
#[derive(Debug, Clone, Default)]
pub struct ShellExecutor {
    launcher: Arc<Launcher>,
}

impl ShellExecutor {
    /// A shell executor starting processes through `launcher`.
    pub fn new(launcher: Arc<Launcher>) -> ShellExecutor {
        ShellExecutor { launcher }
    }

    fn invocation(&self, with: &Value) -> Result<Invocation, ExecError> {
        let map = params::object("builtin:shell", with, &["script", "command", "env"])?;
        let get = |key: &str| map.and_then(|m| m.get(key));
        let env = params::env(get("env"))?;
        match (get("script"), get("command")) {
            (Some(_), Some(_)) => Err(ExecError::invalid(
                "builtin:shell takes `with.script` or `with.command`, not both",
            )),
            (None, None) => Err(ExecError::invalid(
                "builtin:shell requires `with.script` or `with.command`",
            )),
            (Some(script), None) => {
                let Value::String(script) = script else {
                    return Err(ExecError::invalid("`with.script` must be a string"));
                };
                if script.len() > SCRIPT_BYTES_MAX {
                    return Err(ExecError::invalid(format!(
                        "`with.script` is longer than {SCRIPT_BYTES_MAX} bytes"
                    )));
                }
                Ok(Invocation {
                    program: self.launcher.config().shell.to_string_lossy().into_owned(),
                    args: vec!["-eu".to_owned()],
                    env,
                    stdin: Some(script.clone().into_bytes()),
                })
            }
            (None, Some(command)) => {
                let Value::Array(items) = command else {
                    return Err(ExecError::invalid(
                        "`with.command` must be an array of strings",
                    ));
                };
                if items.is_empty() || items.len() > params::ARGS_MAX {
                    return Err(ExecError::invalid(format!(
                        "`with.command` must have 1 to {} elements",
                        params::ARGS_MAX
                    )));
                }
                let mut argv = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    let Value::String(item) = item else {
                        return Err(ExecError::invalid(format!(
                            "`with.command[{index}]` must be a string"
                        )));
                    };
                    argv.push(params::arg(index, item.clone())?);
                }
                if argv[0].is_empty() {
                    return Err(ExecError::invalid("`with.command[0]` must not be empty"));
                }
                let program = argv.remove(0);
                Ok(Invocation {
                    program,
                    args: argv,
                    env,
                    stdin: None,
                })
            }
        }
    }
}

impl Executor for ShellExecutor {
    fn execute(
        &self,
        request: ExecRequest,
        output: Sender<OutputLine>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, ExecOutcome> {
        let invocation = self.invocation(&request.with);
        execute_invocation(
            Arc::clone(&self.launcher),
            invocation,
            request,
            output,
            cancel,
        )
    }
}
