//! The [`Executor`] port and the [`ExecutorRegistry`] that maps `uses` names to executors.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use crate::builtin::{EchoExecutor, NoopExecutor, ShellExecutor, SleepExecutor};
use crate::launcher::Launcher;
use crate::request::{ExecOutcome, ExecRequest, OutputLine};

/// Runs one attempt of a `run` step.
///
/// Contract:
/// - `output` is bounded: a full channel makes the executor wait (backpressure); a dropped
///   receiver makes it discard lines, never stop or hang. Lines are complete and masked.
/// - `cancel` asks the attempt to stop; it then ends `Failed` with reason `cancelled` once
///   everything it started is gone.
/// - The future resolves once the attempt's processes are gone; dropping it early still
///   kills them. Every failure is an `ExecOutcome::Failed`, never a panic.
pub trait Executor: Send + Sync + std::fmt::Debug {
    /// Starts the attempt described by `request`.
    fn execute(
        &self,
        request: ExecRequest,
        output: Sender<OutputLine>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, ExecOutcome>;
}

/// Executors by `uses` name (`builtin:shell`, host-configured names).
#[derive(Debug, Clone, Default)]
pub struct ExecutorRegistry {
    executors: BTreeMap<String, Arc<dyn Executor>>,
}

impl ExecutorRegistry {
    /// An empty registry.
    pub fn new() -> ExecutorRegistry {
        ExecutorRegistry::default()
    }

    /// `builtin:noop`, `builtin:echo`, `builtin:sleep` and `builtin:shell`, with process
    /// executors confined by the default sandbox ([`Launcher::sandboxed`]).
    pub fn with_builtins() -> ExecutorRegistry {
        ExecutorRegistry::with_builtins_using(Arc::new(Launcher::sandboxed(Default::default())))
    }

    /// The built-ins, with process executors going through `launcher`.
    pub fn with_builtins_using(launcher: Arc<Launcher>) -> ExecutorRegistry {
        let mut registry = ExecutorRegistry::new();
        registry.register("builtin:noop", Arc::new(NoopExecutor));
        registry.register("builtin:echo", Arc::new(EchoExecutor));
        registry.register("builtin:sleep", Arc::new(SleepExecutor));
        registry.register("builtin:shell", Arc::new(ShellExecutor::new(launcher)));
        registry
    }

    /// Registers (or replaces) `name`; returns the executor it replaced.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        executor: Arc<dyn Executor>,
    ) -> Option<Arc<dyn Executor>> {
        self.executors.insert(name.into(), executor)
    }

    /// The executor for `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Executor>> {
        self.executors.get(name).cloned()
    }

    /// True when `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.executors.contains_key(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.executors.keys().map(String::as_str)
    }
}
