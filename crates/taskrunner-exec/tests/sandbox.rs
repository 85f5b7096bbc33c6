#![allow(clippy::unwrap_used)]
//! The process sandbox on this machine (SPEC §7): sealed networking, memory/CPU/pids limits,
//! wall-time quota, filesystem confinement, argument passing, unavailable controls. Tests that
//! need root or a kernel feature say so on stderr and skip.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskrunner_exec::{
    CommandExecutor, Launcher, LauncherConfig, NetworkMode, Sandbox, SandboxConfig, SandboxSpec,
    ShellExecutor,
};

use common::{reason, request, run};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn sandbox(config: SandboxConfig) -> Arc<Sandbox> {
    Arc::new(Sandbox::new(config))
}

fn shell_with(sandbox: Arc<Sandbox>) -> ShellExecutor {
    ShellExecutor::new(Arc::new(Launcher::with_isolation(
        LauncherConfig {
            stop_grace: Duration::from_millis(200),
            ..LauncherConfig::default()
        },
        sandbox,
    )))
}

/// Skips (with a message) unless `ok`.
macro_rules! require {
    ($ok:expr, $what:expr) => {
        if !$ok {
            eprintln!("SKIPPED: {} ({})", $what, module_path!());
            return;
        }
    };
}

/// A TCP listener on the host's loopback that answers every connection with a line.
async fn loopback_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = socket.write_all(b"hello\n").await;
        }
    });
    port
}

fn connect_command(port: u16) -> serde_json::Value {
    json!({"command": ["/usr/bin/bash", "-c",
        format!("exec 3<>/dev/tcp/127.0.0.1/{port} && head -n1 <&3")]})
}

#[tokio::test]
async fn sealed_steps_cannot_reach_the_host_loopback_but_networked_ones_can() {
    let sb = sandbox(SandboxConfig::default());
    require!(
        sb.capabilities().network.is_enforced(),
        "no network namespaces on this host"
    );
    require!(
        std::path::Path::new("/usr/bin/bash").exists(),
        "needs /usr/bin/bash"
    );
    let shell = shell_with(sb);
    let port = loopback_server().await;
    let dir = tempfile::tempdir().unwrap();

    let mut networked = request("builtin:shell", connect_command(port), dir.path());
    networked.sandbox = SandboxSpec::new(NetworkMode::Shared);
    let (outcome, lines) = run(&shell, networked).await;
    assert!(outcome.is_success(), "{outcome:?} {lines:?}");
    assert_eq!(common::stdout(&lines), ["hello"]);

    let mut sealed = request("builtin:shell", connect_command(port), dir.path());
    sealed.sandbox = SandboxSpec::new(NetworkMode::Sealed);
    let (outcome, lines) = run(&shell, sealed).await;
    assert_eq!(reason(&outcome), "exit-code", "{outcome:?} {lines:?}");
    assert!(common::stdout(&lines).is_empty(), "{lines:?}");
    let sandbox_line = lines
        .iter()
        .find(|l| l.stream == taskrunner_exec::OutputStream::Sandbox)
        .expect("a sandbox line");
    assert_eq!(
        sandbox_line
            .metadata
            .get("sandbox.network")
            .map(String::as_str),
        Some("netns (loopback only)")
    );

    // Inside, loopback exists and is up (its own, not the host's).
    let mut own_loopback = request(
        "builtin:shell",
        // /proc/net is the reader's namespace (sysfs would show the mounter's).
        json!({"script": "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ip -o link show lo | grep -c 'LOOPBACK,UP'"}),
        dir.path(),
    );
    own_loopback.sandbox = SandboxSpec::new(NetworkMode::Sealed);
    let (outcome, lines) = run(&shell, own_loopback).await;
    assert!(outcome.is_success(), "{outcome:?} {lines:?}");
    let out = common::stdout(&lines);
    assert_eq!(out, ["lo", "1"], "only loopback, and it is up: {out:?}");
}

#[tokio::test]
async fn exceeding_the_memory_limit_ends_the_attempt_with_memory_limit() {
    let sb = sandbox(SandboxConfig::default());
    require!(
        sb.capabilities().memory.is_enforced(),
        "no cgroup memory controller on this host"
    );
    let shell = shell_with(sb);
    let dir = tempfile::tempdir().unwrap();
    let mut req = request(
        "builtin:shell",
        // Holds ~200 MB in a shell variable.
        json!({"command": ["/usr/bin/bash", "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}"]}),
        dir.path(),
    );
    req.sandbox = SandboxSpec::new(NetworkMode::Sealed).with_memory_limit_mib(Some(32));
    let (outcome, lines) = run(&shell, req).await;
    assert_eq!(reason(&outcome), "memory-limit", "{outcome:?} {lines:?}");

    // Within the limit the same kind of step succeeds.
    let mut small = request(
        "builtin:shell",
        json!({"command": ["/usr/bin/bash", "-c",
            "x=$(head -c 1000000 /dev/zero | tr '\\0' a); echo ${#x}"]}),
        dir.path(),
    );
    small.sandbox = SandboxSpec::new(NetworkMode::Sealed).with_memory_limit_mib(Some(32));
    let (outcome, lines) = run(&shell, small).await;
    assert!(outcome.is_success(), "{outcome:?} {lines:?}");
    assert_eq!(common::stdout(&lines), ["1000000"]);
}

#[tokio::test]
async fn a_cpu_limit_is_applied_and_recorded() {
    let sb = sandbox(SandboxConfig::default());
    require!(
        sb.capabilities().cpu.is_enforced(),
        "no cgroup cpu controller on this host"
    );
    let shell = shell_with(sb);
    let dir = tempfile::tempdir().unwrap();
    // The step reads its own cgroup's quota back (v1: cpu.cfs_quota_us, v2: cpu.max).
    let script = r#"
        p=$(grep -E '^[0-9]+:(cpu|cpu,cpuacct|cpuacct,cpu):' /proc/self/cgroup | cut -d: -f3)
        if [ -n "$p" ]; then
            cat /sys/fs/cgroup/cpu$p/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu,cpuacct$p/cpu.cfs_quota_us
        else
            p=$(sed -n 's/^0:://p' /proc/self/cgroup); cut -d' ' -f1 /sys/fs/cgroup$p/cpu.max
        fi"#;
    let mut req = request("builtin:shell", json!({ "script": script }), dir.path());
    req.sandbox = SandboxSpec::new(NetworkMode::Sealed).with_cpu_limit_millicores(Some(250));
    let (outcome, lines) = run(&shell, req).await;
    assert!(outcome.is_success(), "{outcome:?} {lines:?}");
    let sandbox_line = lines
        .iter()
        .find(|l| l.stream == taskrunner_exec::OutputStream::Sandbox)
        .unwrap();
    assert!(
        sandbox_line.metadata["sandbox.cpu"].contains("250 millicores"),
        "{sandbox_line:?}"
    );
    assert_eq!(common::stdout(&lines), ["25000"], "{lines:?}");
}

#[tokio::test]
async fn a_sleeping_step_is_killed_at_its_quota_and_leaves_nothing_behind() {
    let shell = shell_with(sandbox(SandboxConfig::default()));
    let dir = tempfile::tempdir().unwrap();
    let mut req = request(
        "builtin:shell",
        // A child in its own session (outside the process group) sleeps too.
        json!({"script": "setsid sleep 300 & sleep 300"}),
        dir.path(),
    );
    req.timeout = Some(Duration::from_millis(500));
    let (outcome, lines) = run(&shell, req).await;
    assert_eq!(reason(&outcome), "timeout", "{outcome:?} {lines:?}");
    let leftovers = std::process::Command::new("pgrep")
        .args(["-f", "^sleep 300$"])
        .output();
    if let Ok(out) = leftovers {
        let mine: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .map(|e| {
                        String::from_utf8_lossy(&e)
                            .contains(&format!("TASKRUNNER_WORKSPACE={}", dir.path().display()))
                    })
                    .unwrap_or(false)
            })
            .map(str::to_owned)
            .collect();
        assert!(mine.is_empty(), "left behind: {mine:?}");
    }
}

#[tokio::test]
async fn a_fork_bomb_hits_the_process_limit_and_fails_closed() {
    let sb = sandbox(SandboxConfig {
        pids_max: Some(64),
        ..SandboxConfig::default()
    });
    require!(
        sb.capabilities().pids.is_enforced(),
        "no cgroup pids controller on this host"
    );
    let shell = shell_with(sb);
    let dir = tempfile::tempdir().unwrap();
    let mut req = request(
        "builtin:shell",
        json!({"script": "bomb() { bomb | bomb & }; bomb; sleep 5"}),
        dir.path(),
    );
    req.timeout = Some(Duration::from_secs(3));
    let (outcome, lines) = run(&shell, req).await;
    let taskrunner_exec::ExecOutcome::Failed { message, .. } = &outcome else {
        panic!("a fork bomb succeeded: {lines:?}");
    };
    assert!(message.contains("process limit"), "{message}");
    // The host is still healthy: a normal step runs.
    let (outcome, _) = run(
        &shell,
        request("builtin:shell", json!({"script": "echo fine"}), dir.path()),
    )
    .await;
    assert!(outcome.is_success(), "{outcome:?}");
}

#[tokio::test]
async fn files_outside_the_workspace_cannot_be_written() {
    let sb = sandbox(SandboxConfig::default());
    require!(
        sb.capabilities().filesystem.is_enforced(),
        "no Landlock on this kernel"
    );
    let shell = shell_with(sb);
    let root = tempfile::tempdir().unwrap();
    let workspace = root.path().join("ws");
    std::fs::create_dir(&workspace).unwrap();
    let (outcome, lines) = run(
        &shell,
        request(
            "builtin:shell",
            json!({"script": "echo ok > inside; echo kv=1 >> \"$TASKRUNNER_OUTPUT\"; echo bad > ../escape"}),
            &workspace,
        ),
    )
    .await;
    assert_eq!(reason(&outcome), "exit-code", "{outcome:?} {lines:?}");
    assert!(workspace.join("inside").exists());
    assert!(!root.path().join("escape").exists());
    assert!(
        common::stderr(&lines)
            .iter()
            .any(|l| l.contains("Permission denied")),
        "{lines:?}"
    );
    // System paths are readable, not writable.
    let (outcome, lines) = run(
        &shell,
        request(
            "builtin:shell",
            json!({"script": "cat /etc/hostname >/dev/null; touch /etc/taskrunner-probe"}),
            &workspace,
        ),
    )
    .await;
    assert_eq!(reason(&outcome), "exit-code", "{outcome:?} {lines:?}");
    assert!(!std::path::Path::new("/etc/taskrunner-probe").exists());
    // The output file still works.
    let (outcome, _) = run(
        &shell,
        request(
            "builtin:shell",
            json!({"script": "echo kv=1 >> \"$TASKRUNNER_OUTPUT\""}),
            &workspace,
        ),
    )
    .await;
    assert_eq!(outcome.outputs()["kv"], "1");
}

#[tokio::test]
async fn a_root_host_drops_every_capability() {
    require!(is_root(), "needs root");
    let shell = shell_with(sandbox(SandboxConfig::default()));
    let dir = tempfile::tempdir().unwrap();
    let (outcome, lines) = run(
        &shell,
        request(
            "builtin:shell",
            json!({"script": "grep -E '^Cap(Eff|Bnd|Prm)' /proc/self/status"}),
            dir.path(),
        ),
    )
    .await;
    assert!(outcome.is_success(), "{outcome:?} {lines:?}");
    for line in common::stdout(&lines) {
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
}

#[tokio::test]
async fn inherited_descriptors_are_not_passed_on() {
    let shell = shell_with(sandbox(SandboxConfig::default()));
    let dir = tempfile::tempdir().unwrap();
    // A descriptor without close-on-exec in the host process.
    let file = std::fs::File::open("/etc/hostname").unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let (outcome, lines) = run(
        &shell,
        request(
            "builtin:shell",
            json!({"script": format!("test -e /proc/self/fd/{fd} && echo leaked || echo closed")}),
            dir.path(),
        ),
    )
    .await;
    drop(file);
    // Without Landlock /proc is readable; with it, /proc is not granted and `test` fails too.
    assert!(outcome.is_success(), "{outcome:?} {lines:?}");
    assert_eq!(common::stdout(&lines), ["closed"]);
}

#[tokio::test]
async fn a_hostile_value_reaches_a_host_command_as_one_literal_argument() {
    let dir = tempfile::tempdir().unwrap();
    let executor = CommandExecutor::with_launcher(
        vec![
            "/usr/bin/printf".into(),
            "[%s]\\n".into(),
            "{{ with.target }}".into(),
        ],
        Arc::new(Launcher::with_isolation(
            LauncherConfig::default(),
            sandbox(SandboxConfig::default()),
        )),
    )
    .unwrap();
    let (outcome, lines) = run(
        &executor,
        request(
            "builtin:scanner",
            json!({"target": "; rm -rf / $(id) `id` *"}),
            dir.path(),
        ),
    )
    .await;
    assert!(outcome.is_success(), "{outcome:?} {lines:?}");
    assert_eq!(common::stdout(&lines), ["[; rm -rf / $(id) `id` *]"]);
}

#[tokio::test]
async fn missing_controls_fail_with_sandbox_unavailable_unless_unsandboxed() {
    let dir = tempfile::tempdir().unwrap();
    let without_cgroups = SandboxConfig {
        cgroups: false,
        ..SandboxConfig::default()
    };
    let shell = shell_with(sandbox(without_cgroups.clone()));
    let mut req = request("builtin:shell", json!({"script": "echo ran"}), dir.path());
    req.sandbox = SandboxSpec::new(NetworkMode::Shared).with_memory_limit_mib(Some(64));
    let (outcome, lines) = run(&shell, req.clone()).await;
    assert_eq!(reason(&outcome), "sandbox-unavailable", "{outcome:?}");
    let taskrunner_exec::ExecOutcome::Failed { message, .. } = &outcome else {
        unreachable!()
    };
    assert!(message.contains("memory limit of 64 MiB"), "{message}");
    assert!(common::stdout(&lines).is_empty(), "it never ran: {lines:?}");

    let unsandboxed = shell_with(sandbox(SandboxConfig {
        unsandboxed: true,
        ..without_cgroups
    }));
    let (outcome, lines) = run(&unsandboxed, req).await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(common::stdout(&lines), ["ran"]);
    let warning = lines
        .iter()
        .find(|l| l.metadata.contains_key("unsandboxed"))
        .expect("a loud warning line");
    assert!(
        warning.line.contains("memory limit of 64 MiB"),
        "{warning:?}"
    );
    assert!(warning.line.contains("NOT enforced"), "{warning:?}");
}

#[tokio::test]
async fn capabilities_describe_every_control() {
    let sb = Sandbox::new(SandboxConfig::default());
    let caps = sb.capabilities();
    let text = caps.to_string();
    for (name, _) in caps.entries() {
        assert!(text.contains(name), "{text}");
    }
    if is_root() {
        assert!(caps.network.is_enforced(), "{text}");
        assert!(caps.privileges.is_enforced(), "{text}");
    }
}
