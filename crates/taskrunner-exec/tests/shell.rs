#![allow(clippy::unwrap_used)]
//! `builtin:shell` with real processes: parameters, environment, streaming, masking,
//! outputs and exit codes.

mod common;

use common::{reason, request, run, stderr, stdout};
use serde_json::{Value, json};
use taskrunner_exec::{ExecOutcome, LINE_BYTES_MAX, ShellExecutor};

fn shell() -> ShellExecutor {
    ShellExecutor::default()
}

fn script(text: &str) -> Value {
    json!({ "script": text })
}

#[tokio::test]
async fn outputs_file_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, lines) = run(
        &shell(),
        request(
            "builtin:shell",
            script(
                r#"echo "a=1" >> "$TASKRUNNER_OUTPUT"
echo "a=2" >> "$TASKRUNNER_OUTPUT"
echo "b=x=y" >> "$TASKRUNNER_OUTPUT"
echo "no equals sign" >> "$TASKRUNNER_OUTPUT"
echo "n=42" >> "$TASKRUNNER_OUTPUT"
echo "$TASKRUNNER_OUTPUT""#,
            ),
            dir.path(),
        ),
    )
    .await;
    let expected = json!({"exitCode": 0, "a": "2", "b": "x=y", "n": "42"});
    assert_eq!(
        outcome,
        ExecOutcome::Succeeded {
            outputs: expected.as_object().unwrap().clone()
        }
    );
    // The output file lived outside the workspace and is gone.
    let path = std::path::PathBuf::from(stdout(&lines)[0]);
    assert!(!path.exists(), "{path:?} still exists");
    assert!(!path.starts_with(dir.path()));
}

#[tokio::test]
async fn non_zero_exit_fails_with_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, lines) = run(
        &shell(),
        request(
            "builtin:shell",
            script("echo k=v >> \"$TASKRUNNER_OUTPUT\"\necho before\nexit 3\necho after"),
            dir.path(),
        ),
    )
    .await;
    let ExecOutcome::Failed {
        reason,
        message,
        outputs,
    } = outcome
    else {
        panic!("expected failure, got {outcome:?}");
    };
    assert_eq!(reason, "exit-code");
    assert!(message.contains('3'), "{message}");
    assert_eq!(outputs["exitCode"], json!(3));
    assert_eq!(outputs["k"], json!("v"));
    assert_eq!(stdout(&lines), ["before"]);
}

#[tokio::test]
async fn sh_runs_with_errexit_and_nounset() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, lines) = run(
        &shell(),
        request(
            "builtin:shell",
            script("false\necho unreachable"),
            dir.path(),
        ),
    )
    .await;
    assert_eq!(reason(&outcome), "exit-code");
    assert!(stdout(&lines).is_empty());

    let (outcome, _) = run(
        &shell(),
        request(
            "builtin:shell",
            script("echo \"$UNSET_VARIABLE\""),
            dir.path(),
        ),
    )
    .await;
    assert_eq!(reason(&outcome), "exit-code");
}

#[tokio::test]
async fn stderr_lines_are_separate() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, lines) = run(
        &shell(),
        request(
            "builtin:shell",
            script("echo out1\necho err1 >&2\necho out2\necho err2 >&2"),
            dir.path(),
        ),
    )
    .await;
    assert!(outcome.is_success());
    assert_eq!(stdout(&lines), ["out1", "out2"]);
    assert_eq!(stderr(&lines), ["err1", "err2"]);
}

#[tokio::test]
async fn environment_is_cleared() {
    // Cargo sets CARGO_MANIFEST_DIR for the test process; the step must not see it.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let dir = tempfile::tempdir().unwrap();
    let mut req = request(
        "builtin:shell",
        json!({"script": "env", "env": {"FOO": "bar baz", "TASKRUNNER_RUN_ID": "spoofed"}}),
        dir.path(),
    );
    req.attempt = 2;
    let (outcome, lines) = run(&shell(), req).await;
    assert!(outcome.is_success(), "{outcome:?}");
    let env = stdout(&lines);
    assert!(env.contains(&"FOO=bar baz"), "{env:?}");
    assert!(
        env.contains(&"PATH=/usr/local/bin:/usr/bin:/bin"),
        "{env:?}"
    );
    assert!(env.contains(&"TASKRUNNER_RUN_ID=run-1"), "{env:?}");
    assert!(env.contains(&"TASKRUNNER_STEP_ID=step-a"), "{env:?}");
    assert!(env.contains(&"TASKRUNNER_ATTEMPT=2"), "{env:?}");
    assert!(env.contains(&"TASKRUNNER_TENANT=acme"), "{env:?}");
    assert!(
        env.contains(&"TASKRUNNER_IDEMPOTENCY_KEY=acme/run-1/step-a/1"),
        "{env:?}"
    );
    let workspace = format!("TASKRUNNER_WORKSPACE={}", dir.path().display());
    assert!(env.contains(&workspace.as_str()), "{env:?}");
    assert!(env.iter().any(|l| l.starts_with("TASKRUNNER_OUTPUT=")));
    assert!(!env.iter().any(|l| l.starts_with("CARGO")), "{env:?}");
    assert!(!env.iter().any(|l| l.starts_with("HOME=")), "{env:?}");
}

#[tokio::test]
async fn path_can_be_overridden() {
    let dir = tempfile::tempdir().unwrap();
    let (_, lines) = run(
        &shell(),
        request(
            "builtin:shell",
            json!({"command": ["/usr/bin/env"], "env": {"PATH": "/opt/bin"}}),
            dir.path(),
        ),
    )
    .await;
    assert!(stdout(&lines).contains(&"PATH=/opt/bin"));
}

#[tokio::test]
async fn working_directory_is_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, lines) = run(
        &shell(),
        request(
            "builtin:shell",
            script("pwd -P\necho hi > made-here"),
            dir.path(),
        ),
    )
    .await;
    assert!(outcome.is_success());
    let canonical = dir.path().canonicalize().unwrap();
    assert_eq!(stdout(&lines), [canonical.to_str().unwrap()]);
    assert!(dir.path().join("made-here").exists());
}

#[tokio::test]
async fn script_goes_through_stdin_not_argv() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, lines) = run(
        &shell(),
        request(
            "builtin:shell",
            script("# marker-7f3a9\ntr '\\0' ' ' < /proc/$$/cmdline\necho"),
            dir.path(),
        ),
    )
    .await;
    assert!(outcome.is_success(), "{outcome:?}");
    let argv = stdout(&lines)[0];
    assert_eq!(argv.trim_end(), "/bin/sh -eu");
    assert!(!argv.contains("marker-7f3a9"));
}

#[tokio::test]
async fn stdin_is_closed_after_the_script() {
    let dir = tempfile::tempdir().unwrap();
    // `cat` would wait forever if stdin stayed open after the script was written.
    let (outcome, lines) = run(
        &shell(),
        request(
            "builtin:shell",
            script("cat >/dev/null\necho done"),
            dir.path(),
        ),
    )
    .await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(stdout(&lines), ["done"]);
}

#[tokio::test]
async fn command_runs_without_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, lines) = run(
        &shell(),
        request(
            "builtin:shell",
            json!({"command": ["printf", "%s|%s\\n", "$HOME", "a b"]}),
            dir.path(),
        ),
    )
    .await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(stdout(&lines), ["$HOME|a b"]);
    assert_eq!(outcome.outputs()["exitCode"], json!(0));
}

#[tokio::test]
async fn secret_printed_in_two_writes_is_masked() {
    let dir = tempfile::tempdir().unwrap();
    let mut req = request(
        "builtin:shell",
        script(
            "printf 'sec'; sleep 0.1; printf 'ret\\n'\n\
             echo 'also secret here' >&2\n\
             echo \"token=my secret\" >> \"$TASKRUNNER_OUTPUT\"",
        ),
        dir.path(),
    );
    req.secrets = vec!["secret".into()];
    let (outcome, lines) = run(&shell(), req).await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(stdout(&lines), ["***"]);
    assert_eq!(stderr(&lines), ["also *** here"]);
    assert_eq!(outcome.outputs()["token"], json!("my ***"));
}

#[tokio::test]
async fn partial_last_line_is_emitted_at_end_of_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (_, lines) = run(
        &shell(),
        request("builtin:shell", script("printf 'one\\ntwo'"), dir.path()),
    )
    .await;
    assert_eq!(stdout(&lines), ["one", "two"]);
}

#[tokio::test]
async fn long_lines_are_split_at_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let total = 3 * LINE_BYTES_MAX + 1000;
    let (outcome, lines) = run(
        &shell(),
        request(
            "builtin:shell",
            script(&format!(
                "head -c {total} /dev/zero | tr '\\0' a\necho\necho short"
            )),
            dir.path(),
        ),
    )
    .await;
    assert!(outcome.is_success(), "{outcome:?}");
    let out = stdout(&lines);
    assert_eq!(
        out.len(),
        5,
        "{:?}",
        out.iter().map(|l| l.len()).collect::<Vec<_>>()
    );
    assert!(
        out[..4]
            .iter()
            .all(|l| l.len() <= LINE_BYTES_MAX && l.bytes().all(|b| b == b'a'))
    );
    assert_eq!(out[..4].iter().map(|l| l.len()).sum::<usize>(), total);
    assert_eq!(out[4], "short");
}

#[tokio::test]
async fn secret_across_the_line_cap_is_masked() {
    let dir = tempfile::tempdir().unwrap();
    // The secret starts 3 bytes before the cap: a naive split would leak both halves.
    let pad = LINE_BYTES_MAX - 3;
    let mut req = request(
        "builtin:shell",
        script(&format!(
            "head -c {pad} /dev/zero | tr '\\0' a\nprintf 'TOPSECRET\\n'"
        )),
        dir.path(),
    );
    req.secrets = vec!["TOPSECRET".into()];
    let (_, lines) = run(&shell(), req).await;
    let joined: String = stdout(&lines).concat();
    assert!(!joined.contains("TOP") && !joined.contains("SECRET"));
    assert!(joined.ends_with("***"));
    assert!(stdout(&lines).iter().all(|l| l.len() <= LINE_BYTES_MAX));
}

#[tokio::test]
async fn invalid_utf8_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, lines) = run(
        &shell(),
        request("builtin:shell", script("printf 'a\\377b\\n'"), dir.path()),
    )
    .await;
    assert!(outcome.is_success());
    assert_eq!(stdout(&lines), ["a\u{FFFD}b"]);
}

#[tokio::test]
async fn many_lines_arrive_in_order_through_a_small_channel() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, lines) = run(
        &shell(),
        request("builtin:shell", script("seq 1 5000"), dir.path()),
    )
    .await;
    assert!(outcome.is_success());
    let expected: Vec<String> = (1..=5000).map(|i| i.to_string()).collect();
    assert_eq!(stdout(&lines), expected);
}

#[tokio::test]
async fn dropped_output_receiver_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let outcome = tokio::time::timeout(
        common::HANG_GUARD,
        taskrunner_exec::Executor::execute(
            &shell(),
            request(
                "builtin:shell",
                script("seq 1 200000\necho done=yes >> \"$TASKRUNNER_OUTPUT\""),
                dir.path(),
            ),
            tx,
            tokio_util::sync::CancellationToken::new(),
        ),
    )
    .await
    .expect("executor hung on a dropped receiver");
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(outcome.outputs()["done"], json!("yes"));
}

#[tokio::test]
async fn receiver_dropped_midway_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let reader = tokio::spawn(async move {
        let first = rx.recv().await;
        drop(rx);
        first
    });
    let outcome = tokio::time::timeout(
        common::HANG_GUARD,
        taskrunner_exec::Executor::execute(
            &shell(),
            request("builtin:shell", script("seq 1 100000"), dir.path()),
            tx,
            tokio_util::sync::CancellationToken::new(),
        ),
    )
    .await
    .expect("executor hung");
    assert!(outcome.is_success());
    assert_eq!(reader.await.unwrap().unwrap().line, "1");
}

#[tokio::test]
async fn spawn_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, _) = run(
        &shell(),
        request(
            "builtin:shell",
            json!({"command": ["/nonexistent/program"]}),
            dir.path(),
        ),
    )
    .await;
    assert_eq!(reason(&outcome), "spawn-failed");

    let missing = dir.path().join("gone");
    let (outcome, _) = run(&shell(), request("builtin:shell", script("true"), &missing)).await;
    assert_eq!(reason(&outcome), "spawn-failed");
}

#[tokio::test]
async fn invalid_parameters() {
    let dir = tempfile::tempdir().unwrap();
    for with in [
        json!({}),
        json!(null),
        json!("echo hi"),
        json!({"script": "true", "command": ["true"]}),
        json!({"script": 5}),
        json!({"command": []}),
        json!({"command": "true"}),
        json!({"command": ["true", 1]}),
        json!({"command": [""]}),
        json!({"command": ["a\u{0}b"]}),
        json!({"script": "true", "env": {"A": 1}}),
        json!({"script": "true", "env": ["A=1"]}),
        json!({"script": "true", "env": {"A=B": "x"}}),
        json!({"script": "true", "scirpt": "typo"}),
    ] {
        let (outcome, lines) =
            run(&shell(), request("builtin:shell", with.clone(), dir.path())).await;
        assert_eq!(reason(&outcome), "invalid-parameters", "{with}");
        assert!(lines.is_empty());
    }
}
