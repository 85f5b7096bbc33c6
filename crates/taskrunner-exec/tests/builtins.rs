#![allow(clippy::unwrap_used)]
//! `builtin:noop`, `builtin:echo`, `builtin:sleep` and the registry.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{reason, request, run, run_with_cancel, stdout};
use serde_json::json;
use taskrunner_exec::{
    CommandExecutor, EchoExecutor, ExecOutcome, ExecutorRegistry, NoopExecutor, SleepExecutor,
};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn noop_outputs_are_with() {
    let dir = tempfile::tempdir().unwrap();
    let with = json!({"a": 1, "b": ["x"], "c": {"d": null}});
    let (outcome, lines) = run(
        &NoopExecutor,
        request("builtin:noop", with.clone(), dir.path()),
    )
    .await;
    assert_eq!(
        outcome,
        ExecOutcome::Succeeded {
            outputs: with.as_object().unwrap().clone()
        }
    );
    assert!(lines.is_empty());

    let (outcome, _) = run(
        &NoopExecutor,
        request("builtin:noop", json!("text"), dir.path()),
    )
    .await;
    assert!(outcome.is_success());
    assert!(outcome.outputs().is_empty());
}

#[tokio::test]
async fn noop_masks_secrets_in_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let mut req = request(
        "builtin:noop",
        json!({"token": "Bearer hunter22"}),
        dir.path(),
    );
    req.secrets = vec!["hunter22".into()];
    let (outcome, _) = run(&NoopExecutor, req).await;
    assert_eq!(outcome.outputs()["token"], json!("Bearer ***"));
}

#[tokio::test]
async fn echo_emits_the_message_as_a_stdout_line() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, lines) = run(
        &EchoExecutor,
        request(
            "builtin:echo",
            json!({"message": "hello world"}),
            dir.path(),
        ),
    )
    .await;
    assert_eq!(stdout(&lines), ["hello world"]);
    assert_eq!(outcome.outputs()["message"], json!("hello world"));
    assert!(outcome.is_success());
}

#[tokio::test]
async fn echo_renders_non_strings_as_compact_json_and_masks() {
    let dir = tempfile::tempdir().unwrap();
    let (_, lines) = run(
        &EchoExecutor,
        request(
            "builtin:echo",
            json!({"message": {"a": [1, true]}}),
            dir.path(),
        ),
    )
    .await;
    assert_eq!(stdout(&lines), [r#"{"a":[1,true]}"#]);

    let mut req = request(
        "builtin:echo",
        json!({"message": "pw=s3cr3t!\nnext line"}),
        dir.path(),
    );
    req.secrets = vec!["s3cr3t!".into()];
    let (outcome, lines) = run(&EchoExecutor, req).await;
    assert_eq!(stdout(&lines), ["pw=***", "next line"]);
    assert_eq!(outcome.outputs()["message"], json!("pw=***\nnext line"));
}

#[tokio::test]
async fn echo_without_message_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, _) = run(
        &EchoExecutor,
        request("builtin:echo", json!({}), dir.path()),
    )
    .await;
    assert_eq!(reason(&outcome), "invalid-parameters");
}

#[tokio::test]
async fn sleep_accepts_fractions_and_zero() {
    let dir = tempfile::tempdir().unwrap();
    for seconds in [json!(0), json!(0.05), json!(0.0)] {
        let (outcome, _) = run(
            &SleepExecutor,
            request("builtin:sleep", json!({"seconds": seconds}), dir.path()),
        )
        .await;
        assert!(outcome.is_success(), "{seconds}: {outcome:?}");
    }
}

#[tokio::test]
async fn sleep_rejects_bad_seconds() {
    let dir = tempfile::tempdir().unwrap();
    for with in [
        json!({"seconds": -1}),
        json!({"seconds": 86_400.5}),
        json!({"seconds": 1e300}),
        json!({"seconds": "5"}),
        json!({"seconds": null}),
        json!({}),
        json!(null),
        json!({"seconds": 1, "extra": true}),
    ] {
        let (outcome, _) = run(
            &SleepExecutor,
            request("builtin:sleep", with.clone(), dir.path()),
        )
        .await;
        assert_eq!(reason(&outcome), "invalid-parameters", "{with}");
    }
    let (outcome, _) = run(
        &SleepExecutor,
        request("builtin:sleep", json!({"seconds": 0}), dir.path()),
    )
    .await;
    assert!(outcome.is_success());
}

#[tokio::test]
async fn sleep_max_is_allowed() {
    // 86,400 is valid; cancel at once so the test does not wait a day.
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (outcome, _) = run_with_cancel(
        &SleepExecutor,
        request("builtin:sleep", json!({"seconds": 86_400}), dir.path()),
        cancel,
    )
    .await;
    assert_eq!(reason(&outcome), "cancelled");
}

#[tokio::test]
async fn sleep_honours_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        trigger.cancel();
    });
    let (outcome, _) = run_with_cancel(
        &SleepExecutor,
        request("builtin:sleep", json!({"seconds": 100}), dir.path()),
        cancel,
    )
    .await;
    assert_eq!(reason(&outcome), "cancelled");
}

#[tokio::test]
async fn sleep_honours_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut req = request("builtin:sleep", json!({"seconds": 100}), dir.path());
    req.timeout = Some(Duration::from_millis(50));
    let (outcome, _) = run(&SleepExecutor, req).await;
    assert_eq!(reason(&outcome), "timeout");
}

#[test]
fn registry_lookups() {
    let mut registry = ExecutorRegistry::with_builtins();
    assert_eq!(
        registry.names().collect::<Vec<_>>(),
        [
            "builtin:echo",
            "builtin:noop",
            "builtin:shell",
            "builtin:sleep"
        ]
    );
    assert!(registry.contains("builtin:shell"));
    assert!(!registry.contains("builtin:http"));
    assert!(registry.get("builtin:scanner").is_none());

    let scanner = CommandExecutor::new(vec!["scanner".into(), "{{ with.image }}".into()]).unwrap();
    assert!(
        registry
            .register("builtin:scanner", Arc::new(scanner))
            .is_none()
    );
    assert!(registry.contains("builtin:scanner"));
    assert!(registry.get("builtin:scanner").is_some());
    assert!(
        registry
            .register("builtin:noop", Arc::new(NoopExecutor))
            .is_some()
    );
    assert!(ExecutorRegistry::new().names().next().is_none());
}

#[tokio::test]
async fn registry_executors_run() {
    let dir = tempfile::tempdir().unwrap();
    let registry = ExecutorRegistry::with_builtins();
    let echo = registry.get("builtin:echo").unwrap();
    let (outcome, lines) = run(
        echo.as_ref(),
        request("builtin:echo", json!({"message": 42}), dir.path()),
    )
    .await;
    assert!(outcome.is_success());
    assert_eq!(stdout(&lines), ["42"]);
}
