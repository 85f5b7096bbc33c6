//! Helpers shared by the integration tests: building requests and running an executor to
//! completion while collecting its output lines.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use taskrunner_exec::{ExecOutcome, ExecRequest, Executor, OutputLine, OutputStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Upper bound on any single executor run in these tests (a hang guard, not a timing check).
pub const HANG_GUARD: Duration = Duration::from_secs(20);

pub fn request(uses: &str, with: Value, workspace: &Path) -> ExecRequest {
    ExecRequest {
        tenant: "acme".into(),
        run_id: "run-1".into(),
        step_id: "step-a".into(),
        attempt: 1,
        idempotency_key: "acme/run-1/step-a/1".into(),
        uses: uses.into(),
        with,
        workspace: workspace.to_path_buf(),
        timeout: None,
        secrets: Vec::new(),
        sandbox: taskrunner_exec::SandboxSpec::default(),
        kill: tokio_util::sync::CancellationToken::new(),
    }
}

/// Runs `executor` and collects every line it sends.
pub async fn run(executor: &dyn Executor, request: ExecRequest) -> (ExecOutcome, Vec<OutputLine>) {
    run_with_cancel(executor, request, CancellationToken::new()).await
}

pub async fn run_with_cancel(
    executor: &dyn Executor,
    request: ExecRequest,
    cancel: CancellationToken,
) -> (ExecOutcome, Vec<OutputLine>) {
    let (tx, mut rx) = mpsc::channel(16);
    let collector = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        lines
    });
    let outcome = tokio::time::timeout(HANG_GUARD, executor.execute(request, tx, cancel))
        .await
        .expect("executor hung");
    let lines = tokio::time::timeout(HANG_GUARD, collector)
        .await
        .expect("output channel never closed")
        .unwrap();
    (outcome, lines)
}

pub fn stdout(lines: &[OutputLine]) -> Vec<&str> {
    of(lines, OutputStream::Stdout)
}

pub fn stderr(lines: &[OutputLine]) -> Vec<&str> {
    of(lines, OutputStream::Stderr)
}

fn of(lines: &[OutputLine], stream: OutputStream) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.line.as_str())
        .collect()
}

pub fn reason(outcome: &ExecOutcome) -> &str {
    outcome.failure_reason().unwrap_or("succeeded")
}

/// True when no live (non-zombie) process has `pgrp == pgid`. Zombies are ignored because
/// an init that does not reap orphans would otherwise keep them around forever.
pub fn group_has_no_live_members(pgid: i32) -> bool {
    use nix::errno::Errno;
    use nix::sys::signal::killpg;
    use nix::unistd::Pid;
    match killpg(Pid::from_raw(pgid), None) {
        Err(Errno::ESRCH) => true,
        _ => live_pids().iter().all(|(_, pgrp)| *pgrp != pgid),
    }
}

/// True when `pid` is gone or a zombie.
pub fn process_is_dead(pid: i32) -> bool {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    match kill(Pid::from_raw(pid), None) {
        Err(Errno::ESRCH) => true,
        _ => !live_pids().iter().any(|(p, _)| *p == pid),
    }
}

/// (pid, pgrp) of every non-zombie process, from `/proc`.
fn live_pids() -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let close = stat.rfind(')').unwrap();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields[0] != "Z" && fields[0] != "X" {
            out.push((pid, fields[2].parse().unwrap()));
        }
    }
    out
}

pub fn output_i32(outcome: &ExecOutcome, key: &str) -> i32 {
    outcome.outputs()[key]
        .as_str()
        .unwrap_or_else(|| panic!("output {key} missing in {outcome:?}"))
        .trim()
        .parse()
        .unwrap()
}
