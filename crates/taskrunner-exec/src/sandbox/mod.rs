//! The process sandbox of SPEC §7 (Linux): [`Sandbox`] implements the launcher's
//! [`Isolation`] hook with network namespaces (`sealed`), cgroups v2/v1 (memory, CPU, pids),
//! rlimits, descriptor hygiene, dropped capabilities and Landlock.
//!
//! [`Sandbox::new`] detects once what the host can enforce ([`Capabilities`], meant to be
//! logged once at start). Each attempt then gets exactly what its [`SandboxSpec`] asks for,
//! or fails with `sandbox-unavailable` naming the missing control — unless the sandbox was
//! built with [`SandboxConfig::unsandboxed`], in which case the attempt runs anyway and its
//! log carries a warning line per missing control.
//!
//! Controls and their mechanisms:
//! - network (`sealed`): a new network namespace with only `lo` (up); root uses `CLONE_NEWNET`,
//!   an unprivileged host a user namespace plus network namespace;
//! - memory / CPU / process count: one cgroup per attempt under our own cgroup (v2 if its
//!   controllers can be delegated, else v1); an OOM kill is reported as `memory-limit`;
//! - filesystem: Landlock (where the kernel has it) limits the process to its workspace and the
//!   `$TASKRUNNER_OUTPUT` file (read-write) and the system paths (read/execute); with Landlock
//!   ABI ≥ 6 it also cannot signal processes outside the sandbox;
//! - always: core dumps off, a descriptor limit, every inherited descriptor above stderr closed
//!   on exec, every capability dropped, `no_new_privs`.

pub(crate) mod cgroup;
mod child;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::error::ExecError;
use crate::launcher::{Confinement, Isolation, NetworkMode, ProcessSpec, SandboxSpec};

use self::cgroup::{AttemptCgroup, Hierarchy, Limits};
use self::child::{ChildSetup, RlimitResource, UserMapping};

/// Read-only (read and execute) paths of the default Landlock policy. `/proc` is safe to
/// read: Landlock forbids ptrace-mode access (`/proc/<pid>/environ`, `mem`) to processes
/// outside the step's own domain, and taskrunner itself is non-dumpable.
pub const DEFAULT_READ_ONLY_PATHS: &[&str] = &[
    "/bin", "/sbin", "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/nix",
    "/proc", "/sys",
];

/// Device files a step may read and write.
const DEVICE_FILES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// Host settings of the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Development only: run steps whose requested isolation is unavailable anyway (each such
    /// attempt logs a warning naming what is not enforced). Never for production.
    pub unsandboxed: bool,
    /// Use cgroups where the host offers them (memory, CPU, pids).
    pub cgroups: bool,
    /// Most processes (and threads) of one attempt, through the pids controller; a fork bomb
    /// hits it. `None` = no limit.
    pub pids_max: Option<u64>,
    /// Restrict the filesystem with Landlock where the kernel supports it.
    pub landlock: bool,
    /// Paths steps may read and execute (under Landlock). The workspace and the output file
    /// are always read-write.
    pub read_only_paths: Vec<PathBuf>,
    /// Drop every capability before `exec` (a root host's steps then cannot undo the sandbox).
    pub drop_capabilities: bool,
    /// `RLIMIT_NOFILE` of step processes.
    pub open_files_max: u64,
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            unsandboxed: false,
            cgroups: true,
            pids_max: Some(1024),
            landlock: true,
            read_only_paths: DEFAULT_READ_ONLY_PATHS.iter().map(PathBuf::from).collect(),
            drop_capabilities: true,
            open_files_max: 4096,
        }
    }
}

/// Whether one control can be enforced on this host, and how (or why not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Enforced with this mechanism.
    Enforced(String),
    /// Not available, for this reason.
    Unavailable(String),
}

impl Control {
    /// True for `Enforced`.
    pub fn is_enforced(&self) -> bool {
        matches!(self, Control::Enforced(_))
    }
}

impl fmt::Display for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Control::Enforced(how) => write!(f, "enforced ({how})"),
            Control::Unavailable(why) => write!(f, "NOT AVAILABLE ({why})"),
        }
    }
}

/// What this host can enforce, detected once by [`Sandbox::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// `sealed` network isolation.
    pub network: Control,
    /// `memoryLimitMiB`.
    pub memory: Control,
    /// `cpuLimitMillicores`.
    pub cpu: Control,
    /// The host's per-attempt process limit ([`SandboxConfig::pids_max`]).
    pub pids: Control,
    /// Filesystem confinement to the workspace.
    pub filesystem: Control,
    /// Closing inherited descriptors.
    pub descriptors: Control,
    /// Dropping capabilities.
    pub privileges: Control,
    /// The development flag is on: missing controls do not fail steps.
    pub unsandboxed: bool,
}

impl Capabilities {
    /// `(control, status)` pairs, for logging.
    pub fn entries(&self) -> Vec<(&'static str, &Control)> {
        vec![
            ("network (sealed)", &self.network),
            ("memory limit", &self.memory),
            ("cpu limit", &self.cpu),
            ("process limit", &self.pids),
            ("filesystem", &self.filesystem),
            ("inherited descriptors", &self.descriptors),
            ("capabilities", &self.privileges),
        ]
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .entries()
            .into_iter()
            .map(|(name, control)| format!("{name}: {control}"))
            .collect();
        write!(f, "{}", parts.join("; "))?;
        if self.unsandboxed {
            write!(
                f,
                "; UNSANDBOXED development mode: missing controls are NOT enforced"
            )?;
        }
        Ok(())
    }
}

/// How `sealed` is provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetworkIsolation {
    /// `unshare(CLONE_NEWNET)` (root, or CAP_SYS_ADMIN).
    Namespace,
    /// A user namespace plus a network namespace (unprivileged).
    UserNamespace,
}

/// The Linux sandbox (an [`Isolation`] for the [`crate::Launcher`]).
#[derive(Debug)]
pub struct Sandbox {
    config: SandboxConfig,
    capabilities: Capabilities,
    network: Option<NetworkIsolation>,
    hierarchy: Option<Hierarchy>,
    landlock_abi: Option<u32>,
    close_range: bool,
    root: bool,
}

impl Sandbox {
    /// Detects what the host offers and prepares (creates our base cgroups). Also makes this
    /// process non-dumpable, so steps (same uid, no capabilities) cannot read its memory or
    /// `/proc/<pid>/environ` (where `TASKRUNNER_SECRET_*` values live).
    pub fn new(config: SandboxConfig) -> Sandbox {
        protect_host_process();
        let root = nix::unistd::geteuid().is_root();
        let (network, network_control) = detect_network();
        let (hierarchy, cgroup_error) = if config.cgroups {
            match cgroup::discover() {
                Ok(h) => (Some(h), String::new()),
                Err(e) => (None, e),
            }
        } else {
            (None, "cgroups disabled by configuration".to_owned())
        };
        let cgroup_control = |has: fn(&Hierarchy) -> bool, controller: &str| match &hierarchy {
            Some(h) if has(h) => Control::Enforced(format!("{} {controller}", h.label())),
            Some(h) => Control::Unavailable(format!(
                "{} has no usable {controller} controller",
                h.label()
            )),
            None => Control::Unavailable(cgroup_error.clone()),
        };
        let memory = cgroup_control(Hierarchy::has_memory, "memory");
        let cpu = cgroup_control(Hierarchy::has_cpu, "cpu");
        let pids = match config.pids_max {
            None => Control::Unavailable("no process limit configured".into()),
            Some(max) => match cgroup_control(Hierarchy::has_pids, "pids") {
                Control::Enforced(how) => Control::Enforced(format!("{how}, at most {max}")),
                other => other,
            },
        };
        let landlock_abi = child::landlock_abi();
        let filesystem = match (config.landlock, landlock_abi) {
            (false, _) => Control::Unavailable(
                "Landlock disabled by configuration; only the working directory is the workspace"
                    .into(),
            ),
            (true, None) => Control::Unavailable(
                "the kernel has no Landlock; only the working directory is the workspace".into(),
            ),
            (true, Some(abi)) => Control::Enforced(format!("Landlock ABI {abi}")),
        };
        let close_range = child::close_range_supported();
        let descriptors = if close_range {
            Control::Enforced("close_range(CLOEXEC)".into())
        } else {
            Control::Enforced("close-on-exec by default (no close_range)".into())
        };
        let privileges = match (config.drop_capabilities, root) {
            (true, true) => Control::Enforced("all capabilities dropped, no_new_privs".into()),
            (true, false) => Control::Enforced("unprivileged host, no_new_privs".into()),
            (false, _) => Control::Unavailable("capability dropping disabled".into()),
        };
        let capabilities = Capabilities {
            network: network_control,
            memory,
            cpu,
            pids,
            filesystem,
            descriptors,
            privileges,
            unsandboxed: config.unsandboxed,
        };
        Sandbox {
            config,
            capabilities,
            network,
            hierarchy,
            landlock_abi,
            close_range,
            root,
        }
    }

    /// One sandbox with the default configuration, shared by the whole process (detection
    /// runs once): what [`crate::ExecutorRegistry::with_builtins`] uses.
    pub fn shared_default() -> std::sync::Arc<Sandbox> {
        static SHARED: std::sync::OnceLock<std::sync::Arc<Sandbox>> = std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| std::sync::Arc::new(Sandbox::new(SandboxConfig::default())))
            .clone()
    }

    /// What this host enforces (log it once at start).
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The configuration.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    fn landlock_ruleset(
        &self,
        process: &ProcessSpec,
    ) -> Result<Option<std::os::fd::OwnedFd>, String> {
        use landlock::{
            ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr,
            RulesetCreatedAttr, Scope, path_beneath_rules,
        };
        if !self.config.landlock || self.landlock_abi.is_none() {
            return Ok(None);
        }
        let abi = ABI::V6;
        let error = |e: landlock::RulesetError| format!("building the Landlock ruleset: {e}");
        let mut read_only: Vec<PathBuf> = self.config.read_only_paths.clone();
        // The program itself when it lives elsewhere (a host executor's binary).
        let program = Path::new(&process.program);
        if program.is_absolute() {
            read_only.push(program.to_path_buf());
        }
        let mut writable_files: Vec<PathBuf> = DEVICE_FILES.iter().map(PathBuf::from).collect();
        writable_files.extend(process.writable_files.iter().cloned());
        let ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(abi))
            .map_err(error)?
            .scope(Scope::from_all(abi))
            .map_err(error)?
            .create()
            .map_err(error)?
            .add_rules(path_beneath_rules(&read_only, AccessFs::from_read(abi)))
            .map_err(error)?
            .add_rules(path_beneath_rules(
                &writable_files,
                AccessFs::from_read(abi) | AccessFs::from_write(abi),
            ))
            .map_err(error)?
            .add_rules(path_beneath_rules([&process.cwd], AccessFs::from_all(abi)))
            .map_err(error)?;
        Ok(ruleset.into())
    }
}

impl Isolation for Sandbox {
    fn prepare(
        &self,
        spec: &SandboxSpec,
        process: &ProcessSpec,
        command: &mut Command,
    ) -> Result<Confinement, ExecError> {
        let mut confinement = Confinement::default();
        let mut missing: Vec<String> = Vec::new();
        let mut setup = ChildSetup::default();
        let mechanisms = &mut confinement.mechanisms;

        // Network.
        match (spec.network, self.network) {
            (NetworkMode::Shared, _) => {
                mechanisms.insert("network".into(), "shared".into());
            }
            (NetworkMode::Sealed, Some(NetworkIsolation::Namespace)) => {
                setup.new_network = true;
                mechanisms.insert("network".into(), "netns (loopback only)".into());
            }
            (NetworkMode::Sealed, Some(NetworkIsolation::UserNamespace)) => {
                setup.user_namespace = Some(user_mapping());
                mechanisms.insert("network".into(), "userns+netns (loopback only)".into());
            }
            (NetworkMode::Sealed, None) => {
                missing.push(format!(
                    "network isolation for `sealed` mode ({})",
                    unavailable_reason(&self.capabilities.network)
                ));
                mechanisms.insert("network".into(), "NOT ISOLATED".into());
            }
        }

        // Memory, CPU, pids through one attempt cgroup.
        let mut limits = Limits::default();
        if let Some(mib) = spec.memory_limit_mib {
            if self.capabilities.memory.is_enforced() {
                limits.memory_bytes = Some(mib.saturating_mul(1024 * 1024));
                mechanisms.insert(
                    "memory".into(),
                    format!("{} memory, {mib} MiB", self.hierarchy_label()),
                );
            } else {
                missing.push(format!(
                    "memory limit of {mib} MiB ({})",
                    unavailable_reason(&self.capabilities.memory)
                ));
                // Best effort for development hosts only: an address-space limit.
                setup.rlimits.push((
                    RlimitResource::AddressSpace,
                    mib.saturating_mul(1024 * 1024),
                ));
                mechanisms.insert("memory".into(), format!("rlimit AS {mib} MiB (no cgroup)"));
            }
        }
        if let Some(millicores) = spec.cpu_limit_millicores {
            if self.capabilities.cpu.is_enforced() {
                limits.cpu_millicores = Some(millicores);
                mechanisms.insert(
                    "cpu".into(),
                    format!("{} cpu, {millicores} millicores", self.hierarchy_label()),
                );
            } else {
                missing.push(format!(
                    "cpu limit of {millicores} millicores ({})",
                    unavailable_reason(&self.capabilities.cpu)
                ));
                mechanisms.insert("cpu".into(), "NOT LIMITED".into());
            }
        }
        if let Some(max) = self.config.pids_max
            && self.capabilities.pids.is_enforced()
        {
            limits.pids_max = Some(max);
            mechanisms.insert(
                "pids".into(),
                format!("{} pids, at most {max}", self.hierarchy_label()),
            );
        }

        if !missing.is_empty() {
            if !self.config.unsandboxed {
                return Err(ExecError::SandboxUnavailable(format!(
                    "this host cannot enforce: {}",
                    missing.join("; ")
                )));
            }
            for what in &missing {
                confinement.warnings.push(format!(
                    "UNSANDBOXED (development flag): {what} is NOT enforced"
                ));
            }
        }

        if let Some(hierarchy) = &self.hierarchy
            && (limits.memory_bytes.is_some()
                || limits.cpu_millicores.is_some()
                || limits.pids_max.is_some())
        {
            match AttemptCgroup::create(hierarchy, limits) {
                Ok(cgroup) => {
                    for file in cgroup.procs_files() {
                        setup.cgroup_procs.push(c_path(&file)?);
                    }
                    confinement.cgroup = Some(cgroup);
                }
                Err(why) => {
                    if self.config.unsandboxed {
                        confinement.warnings.push(format!(
                            "UNSANDBOXED (development flag): resource limits are NOT enforced ({why})"
                        ));
                    } else {
                        return Err(ExecError::SandboxUnavailable(why));
                    }
                }
            }
        }

        // Filesystem.
        match self.landlock_ruleset(process) {
            Ok(Some(fd)) => {
                setup.landlock = Some(fd);
                confinement.mechanisms.insert(
                    "filesystem".into(),
                    format!(
                        "landlock ABI {} (workspace read-write)",
                        self.landlock_abi.unwrap_or_default()
                    ),
                );
            }
            Ok(None) => {
                confinement
                    .mechanisms
                    .insert("filesystem".into(), "workspace as cwd (no Landlock)".into());
            }
            Err(why) => {
                return Err(ExecError::SandboxUnavailable(why));
            }
        }

        setup.rlimits.push((RlimitResource::Core, 0));
        setup
            .rlimits
            .push((RlimitResource::NoFile, self.config.open_files_max));
        setup.close_fds = self.close_range;
        setup.drop_capabilities = self.config.drop_capabilities;
        setup.no_new_privs = true;
        if self.config.drop_capabilities && self.root {
            confinement
                .mechanisms
                .insert("capabilities".into(), "dropped".into());
        }
        confinement
            .mechanisms
            .insert("environment".into(), "cleared".into());

        #[allow(unsafe_code)]
        // SAFETY: `ChildSetup::apply` only performs async-signal-safe system calls on data
        // prepared here (no allocation, no locks), as `pre_exec` requires.
        unsafe {
            command.pre_exec(move || setup.apply());
        }
        Ok(confinement)
    }
}

impl Sandbox {
    fn hierarchy_label(&self) -> &'static str {
        self.hierarchy.as_ref().map_or("cgroup", Hierarchy::label)
    }
}

fn unavailable_reason(control: &Control) -> String {
    match control {
        Control::Unavailable(why) => why.clone(),
        Control::Enforced(_) => "disabled".into(),
    }
}

fn c_path(path: &Path) -> Result<CString, ExecError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        ExecError::SandboxUnavailable(format!("path {} contains a NUL byte", path.display()))
    })
}

fn user_mapping() -> UserMapping {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    UserMapping {
        uid_map: format!("0 {uid} 1").into_bytes(),
        gid_map: format!("0 {gid} 1").into_bytes(),
    }
}

/// Probes how `sealed` can be provided: a network namespace in a throw-away thread (namespaces
/// are per thread), else a user + network namespace in a throw-away child process.
fn detect_network() -> (Option<NetworkIsolation>, Control) {
    let probe = std::thread::spawn(|| nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET));
    let namespace_error = match probe.join() {
        Ok(Ok(())) => {
            return (
                Some(NetworkIsolation::Namespace),
                Control::Enforced("network namespace".into()),
            );
        }
        Ok(Err(errno)) => errno.to_string(),
        Err(_) => "probe thread failed".to_owned(),
    };
    let mut command = std::process::Command::new("/bin/true");
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let setup = ChildSetup {
        user_namespace: Some(user_mapping()),
        ..ChildSetup::default()
    };
    #[allow(unsafe_code)]
    // SAFETY: `apply` performs only async-signal-safe system calls on prepared data.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || setup.apply());
    }
    match command.status() {
        Ok(status) if status.success() => (
            Some(NetworkIsolation::UserNamespace),
            Control::Enforced("user + network namespace".into()),
        ),
        Ok(_) | Err(_) => (
            None,
            Control::Unavailable(format!(
                "cannot create a network namespace ({namespace_error}) nor a user namespace"
            )),
        ),
    }
}

/// Makes this process non-dumpable: same-uid processes without CAP_SYS_PTRACE (our steps)
/// can then neither ptrace it nor read its `/proc/<pid>/environ` or memory.
fn protect_host_process() {
    if let Err(error) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(%error, "could not make the process non-dumpable");
    }
}

/// Mechanisms as sorted `(key, value)` strings, for a log entry's metadata.
pub(crate) fn mechanisms_summary(mechanisms: &BTreeMap<String, String>) -> String {
    mechanisms
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
