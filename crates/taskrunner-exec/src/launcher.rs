//! The process launcher: the one way a step's process is started and stopped (SPEC §7,
//! rule 17).
//!
//! Every process executor (`builtin:shell`, host commands) goes through [`Launcher::launch`],
//! which applies what today's host can guarantee — a cleared environment, the workspace as
//! working directory, a new process group, `kill_on_drop`, no inherited descriptors beyond
//! stdio (std opens everything else close-on-exec) — and hands the rest of the
//! [`SandboxSpec`] to an [`Isolation`] hook (namespaces, cgroups, rlimits). Without a hook, a
//! spec that asks for isolation is refused with `sandbox-unavailable`: a step never silently
//! runs unisolated.
//!
//! [`Launcher::stop_group`] implements rule 17 for the process group: SIGTERM (and SIGCONT,
//! so stopped members can act on it), then SIGKILL after the grace period, repeated until
//! the group has no members. Zombies count as gone: they run nothing, and where PID 1 does
//! not reap orphans they would otherwise keep the group "alive" forever.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::time::{Instant, sleep};

use crate::error::ExecError;

/// The longest allowed SIGTERM → SIGKILL grace period (rule 17).
pub const STOP_GRACE_MAX: Duration = Duration::from_secs(2);

/// How often group membership is polled while stopping.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Host settings of the launcher.
#[derive(Debug, Clone)]
pub struct LauncherConfig {
    /// SIGTERM → SIGKILL grace period; clamped to [`STOP_GRACE_MAX`].
    pub stop_grace: Duration,
    /// After this long of sending SIGKILL to a group that will not empty (processes stuck in
    /// the kernel), stopping gives up and logs a warning instead of hanging the attempt.
    pub stop_wait_max: Duration,
    /// Once the group is gone, how long to keep waiting for end-of-file on stdout/stderr
    /// (a process that left the group may still hold the pipes).
    pub drain_grace: Duration,
    /// The shell `builtin:shell` scripts run in (`<shell> -eu`, script on stdin).
    pub shell: PathBuf,
    /// Directory for `$TASKRUNNER_OUTPUT` files; `None` = `std::env::temp_dir()`. Must lie
    /// outside the data directory and the workspaces (rule 19).
    pub output_dir: Option<PathBuf>,
    /// Where live process groups are recorded (one file per group, removed once it is gone),
    /// so that after a crash [`Launcher::reap_leftovers`] can kill what an interrupted attempt
    /// left running before it is retried (rule 17). `None` = not recorded.
    pub group_ledger: Option<PathBuf>,
}

impl Default for LauncherConfig {
    fn default() -> LauncherConfig {
        LauncherConfig {
            stop_grace: STOP_GRACE_MAX,
            stop_wait_max: Duration::from_secs(30),
            drain_grace: Duration::from_millis(500),
            shell: PathBuf::from("/bin/sh"),
            output_dir: None,
            group_ledger: None,
        }
    }
}

/// Network isolation asked for by a pack (`spec.sandbox.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// The process shares the host network (`networked`, or no request at all).
    #[default]
    Shared,
    /// Its own network namespace with only loopback (`sealed`).
    Sealed,
}

/// The isolation one attempt asks for (the pack's `spec.sandbox`, SPEC §1.6/§7).
/// `SandboxSpec::default()` asks for none: the shared network and no limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SandboxSpec {
    /// Network isolation.
    pub network: NetworkMode,
    /// CPU limit (cgroup), if any.
    pub cpu_limit_millicores: Option<u32>,
    /// Memory limit (cgroup), if any.
    pub memory_limit_mib: Option<u64>,
    /// `egressAllowlist` (`host` or `host:port`), enforced by `builtin:http`.
    pub egress_allowlist: Vec<String>,
}

impl SandboxSpec {
    /// A spec with this network mode and no limits.
    pub fn new(network: NetworkMode) -> SandboxSpec {
        SandboxSpec {
            network,
            ..SandboxSpec::default()
        }
    }

    /// With a CPU limit.
    pub fn with_cpu_limit_millicores(mut self, millicores: Option<u32>) -> SandboxSpec {
        self.cpu_limit_millicores = millicores;
        self
    }

    /// With a memory limit.
    pub fn with_memory_limit_mib(mut self, mib: Option<u64>) -> SandboxSpec {
        self.memory_limit_mib = mib;
        self
    }

    /// With an egress allowlist.
    pub fn with_egress_allowlist(mut self, allowlist: Vec<String>) -> SandboxSpec {
        self.egress_allowlist = allowlist;
        self
    }

    /// True when anything beyond the launcher's baseline is asked for.
    pub fn requests_isolation(&self) -> bool {
        self.network != NetworkMode::Shared
            || self.cpu_limit_millicores.is_some()
            || self.memory_limit_mib.is_some()
    }
}

/// The hook where a sandbox implementation slots in (see [`crate::Sandbox`]).
pub trait Isolation: Send + Sync + fmt::Debug {
    /// Called before spawning: adjust `command` (for example a `pre_exec` hook that enters
    /// namespaces and cgroups) and return what confines the attempt. Return
    /// `SandboxUnavailable` naming the missing control when the host cannot provide `spec`.
    fn prepare(
        &self,
        spec: &SandboxSpec,
        process: &ProcessSpec,
        command: &mut Command,
    ) -> Result<Confinement, ExecError>;
}

/// What confines one attempt: how each control is enforced (recorded in the step's log), any
/// loud warnings (unsandboxed development mode), and the attempt's cgroup, which is removed
/// when this is dropped.
#[derive(Debug, Default)]
pub struct Confinement {
    /// Control → mechanism, e.g. `network` → `netns (loopback only)`.
    pub mechanisms: BTreeMap<String, String>,
    /// Controls the attempt asked for that are not enforced (only with `unsandboxed`).
    pub warnings: Vec<String>,
    pub(crate) cgroup: Option<crate::sandbox::cgroup::AttemptCgroup>,
}

impl Confinement {
    /// Live processes of the attempt's cgroup (empty without one).
    pub fn members(&self) -> Vec<i32> {
        self.cgroup.as_ref().map_or_else(Vec::new, |c| c.members())
    }

    /// True when the cgroup's OOM killer killed one of the attempt's processes.
    pub fn memory_limit_hit(&self) -> bool {
        self.cgroup.as_ref().is_some_and(|c| c.oom_killed())
    }

    /// True when a fork was refused at the process limit.
    pub fn pids_limit_hit(&self) -> bool {
        self.cgroup.as_ref().is_some_and(|c| c.pids_limit_hit())
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The program: a path, or a name looked up in `env["PATH"]`.
    pub program: String,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// The complete environment (the launcher's own is never inherited).
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Whether stdin is a pipe (else `/dev/null`).
    pub stdin_piped: bool,
    /// Files outside `cwd` the process may write (the `$TASKRUNNER_OUTPUT` file).
    pub writable_files: Vec<PathBuf>,
}

/// A started process: the child and its pipes, and its process group.
#[derive(Debug)]
pub struct LaunchedProcess {
    /// The child (`kill_on_drop`).
    pub child: Child,
    /// Its process group (the child's pid).
    pub pgid: Pid,
    /// Stdin, when [`ProcessSpec::stdin_piped`].
    pub stdin: Option<ChildStdin>,
    /// Stdout pipe.
    pub stdout: ChildStdout,
    /// Stderr pipe.
    pub stderr: ChildStderr,
    /// What confines it (default: nothing beyond the baseline).
    pub confinement: Confinement,
}

/// Starts and stops step processes.
#[derive(Debug, Clone, Default)]
pub struct Launcher {
    config: LauncherConfig,
    isolation: Option<Arc<dyn Isolation>>,
}

impl Launcher {
    /// A launcher without an isolation hook.
    pub fn new(config: LauncherConfig) -> Launcher {
        Launcher {
            config,
            isolation: None,
        }
    }

    /// A launcher whose isolation requests are handled by `isolation`.
    pub fn with_isolation(config: LauncherConfig, isolation: Arc<dyn Isolation>) -> Launcher {
        Launcher {
            config,
            isolation: Some(isolation),
        }
    }

    /// A launcher confining processes with the process-wide default [`crate::Sandbox`].
    pub fn sandboxed(config: LauncherConfig) -> Launcher {
        Launcher::with_isolation(config, crate::sandbox::Sandbox::shared_default())
    }

    /// The configuration.
    pub fn config(&self) -> &LauncherConfig {
        &self.config
    }

    fn stop_grace(&self) -> Duration {
        self.config.stop_grace.min(STOP_GRACE_MAX)
    }

    /// Starts `process` in its own process group under `sandbox`.
    pub fn launch(
        &self,
        process: ProcessSpec,
        sandbox: &SandboxSpec,
    ) -> Result<LaunchedProcess, ExecError> {
        if sandbox.requests_isolation() && self.isolation.is_none() {
            return Err(ExecError::SandboxUnavailable(
                "this host has no sandbox for the requested network or resource limits".into(),
            ));
        }
        let mut command = Command::new(&process.program);
        command
            .args(&process.args)
            .env_clear()
            .envs(&process.env)
            .current_dir(&process.cwd)
            .stdin(if process.stdin_piped {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let confinement = match &self.isolation {
            Some(isolation) => isolation.prepare(sandbox, &process, &mut command)?,
            None => Confinement::default(),
        };
        let mut child = command.spawn().map_err(|error| {
            if confinement.mechanisms.is_empty() {
                ExecError::Spawn(error)
            } else {
                ExecError::Spawn(std::io::Error::new(
                    error.kind(),
                    format!("{error} (while entering the sandbox or executing the program)"),
                ))
            }
        })?;
        let Some(pid) = child.id() else {
            // `id` is `None` only once the child has been reaped, which nobody did yet.
            return Err(ExecError::Internal("spawned child has no pid".into()));
        };
        let pgid = Pid::from_raw(i32::try_from(pid).map_err(|_| {
            ExecError::Internal(format!("pid {pid} does not fit a process group id"))
        })?);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = killpg(pgid, Signal::SIGKILL);
            return Err(ExecError::Internal("child pipes missing".into()));
        };
        let stdin = child.stdin.take();
        self.record_group(pgid, &process.env);
        Ok(LaunchedProcess {
            child,
            pgid,
            stdin,
            stdout,
            stderr,
            confinement,
        })
    }

    /// Environment entries that identify an attempt's processes in the group ledger.
    const LEDGER_KEYS: [&'static str; 3] = [
        "TASKRUNNER_RUN_ID",
        "TASKRUNNER_STEP_ID",
        "TASKRUNNER_ATTEMPT",
    ];

    fn record_group(&self, pgid: Pid, env: &BTreeMap<String, String>) {
        let Some(dir) = &self.config.group_ledger else {
            return;
        };
        let marks: String = Self::LEDGER_KEYS
            .iter()
            .filter_map(|k| env.get(*k).map(|v| format!("{k}={v}\n")))
            .collect();
        if let Err(error) = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(dir.join(pgid.as_raw().to_string()), marks))
        {
            tracing::warn!(%error, "could not record a process group in the ledger");
        }
    }

    /// Drops the ledger entry of a group that is known to be gone.
    pub fn forget_group(&self, pgid: Pid) {
        if let Some(dir) = &self.config.group_ledger {
            let _ = std::fs::remove_file(dir.join(pgid.as_raw().to_string()));
        }
    }

    /// Kills what attempts of a previous process left running (call once at start, before
    /// any run is recovered). A recorded group id may have been reused by an unrelated
    /// process since, so only processes of that group whose environment still carries the
    /// attempt's `TASKRUNNER_RUN_ID/STEP_ID/ATTEMPT` are killed. Returns how many were.
    pub fn reap_leftovers(&self) -> usize {
        let Some(dir) = &self.config.group_ledger else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut killed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let pgid = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<i32>().ok());
            let marks = std::fs::read_to_string(&path).unwrap_or_default();
            let marks: Vec<&str> = marks.lines().filter(|l| !l.is_empty()).collect();
            if let Some(pgid) = pgid
                && !marks.is_empty()
            {
                // Repeat until a pass finds nothing: a member may fork while it is being killed.
                for _ in 0..REAP_PASSES_MAX {
                    let mut this_pass = 0;
                    for pid in group_members(pgid) {
                        let environ =
                            std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
                        if marks.iter().all(|m| vars.contains(&m.as_bytes()))
                            && nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
                        {
                            this_pass += 1;
                        }
                    }
                    killed += this_pass;
                    if this_pass == 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        killed
    }

    /// Stops every process of the group `pgid` (rule 17) and returns once the group has no
    /// live members. Returns `false` if it gave up after [`LauncherConfig::stop_wait_max`].
    ///
    /// The caller must keep reaping its direct child concurrently (its zombie is a member
    /// until reaped, and only the parent can reap it).
    pub async fn stop_group(&self, pgid: Pid) -> bool {
        self.stop(pgid, &Confinement::default()).await
    }

    /// Kills every process of the group `pgid` and of the attempt's cgroup with SIGKILL at
    /// once, without the SIGTERM grace (the attempt must stop now: its runtime lost the run),
    /// and returns once they are gone; `false` if it gave up after
    /// [`LauncherConfig::stop_wait_max`].
    pub async fn kill(&self, pgid: Pid, confinement: &Confinement) -> bool {
        let gone = || group_gone(pgid) && live(confinement.members()).is_empty();
        let give_up_at = Instant::now() + self.config.stop_wait_max;
        loop {
            if gone() {
                return true;
            }
            signal_group(pgid, Signal::SIGKILL);
            for pid in confinement.members() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            if wait_until(gone, (Instant::now() + self.stop_grace()).min(give_up_at)).await {
                return true;
            }
            if Instant::now() >= give_up_at {
                tracing::warn!(
                    pgid = pgid.as_raw(),
                    "process group still has members after SIGKILL; giving up waiting"
                );
                return false;
            }
        }
    }

    /// Like [`Launcher::stop_group`], applied to the attempt's whole cgroup as well (rule 17):
    /// a process that left the group (`setsid`) but not the cgroup is stopped too.
    pub async fn stop(&self, pgid: Pid, confinement: &Confinement) -> bool {
        let gone = || group_gone(pgid) && live(confinement.members()).is_empty();
        if gone() {
            return true;
        }
        let give_up_at = Instant::now() + self.config.stop_wait_max;
        let signal_all = |signal: Signal| {
            signal_group(pgid, signal);
            for pid in confinement.members() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
            }
        };
        signal_all(Signal::SIGTERM);
        signal_all(Signal::SIGCONT);
        if wait_until(gone, Instant::now() + self.stop_grace()).await {
            return true;
        }
        loop {
            tracing::debug!(pgid = pgid.as_raw(), "sending SIGKILL to process group");
            signal_all(Signal::SIGKILL);
            let next = (Instant::now() + self.stop_grace()).min(give_up_at);
            if wait_until(gone, next).await {
                return true;
            }
            if Instant::now() >= give_up_at {
                tracing::warn!(
                    pgid = pgid.as_raw(),
                    "process group still has members after SIGKILL; giving up waiting"
                );
                return false;
            }
        }
    }
}

/// The pids that are not zombies.
fn live(pids: Vec<i32>) -> Vec<i32> {
    pids.into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
                })
                .is_some_and(|state| state != "Z" && state != "X")
        })
        .collect()
}

fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => {
            tracing::warn!(pgid = pgid.as_raw(), %error, ?signal, "signalling process group failed");
        }
    }
}

/// Polls until `gone` holds or `deadline` passes; true when it holds.
async fn wait_until(gone: impl Fn() -> bool, deadline: Instant) -> bool {
    loop {
        if gone() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(STOP_POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// True when the group has no members (`killpg(pgid, 0)` fails with ESRCH) or only
/// zombies (orphans waiting for an init that reaps slowly, or never).
pub(crate) fn group_gone(pgid: Pid) -> bool {
    match killpg(pgid, None) {
        Err(Errno::ESRCH) => true,
        Ok(()) => only_zombies(pgid),
        // EPERM: a member we may not signal (e.g. a setuid program) still exists.
        Err(_) => false,
    }
}

/// True when every process of the group is a zombie (Linux `/proc`; `false` elsewhere).
fn only_zombies(pgid: Pid) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may contain anything, so parse after the
        // last `)`.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut fields = stat[close + 1..].split_whitespace();
        let (Some(state), Some(_ppid), Some(pgrp)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if pgrp == pgid.as_raw().to_string() && state != "Z" && state != "X" {
            return false;
        }
    }
    true
}

/// Sends SIGKILL to the group when dropped while armed: if an attempt's future is dropped
/// mid-run, its processes do not outlive it.
#[derive(Debug)]
pub(crate) struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl GroupGuard {
    pub(crate) fn new(pgid: Pid) -> GroupGuard {
        GroupGuard { pgid, armed: true }
    }

    /// Call once the group is known to be gone (its pgid may be reused afterwards).
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Passes over a recorded group when reaping leftovers.
const REAP_PASSES_MAX: usize = 50;

/// Pids whose process group is `pgid` (from `/proc/<pid>/stat`), zombies excluded.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the command name, which is parenthesised and may contain spaces:
            // state, ppid, pgrp, …
            stat.rsplit_once(')')
                .map(|(_, rest)| {
                    let mut fields = rest.split_whitespace();
                    let state = fields.next();
                    state != Some("Z") && fields.nth(1) == Some(&pgid.to_string())
                })
                .unwrap_or(false)
        })
        .collect()
}
