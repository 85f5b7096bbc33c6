#![allow(clippy::unwrap_used)]
//! Host-configured command executors (rule 28): templated argv, no shell, shell-like outputs.

mod common;

use std::time::Duration;

use common::{group_has_no_live_members, output_i32, reason, request, run, stderr, stdout};
use serde_json::json;
use taskrunner_exec::{CommandExecutor, ExecError, ExecOutcome};

fn command(argv: &[&str]) -> CommandExecutor {
    CommandExecutor::new(argv.iter().map(|s| s.to_string()).collect()).unwrap()
}

#[tokio::test]
async fn argv_templates_render_against_with() {
    let dir = tempfile::tempdir().unwrap();
    let scanner = command(&[
        "echo",
        "--image",
        "{{ with.image }}",
        "n={{ with.n }}",
        "{{ with.n }}",
        "{{ with.flag }}",
        "$HOME;",
    ]);
    let (outcome, lines) = run(
        &scanner,
        request(
            "builtin:scanner",
            json!({"image": "alpine:3", "n": 5, "flag": true}),
            dir.path(),
        ),
    )
    .await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(stdout(&lines), ["--image alpine:3 n=5 5 true $HOME;"]);
    assert_eq!(outcome.outputs()["exitCode"], json!(0));
}

#[tokio::test]
async fn outputs_file_exit_code_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let tool = command(&[
        "/bin/sh",
        "-c",
        "echo \"k=$1\" >> \"$TASKRUNNER_OUTPUT\"; echo warn >&2; exit \"$2\"",
        "tool",
        "{{ with.value }}",
        "{{ with.code }}",
    ]);
    let (outcome, lines) = run(
        &tool,
        request(
            "builtin:tool",
            json!({"value": "v1", "code": 0}),
            dir.path(),
        ),
    )
    .await;
    let expected = json!({"exitCode": 0, "k": "v1"});
    assert_eq!(
        outcome,
        ExecOutcome::Succeeded {
            outputs: expected.as_object().unwrap().clone()
        }
    );
    assert_eq!(stderr(&lines), ["warn"]);

    let (outcome, _) = run(
        &tool,
        request(
            "builtin:tool",
            json!({"value": "v2", "code": 4}),
            dir.path(),
        ),
    )
    .await;
    assert_eq!(reason(&outcome), "exit-code");
    assert_eq!(outcome.outputs()["exitCode"], json!(4));
    assert_eq!(outcome.outputs()["k"], json!("v2"));
}

#[tokio::test]
async fn renders_that_are_not_scalars_are_invalid_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let tool = command(&["echo", "{{ with.x }}"]);
    for with in [
        json!({}),
        json!({"x": [1]}),
        json!({"x": {"a": 1}}),
        json!({"x": "a\u{0}"}),
    ] {
        let (outcome, lines) = run(&tool, request("builtin:tool", with.clone(), dir.path())).await;
        assert_eq!(reason(&outcome), "invalid-parameters", "{with}");
        assert!(lines.is_empty());
    }
}

#[tokio::test]
async fn missing_program_is_a_spawn_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, _) = run(
        &command(&["taskrunner-no-such-program"]),
        request("builtin:tool", json!({}), dir.path()),
    )
    .await;
    assert_eq!(reason(&outcome), "spawn-failed");
}

#[tokio::test]
async fn timeout_stops_the_command_group() {
    let dir = tempfile::tempdir().unwrap();
    let tool = command(&[
        "/bin/sh",
        "-c",
        "echo \"pgid=$$\" >> \"$TASKRUNNER_OUTPUT\"; sleep {{ with.seconds }} & sleep 100",
    ]);
    let mut req = request("builtin:tool", json!({"seconds": 100}), dir.path());
    req.timeout = Some(Duration::from_millis(300));
    let (outcome, _) = run(&tool, req).await;
    assert_eq!(reason(&outcome), "timeout");
    assert!(group_has_no_live_members(output_i32(&outcome, "pgid")));
}

#[test]
fn definitions_are_validated() {
    let err = |argv: &[&str]| {
        CommandExecutor::new(argv.iter().map(|s| s.to_string()).collect()).unwrap_err()
    };
    assert!(matches!(err(&[]), ExecError::Definition(_)));
    assert!(matches!(err(&[""]), ExecError::Definition(_)));
    assert!(matches!(
        err(&["{{ with.program }}"]),
        ExecError::Definition(_)
    ));
    match err(&["scanner", "--image", "{{ with. }}"]) {
        ExecError::Template { index, .. } => assert_eq!(index, 2),
        other => panic!("unexpected {other:?}"),
    }
    let ok = command(&["scanner", "{{ with.image }}"]);
    assert_eq!(
        ok.argv_sources().collect::<Vec<_>>(),
        ["scanner", "{{ with.image }}"]
    );
}
