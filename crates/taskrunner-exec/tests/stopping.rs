#![allow(clippy::unwrap_used)]
//! Rule 17 with real processes: timeouts and cancellation stop the whole process group
//! (SIGTERM, then SIGKILL after the grace), and the attempt ends only when it is empty.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    HANG_GUARD, group_has_no_live_members, output_i32, process_is_dead, reason, request, run,
    stdout,
};
use serde_json::json;
use taskrunner_exec::{Executor, Launcher, LauncherConfig, OutputLine, ShellExecutor};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn shell_with_grace(grace: Duration) -> ShellExecutor {
    ShellExecutor::new(Arc::new(Launcher::new(LauncherConfig {
        stop_grace: grace,
        ..LauncherConfig::default()
    })))
}

/// Records the shell's pid (= the group id) and a background child's pid, then blocks.
const GROUP_SCRIPT: &str = r#"echo "pgid=$$" >> "$TASKRUNNER_OUTPUT"
sleep 100 &
echo "bg=$!" >> "$TASKRUNNER_OUTPUT"
echo started
sleep 100
"#;

#[tokio::test]
async fn timeout_kills_the_process_and_its_background_children() {
    let dir = tempfile::tempdir().unwrap();
    let mut req = request("builtin:shell", json!({"script": GROUP_SCRIPT}), dir.path());
    req.timeout = Some(Duration::from_millis(500));
    let (outcome, lines) = run(&ShellExecutor::default(), req).await;
    assert_eq!(reason(&outcome), "timeout", "{outcome:?}");
    assert_eq!(stdout(&lines), ["started"]);
    let pgid = output_i32(&outcome, "pgid");
    let bg = output_i32(&outcome, "bg");
    assert!(group_has_no_live_members(pgid), "group {pgid} survived");
    assert!(process_is_dead(bg), "background child {bg} survived");
}

#[tokio::test]
async fn cancellation_mid_run_stops_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let shell = ShellExecutor::default();
    let attempt = tokio::spawn(shell.execute(
        request("builtin:shell", json!({"script": GROUP_SCRIPT}), dir.path()),
        tx,
        cancel.clone(),
    ));
    let first = tokio::time::timeout(HANG_GUARD, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.line, "started");
    cancel.cancel();
    let outcome = tokio::time::timeout(HANG_GUARD, attempt)
        .await
        .expect("cancelled attempt hung")
        .unwrap();
    assert_eq!(reason(&outcome), "cancelled", "{outcome:?}");
    assert!(group_has_no_live_members(output_i32(&outcome, "pgid")));
    assert!(process_is_dead(output_i32(&outcome, "bg")));
}

#[tokio::test]
async fn cancelled_before_start_spawns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (outcome, _) = common::run_with_cancel(
        &ShellExecutor::default(),
        request("builtin:shell", json!({"script": "touch ran"}), dir.path()),
        cancel,
    )
    .await;
    assert_eq!(reason(&outcome), "cancelled");
    assert!(!dir.path().join("ran").exists());
}

#[tokio::test]
async fn sigterm_is_sent_first() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"trap 'echo got-term; exit 0' TERM
echo "pgid=$$" >> "$TASKRUNNER_OUTPUT"
sleep 100 &
wait
"#;
    let mut req = request("builtin:shell", json!({"script": script}), dir.path());
    req.timeout = Some(Duration::from_millis(300));
    let (outcome, lines) = run(&ShellExecutor::default(), req).await;
    assert_eq!(reason(&outcome), "timeout");
    assert_eq!(stdout(&lines), ["got-term"]);
    // The trap exited 0 gracefully; that is reported, the reason stays `timeout`.
    assert_eq!(outcome.outputs()["exitCode"], json!(0));
    assert!(group_has_no_live_members(output_i32(&outcome, "pgid")));
}

#[tokio::test]
async fn sigterm_ignoring_group_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    // Ignored signals stay ignored across exec, so the `sleep`s ignore SIGTERM too.
    let script = format!("trap '' TERM\n{GROUP_SCRIPT}");
    let mut req = request("builtin:shell", json!({"script": script}), dir.path());
    req.timeout = Some(Duration::from_millis(300));
    let (outcome, _) = run(&shell_with_grace(Duration::from_millis(300)), req).await;
    assert_eq!(reason(&outcome), "timeout", "{outcome:?}");
    assert!(group_has_no_live_members(output_i32(&outcome, "pgid")));
    assert!(process_is_dead(output_i32(&outcome, "bg")));
    // Killed by SIGKILL: no exit code to report.
    assert!(outcome.outputs().get("exitCode").is_none());
}

#[tokio::test]
async fn grace_is_capped_at_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!("trap '' TERM\n{GROUP_SCRIPT}");
    let mut req = request("builtin:shell", json!({"script": script}), dir.path());
    req.timeout = Some(Duration::from_millis(100));
    // A configured grace of an hour is clamped to STOP_GRACE_MAX; the hang guard notices
    // if it is not.
    let (outcome, _) = run(&shell_with_grace(Duration::from_secs(3600)), req).await;
    assert_eq!(reason(&outcome), "timeout");
    assert!(group_has_no_live_members(output_i32(&outcome, "pgid")));
}

#[tokio::test]
async fn leftover_background_processes_are_stopped_when_the_main_process_exits() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"sleep 100 &
echo "bg=$!" >> "$TASKRUNNER_OUTPUT"
echo "pgid=$$" >> "$TASKRUNNER_OUTPUT"
echo done
"#;
    let (outcome, lines) = run(
        &ShellExecutor::default(),
        request("builtin:shell", json!({"script": script}), dir.path()),
    )
    .await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(stdout(&lines), ["done"]);
    assert!(process_is_dead(output_i32(&outcome, "bg")));
    assert!(group_has_no_live_members(output_i32(&outcome, "pgid")));
}

#[tokio::test]
async fn a_process_outside_the_group_holding_stdout_does_not_hang_the_attempt() {
    // `setsid` leaves the process group (only a cgroup could catch it); the attempt still
    // ends once the group is gone and the drain grace has passed.
    if !std::path::Path::new("/usr/bin/setsid").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = r#"setsid sleep 100 &
echo "escaped=$!" >> "$TASKRUNNER_OUTPUT"
echo done
"#;
    let (outcome, lines) = run(
        &ShellExecutor::default(),
        request("builtin:shell", json!({"script": script}), dir.path()),
    )
    .await;
    let escaped = output_i32(&outcome, "escaped");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(escaped),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(stdout(&lines), ["done"]);
}

#[tokio::test]
async fn dropping_the_attempt_kills_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let shell = ShellExecutor::default();
    let script = r#"echo "$$" > pgid.txt
echo started
sleep 100
"#;
    let attempt = shell.execute(
        request("builtin:shell", json!({"script": script}), dir.path()),
        tx,
        CancellationToken::new(),
    );
    let attempt = tokio::spawn(attempt);
    let first = tokio::time::timeout(HANG_GUARD, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.line, "started");
    attempt.abort();
    let _ = attempt.await;
    let pgid: i32 = std::fs::read_to_string(dir.path().join("pgid.txt"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = async {
        while !group_has_no_live_members(pgid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, gone)
        .await
        .expect("group survived a dropped attempt");
}

#[tokio::test]
async fn timeout_fires_while_output_is_backpressured() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel::<OutputLine>(1);
    // A receiver that does not read until well after the timeout, then drains.
    let reader = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line.line);
        }
        lines
    });
    let script = r#"echo "pgid=$$" >> "$TASKRUNNER_OUTPUT"
seq 1 1000000
sleep 100
"#;
    let mut req = request("builtin:shell", json!({"script": script}), dir.path());
    req.timeout = Some(Duration::from_millis(300));
    let outcome = tokio::time::timeout(
        HANG_GUARD,
        ShellExecutor::default().execute(req, tx, CancellationToken::new()),
    )
    .await
    .expect("attempt hung");
    assert_eq!(reason(&outcome), "timeout");
    assert!(group_has_no_live_members(output_i32(&outcome, "pgid")));
    let lines = reader.await.unwrap();
    // The process was stopped while blocked on a full pipe: a prefix arrived, in order.
    assert!(
        !lines.is_empty() && lines.len() < 1_000_000,
        "{}",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(i, l)| *l == (i + 1).to_string())
    );
}

/// Rule 17, after a crash: the attempt's future never finished (the server died), its group is
/// still running and recorded in the ledger; the next process reaps it before any retry, and
/// leaves alone an unrelated process that happens to sit in a recorded group.
#[tokio::test]
async fn leftovers_of_a_crashed_attempt_are_reaped_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let config = LauncherConfig {
        group_ledger: Some(ledger.clone()),
        ..LauncherConfig::default()
    };
    let shell = ShellExecutor::new(Arc::new(Launcher::new(config.clone())));
    let (tx, mut rx) = mpsc::channel(4);
    use std::os::unix::process::CommandExt as _;
    let script = "sleep 100 &\necho started\nsleep 100\n";
    let attempt = shell.execute(
        request("builtin:shell", json!({"script": script}), dir.path()),
        tx,
        CancellationToken::new(),
    );
    // Drive the attempt until it runs, then lose it without running its destructors, as a
    // SIGKILLed server would.
    let mut attempt = Box::pin(attempt);
    let started = tokio::time::timeout(HANG_GUARD, async {
        tokio::select! {
            line = rx.recv() => line,
            _ = &mut attempt => None,
        }
    })
    .await
    .unwrap();
    assert_eq!(started.map(|l| l.line), Some("started".to_owned()));
    std::mem::forget(attempt);
    let recorded: Vec<i32> = std::fs::read_dir(&ledger)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    assert_eq!(recorded.len(), 1, "one live group is recorded");
    let pgid = recorded[0];
    assert!(
        !group_has_no_live_members(pgid),
        "the leftover group is alive before reaping"
    );

    let next = Launcher::new(config);
    assert!(
        next.reap_leftovers() >= 2,
        "the shell and its background sleep are killed"
    );
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while !group_has_no_live_members(pgid) {
        assert!(
            std::time::Instant::now() < deadline,
            "group {pgid} survived reaping"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        std::fs::read_dir(&ledger).unwrap().count(),
        0,
        "the ledger is emptied"
    );

    // A reused group id: the process in it is not the attempt's (no matching environment).
    let mut unrelated = std::process::Command::new("sleep")
        .arg("100")
        .process_group(0)
        .env("TASKRUNNER_RUN_ID", "someone-else")
        .spawn()
        .unwrap();
    let other = i32::try_from(unrelated.id()).unwrap();
    std::fs::write(
        ledger.join(other.to_string()),
        "TASKRUNNER_RUN_ID=r\nTASKRUNNER_STEP_ID=s\nTASKRUNNER_ATTEMPT=1\n",
    )
    .unwrap();
    assert_eq!(
        Launcher::new(LauncherConfig {
            group_ledger: Some(ledger.clone()),
            ..LauncherConfig::default()
        })
        .reap_leftovers(),
        0
    );
    assert!(
        unrelated.try_wait().unwrap().is_none(),
        "an unrelated process was killed"
    );
    unrelated.kill().unwrap();
    let _ = unrelated.wait();

    // A finished attempt leaves no ledger entry behind.
    let (outcome, _) = run(
        &shell,
        request("builtin:shell", json!({"script": "echo hi"}), dir.path()),
    )
    .await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(std::fs::read_dir(&ledger).unwrap().count(), 0);
}

/// Ignores SIGTERM (inherited by the `sleep`s), records its group, then blocks.
const TERM_IGNORING_SCRIPT: &str = r#"trap '' TERM
echo "pgid=$$" >> "$TASKRUNNER_OUTPUT"
sleep 100 &
echo "bg=$!" >> "$TASKRUNNER_OUTPUT"
echo started
sleep 100
"#;

/// Starts the TERM-ignoring script with a 2 s grace, waits for its first line, fires `fire`
/// and returns the outcome and how long the attempt took to end after that.
async fn stop_term_ignoring(
    fire: impl FnOnce(&CancellationToken, &CancellationToken),
) -> (taskrunner_exec::ExecOutcome, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let req = request(
        "builtin:shell",
        json!({"script": TERM_IGNORING_SCRIPT}),
        dir.path(),
    );
    let kill = req.kill.clone();
    let shell = shell_with_grace(Duration::from_secs(2));
    let attempt = tokio::spawn(shell.execute(req, tx, cancel.clone()));
    let first = tokio::time::timeout(HANG_GUARD, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.line, "started");
    let fired = std::time::Instant::now();
    fire(&cancel, &kill);
    let outcome = tokio::time::timeout(HANG_GUARD, attempt)
        .await
        .expect("attempt hung")
        .unwrap();
    (outcome, fired.elapsed())
}

#[tokio::test]
async fn the_kill_token_kills_the_group_at_once_without_the_grace() {
    let (outcome, took) = stop_term_ignoring(|_, kill| kill.cancel()).await;
    assert_eq!(reason(&outcome), "cancelled", "{outcome:?}");
    assert!(
        took < Duration::from_millis(1500),
        "took {took:?}: the SIGTERM grace was waited"
    );
    assert!(group_has_no_live_members(output_i32(&outcome, "pgid")));
    assert!(process_is_dead(output_i32(&outcome, "bg")));
}

#[tokio::test]
async fn the_kill_token_cuts_a_cancellation_grace_short() {
    let (outcome, took) = stop_term_ignoring(|cancel, kill| {
        cancel.cancel();
        let kill = kill.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            kill.cancel();
        });
    })
    .await;
    assert_eq!(reason(&outcome), "cancelled", "{outcome:?}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(group_has_no_live_members(output_i32(&outcome, "pgid")));
    assert!(process_is_dead(output_i32(&outcome, "bg")));
}

#[tokio::test]
async fn a_killed_attempt_spawns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let req = request("builtin:shell", json!({"script": "touch ran"}), dir.path());
    req.kill.cancel();
    let (outcome, _) = run(&ShellExecutor::default(), req).await;
    assert_eq!(reason(&outcome), "cancelled");
    assert!(!dir.path().join("ran").exists());
}
