//! Host-configured command executors (rule 28): an argv of templates over
//! `{with: <resolved with>}`, run without a shell through the launcher.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;
use taskrunner_expr::Template;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use crate::builtin::params;
use crate::error::ExecError;
use crate::executor::Executor;
use crate::launcher::Launcher;
use crate::process::{Invocation, execute_invocation};
use crate::request::{ExecOutcome, ExecRequest, OutputLine};

/// A host executor such as `[executors."builtin:scanner"] command = ["scanner", "--image",
/// "{{ with.image }}"]`.
///
/// The program (`argv[0]`) must be literal text, so a pack's parameters can never choose
/// which binary runs. Each other element renders to one argument: strings as they are,
/// numbers and booleans as text; `null`, arrays and objects are `invalid-parameters`.
/// Environment, outputs and stopping are those of `builtin:shell`, except that the
/// environment comes from the host ([`CommandExecutor::with_env`]), never from `with`.
/// Note that rendered arguments are visible in `ps`: do not template secrets into argv.
#[derive(Debug, Clone)]
pub struct CommandExecutor {
    argv_templates: Vec<Template>,
    launcher: Arc<Launcher>,
    env: std::collections::BTreeMap<String, String>,
    timeout: Option<std::time::Duration>,
}

impl CommandExecutor {
    /// Parses and checks the argv templates; processes are confined by the default sandbox
    /// ([`Launcher::sandboxed`]).
    pub fn new(argv: Vec<String>) -> Result<CommandExecutor, ExecError> {
        CommandExecutor::with_launcher(argv, Arc::new(Launcher::sandboxed(Default::default())))
    }

    /// Like [`CommandExecutor::new`], starting processes through `launcher`.
    pub fn with_launcher(
        argv: Vec<String>,
        launcher: Arc<Launcher>,
    ) -> Result<CommandExecutor, ExecError> {
        if argv.is_empty() || argv.len() > params::ARGS_MAX {
            return Err(ExecError::Definition(format!(
                "`command` must have 1 to {} elements",
                params::ARGS_MAX
            )));
        }
        let mut argv_templates = Vec::with_capacity(argv.len());
        for (index, text) in argv.iter().enumerate() {
            let template =
                Template::parse(text).map_err(|source| ExecError::Template { index, source })?;
            argv_templates.push(template);
        }
        match argv_templates.first() {
            Some(program) if program.is_literal() && !program.source().trim().is_empty() => {}
            _ => {
                return Err(ExecError::Definition(
                    "`command[0]` must be a literal, non-empty program name".into(),
                ));
            }
        }
        Ok(CommandExecutor {
            argv_templates,
            launcher,
            env: Default::default(),
            timeout: None,
        })
    }

    /// Host-set environment variables of the process (literal values, not templates; the
    /// `TASKRUNNER_*` variables override them). Names must be non-empty without `=` or NUL.
    pub fn with_env(
        mut self,
        env: std::collections::BTreeMap<String, String>,
    ) -> Result<CommandExecutor, ExecError> {
        let as_json = serde_json::Value::Object(
            env.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        );
        self.env = params::env(Some(&as_json)).map_err(|e| ExecError::Definition(e.to_string()))?;
        Ok(self)
    }

    /// A host limit on each attempt's wall time; the attempt's own timeout still applies
    /// when it is shorter.
    pub fn with_timeout(mut self, timeout: Option<std::time::Duration>) -> CommandExecutor {
        self.timeout = timeout;
        self
    }

    /// The argv template sources.
    pub fn argv_sources(&self) -> impl Iterator<Item = &str> {
        self.argv_templates.iter().map(Template::source)
    }

    fn invocation(&self, with: &Value) -> Result<Invocation, ExecError> {
        let context = serde_json::json!({ "with": with });
        let mut argv = Vec::with_capacity(self.argv_templates.len());
        for (index, template) in self.argv_templates.iter().enumerate() {
            let value = template.render(&context).map_err(|error| {
                ExecError::invalid(format!(
                    "argument {index} ({:?}): {error}",
                    template.source()
                ))
            })?;
            let text = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null | Value::Array(_) | Value::Object(_) => {
                    return Err(ExecError::invalid(format!(
                        "argument {index} ({:?}) rendered to {}, not a string, number or boolean",
                        template.source(),
                        kind(&value)
                    )));
                }
            };
            argv.push(params::arg(index, text)?);
        }
        let program = argv.remove(0);
        Ok(Invocation {
            program,
            args: argv,
            env: self.env.clone(),
            stdin: None,
        })
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Executor for CommandExecutor {
    fn execute(
        &self,
        mut request: ExecRequest,
        output: Sender<OutputLine>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, ExecOutcome> {
        request.timeout = match (request.timeout, self.timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
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
