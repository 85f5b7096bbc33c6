//! Control groups for attempts (SPEC §7): discovery of a usable cgroup v2 or v1 hierarchy,
//! one cgroup per attempt with memory, CPU and pids limits, its members (for stopping, rule
//! 17), whether the OOM killer or the pids limit struck, and removal once empty.
//!
//! Attempt cgroups live under `<our own cgroup>/taskrunner-<pid>/`, so whatever limits the
//! host put on taskrunner itself also bound its steps.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// CFS period used for CPU limits (100 ms).
const CPU_PERIOD_US: u64 = 100_000;
/// Smallest CFS quota the kernel accepts (1 ms).
const CPU_QUOTA_MIN_US: u64 = 1_000;

/// Which cgroup controllers a hierarchy offers us, and where our base directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hierarchy {
    /// cgroup v2: one base directory with the controllers enabled for its children.
    V2 {
        base: PathBuf,
        memory: bool,
        cpu: bool,
        pids: bool,
    },
    /// cgroup v1: one base directory per controller hierarchy.
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
}

impl Hierarchy {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Hierarchy::V2 { .. } => "cgroup-v2",
            Hierarchy::V1 { .. } => "cgroup-v1",
        }
    }
    pub(crate) fn has_memory(&self) -> bool {
        match self {
            Hierarchy::V2 { memory, .. } => *memory,
            Hierarchy::V1 { memory, .. } => memory.is_some(),
        }
    }
    pub(crate) fn has_cpu(&self) -> bool {
        match self {
            Hierarchy::V2 { cpu, .. } => *cpu,
            Hierarchy::V1 { cpu, .. } => cpu.is_some(),
        }
    }
    pub(crate) fn has_pids(&self) -> bool {
        match self {
            Hierarchy::V2 { pids, .. } => *pids,
            Hierarchy::V1 { pids, .. } => pids.is_some(),
        }
    }
}

/// One line of `/proc/self/mountinfo` we care about: mount point, fs type, super options.
fn cgroup_mounts() -> Vec<(PathBuf, String, Vec<String>)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts = Vec::new();
    for line in text.lines() {
        // `id parent major:minor root mountpoint options [optional…] - fstype source superopts`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4);
        let mut right = right.split(' ');
        let (Some(fstype), _, Some(superopts)) = (right.next(), right.next(), right.next()) else {
            continue;
        };
        if let Some(mount_point) = mount_point
            && (fstype == "cgroup" || fstype == "cgroup2")
        {
            mounts.push((
                PathBuf::from(unescape_mount(mount_point)),
                fstype.to_owned(),
                superopts.split(',').map(str::to_owned).collect(),
            ));
        }
    }
    mounts
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Ok(digits) = std::str::from_utf8(&bytes[i + 1..i + 4])
            && let Ok(value) = u8::from_str_radix(digits, 8)
        {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Our own cgroup path per hierarchy, from `/proc/self/cgroup`: `(controllers, path)`;
/// controllers is empty for the v2 line (`0::/path`).
fn own_cgroups() -> Vec<(Vec<String>, String)> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            Some((controllers, path.to_owned()))
        })
        .collect()
}

fn join(mount: &Path, cgroup_path: &str) -> PathBuf {
    mount.join(cgroup_path.trim_start_matches('/'))
}

/// Creates `dir` (and parents); true when it exists afterwards and we can write in it.
/// First removes the base directories of taskrunner processes that no longer exist.
fn make_dir(dir: &Path) -> bool {
    if let Some(parent) = dir.parent() {
        remove_stale(parent);
    }
    std::fs::create_dir_all(dir).is_ok() && dir.join("cgroup.procs").exists()
}

/// Removes `taskrunner-<pid>` directories (and their empty attempt cgroups) of dead pids.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("taskrunner-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(children) = std::fs::read_dir(entry.path()) {
            for child in children.flatten() {
                if child.path().is_dir() {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
        }
        let _ = std::fs::remove_dir(entry.path());
    }
}

/// Finds a usable hierarchy and creates our base directories: cgroup v2 first (if its memory,
/// cpu or pids controller can be enabled for our children), else v1 controllers.
pub(crate) fn discover() -> Result<Hierarchy, String> {
    let mounts = cgroup_mounts();
    let own = own_cgroups();
    let base_name = format!("taskrunner-{}", std::process::id());
    let mut notes = Vec::new();

    // v2
    if let (Some((mount, _, _)), Some((_, path))) = (
        mounts.iter().find(|(_, fstype, _)| fstype == "cgroup2"),
        own.iter().find(|(controllers, _)| controllers.is_empty()),
    ) {
        let own_dir = join(mount, path);
        let available =
            std::fs::read_to_string(own_dir.join("cgroup.controllers")).unwrap_or_default();
        let wanted: Vec<&str> = ["memory", "cpu", "pids"]
            .into_iter()
            .filter(|c| available.split_whitespace().any(|a| a == *c))
            .collect();
        if wanted.is_empty() {
            notes.push(format!(
                "cgroup v2 at {} offers no memory, cpu or pids controller",
                own_dir.display()
            ));
        } else {
            let base = own_dir.join(&base_name);
            let enable = |dir: &Path| {
                let line: Vec<String> = wanted.iter().map(|c| format!("+{c}")).collect();
                std::fs::write(dir.join("cgroup.subtree_control"), line.join(" ")).is_ok()
            };
            // Our own cgroup must delegate the controllers to our base, and the base to the
            // attempts (the "no internal processes" rule: the base holds no process).
            if enable(&own_dir) && make_dir(&base) && enable(&base) {
                let enabled = std::fs::read_to_string(base.join("cgroup.subtree_control"))
                    .unwrap_or_default();
                let has = |c: &str| enabled.split_whitespace().any(|e| e == c);
                return Ok(Hierarchy::V2 {
                    memory: has("memory"),
                    cpu: has("cpu"),
                    pids: has("pids"),
                    base,
                });
            }
            notes.push(format!(
                "cgroup v2 controllers cannot be delegated below {} (run taskrunner in a cgroup of its own, e.g. systemd Delegate=yes)",
                own_dir.display()
            ));
        }
    }

    // v1
    let v1_base = |controller: &str| -> Option<PathBuf> {
        let (mount, _, _) = mounts
            .iter()
            .find(|(_, fstype, opts)| fstype == "cgroup" && opts.iter().any(|o| o == controller))?;
        let (_, path) = own
            .iter()
            .find(|(controllers, _)| controllers.iter().any(|c| c == controller))?;
        let base = join(mount, path).join(&base_name);
        make_dir(&base).then_some(base)
    };
    let (memory, cpu, pids) = (v1_base("memory"), v1_base("cpu"), v1_base("pids"));
    if memory.is_some() || cpu.is_some() || pids.is_some() {
        return Ok(Hierarchy::V1 { memory, cpu, pids });
    }
    notes.push("no writable cgroup v1 memory, cpu or pids hierarchy".into());
    Err(notes.join("; "))
}

/// Limits of one attempt's cgroup.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    pub(crate) memory_bytes: Option<u64>,
    pub(crate) cpu_millicores: Option<u32>,
    pub(crate) pids_max: Option<u64>,
}

/// The cgroup(s) of one attempt; removed when dropped (once empty).
#[derive(Debug)]
pub(crate) struct AttemptCgroup {
    version2: bool,
    /// Every directory created (one for v2; one per controller for v1).
    dirs: Vec<PathBuf>,
    memory_dir: Option<PathBuf>,
    pids_dir: Option<PathBuf>,
}

static ATTEMPT_COUNTER: AtomicU64 = AtomicU64::new(0);

impl AttemptCgroup {
    /// Creates the attempt's cgroup(s) under `hierarchy` and writes `limits`.
    pub(crate) fn create(hierarchy: &Hierarchy, limits: Limits) -> Result<AttemptCgroup, String> {
        let name = format!("a{}", ATTEMPT_COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut cgroup = AttemptCgroup {
            version2: matches!(hierarchy, Hierarchy::V2 { .. }),
            dirs: Vec::new(),
            memory_dir: None,
            pids_dir: None,
        };
        let mkdir = |cgroup: &mut AttemptCgroup, base: &Path| -> Result<PathBuf, String> {
            let dir = base.join(&name);
            std::fs::create_dir(&dir)
                .map_err(|e| format!("cannot create cgroup {}: {e}", dir.display()))?;
            cgroup.dirs.push(dir.clone());
            Ok(dir)
        };
        match hierarchy {
            Hierarchy::V2 { base, .. } => {
                let dir = mkdir(&mut cgroup, base)?;
                if let Some(bytes) = limits.memory_bytes {
                    write(&dir, "memory.max", &bytes.to_string())?;
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                    let _ = std::fs::write(dir.join("memory.oom.group"), "1");
                    cgroup.memory_dir = Some(dir.clone());
                }
                if let Some(millicores) = limits.cpu_millicores {
                    write(
                        &dir,
                        "cpu.max",
                        &format!("{} {CPU_PERIOD_US}", cpu_quota_us(millicores)),
                    )?;
                }
                if let Some(max) = limits.pids_max {
                    write(&dir, "pids.max", &max.to_string())?;
                    cgroup.pids_dir = Some(dir.clone());
                }
            }
            Hierarchy::V1 { memory, cpu, pids } => {
                if let (Some(base), Some(bytes)) = (memory, limits.memory_bytes) {
                    let dir = mkdir(&mut cgroup, base)?;
                    write(&dir, "memory.limit_in_bytes", &bytes.to_string())?;
                    // Without swap accounting this file is absent; swap then is what the
                    // host has (none here), which we cannot limit.
                    let _ =
                        std::fs::write(dir.join("memory.memsw.limit_in_bytes"), bytes.to_string());
                    cgroup.memory_dir = Some(dir);
                }
                if let (Some(base), Some(millicores)) = (cpu, limits.cpu_millicores) {
                    let dir = mkdir(&mut cgroup, base)?;
                    write(&dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                    write(
                        &dir,
                        "cpu.cfs_quota_us",
                        &cpu_quota_us(millicores).to_string(),
                    )?;
                }
                if let (Some(base), Some(max)) = (pids, limits.pids_max) {
                    let dir = mkdir(&mut cgroup, base)?;
                    write(&dir, "pids.max", &max.to_string())?;
                    cgroup.pids_dir = Some(dir);
                }
            }
        }
        Ok(cgroup)
    }

    /// The `cgroup.procs` files a process writes itself into.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Live members of any of the attempt's cgroups.
    pub(crate) fn members(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs
            .iter()
            .flat_map(|d| {
                std::fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// True when the OOM killer killed a process of this attempt.
    pub(crate) fn oom_killed(&self) -> bool {
        let Some(dir) = &self.memory_dir else {
            return false;
        };
        let file = if self.version2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        counter(&text, "oom_kill") > 0
            // Kernels before 4.13 (v1) have no oom_kill counter: under_oom or a hit limit.
            || (!self.version2
                && !text.contains("oom_kill ")
                && std::fs::read_to_string(dir.join("memory.failcnt"))
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0))
    }

    /// True when a fork was refused because the pids limit was reached.
    pub(crate) fn pids_limit_hit(&self) -> bool {
        let Some(dir) = &self.pids_dir else {
            return false;
        };
        let text = std::fs::read_to_string(dir.join("pids.events")).unwrap_or_default();
        counter(&text, "max") > 0
    }
}

impl Drop for AttemptCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            // Empty by now (the attempt ends when its processes are gone); a process stuck in
            // the kernel keeps it busy, in which case the directory stays behind.
            for _ in 0..20 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        }
    }
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| format!("cannot write {value} to {}: {e}", dir.join(file).display()))
}

fn cpu_quota_us(millicores: u32) -> u64 {
    (u64::from(millicores) * CPU_PERIOD_US / 1000).max(CPU_QUOTA_MIN_US)
}

/// `name N` in a flat-keyed cgroup file.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_quotas() {
        assert_eq!(counter("oom 1\noom_kill 3\n", "oom_kill"), 3);
        assert_eq!(counter("low 0\n", "oom_kill"), 0);
        assert_eq!(cpu_quota_us(500), 50_000);
        assert_eq!(cpu_quota_us(1), CPU_QUOTA_MIN_US);
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
    }
}
