//! The executor wiring shared by `run`, `resume` and `serve`: the sandbox (detected once), the
//! process launcher, the built-in executors (`builtin:http` included) and the host-configured
//! command executors. Every subcommand that executes steps calls [`executors`] and nothing
//! else, so they all confine steps the same way.

use std::sync::Arc;

use anyhow::{Result, anyhow};
use taskrunner_exec::{
    Capabilities, ExecutorRegistry, Launcher, LauncherConfig, Sandbox, SandboxConfig,
};
use taskrunner_exec_http::{HttpConfig, HttpExecutor};

use crate::config::Settings;

/// What executes steps on this host.
#[derive(Debug, Clone)]
pub(crate) struct Executors {
    /// Built-ins plus host executors, by `uses` name.
    pub(crate) registry: ExecutorRegistry,
    /// The launcher every process executor shares (its group ledger lives under the data
    /// directory, for `reap_leftovers`).
    pub(crate) launcher: Arc<Launcher>,
    /// The sandbox behind the launcher.
    pub(crate) sandbox: Arc<Sandbox>,
}

impl Executors {
    /// What the host enforces (detected once, when the sandbox was built).
    pub(crate) fn capabilities(&self) -> &Capabilities {
        self.sandbox.capabilities()
    }

    /// True when started with `--unsandboxed`.
    pub(crate) fn unsandboxed(&self) -> bool {
        self.sandbox.config().unsandboxed
    }

    /// Writes the sandbox's capabilities to stderr once (at start), loudly when a control is
    /// unavailable or the development flag is on.
    pub(crate) fn log_capabilities(&self) {
        let caps = self.capabilities();
        let missing: Vec<String> = caps
            .entries()
            .into_iter()
            .filter(|(_, c)| !c.is_enforced())
            .map(|(name, c)| format!("{name}: {c}"))
            .collect();
        if self.unsandboxed() {
            eprintln!(
                "WARNING: taskrunner is running UNSANDBOXED (--unsandboxed, development only): steps run even where the isolation their pack asks for is NOT enforced"
            );
        }
        if missing.is_empty() {
            eprintln!("sandbox: every control is enforced ({caps})");
        } else {
            eprintln!(
                "sandbox: not available on this host: {} — packs that need these fail their process steps with sandbox-unavailable{}",
                missing.join("; "),
                if self.unsandboxed() {
                    " (except under --unsandboxed)"
                } else {
                    ""
                }
            );
        }
    }

    /// The line to log at the start of every run under `--unsandboxed` (`None` otherwise).
    pub(crate) fn run_warning(&self) -> Option<&'static str> {
        self.unsandboxed().then_some(
            "WARNING: this run executes UNSANDBOXED (--unsandboxed): isolation its pack asks for may NOT be enforced",
        )
    }
}

/// Builds the executors of `settings`. `unsandboxed` is the `--unsandboxed` development flag.
pub(crate) fn executors(settings: &Settings, unsandboxed: bool) -> Result<Executors> {
    let sandbox = Arc::new(Sandbox::new(SandboxConfig {
        unsandboxed,
        ..SandboxConfig::default()
    }));
    let launcher = Arc::new(Launcher::with_isolation(
        LauncherConfig {
            group_ledger: Some(settings.data_dir.join("process-groups")),
            ..LauncherConfig::default()
        },
        sandbox.clone(),
    ));
    let mut registry = ExecutorRegistry::with_builtins_using(launcher.clone());
    registry.register(
        "builtin:http",
        Arc::new(HttpExecutor::new(HttpConfig::default())),
    );
    for (name, host) in &settings.executors {
        let executor = host
            .build(launcher.clone())
            .map_err(|e| anyhow!("executor {name:?}: {e}"))?;
        registry.register(name.clone(), Arc::new(executor));
    }
    Ok(Executors {
        registry,
        launcher,
        sandbox,
    })
}
