//! HTTP and runtime metrics reach the installed recorder (its own test binary: the recorder
//! is process-global).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::json;

#[tokio::test]
async fn requests_runs_and_attempts_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let app = app().await;
    let a = post(
        &app.router,
        "/v1/task-runner/runs",
        &json!({"manifest": echo_pack(), "runId": "m-1"}),
    )
    .await;
    assert_eq!(a.status, 201);
    app.runtime.wait_settled("default", "m-1").await.unwrap();
    assert_eq!(
        get(&app.router, "/v1/task-runner/runs/nope").await.status,
        404
    );

    let snapshot = snapshotter.snapshot().into_vec();
    let counter = |name: &str, labels: &[(&str, &str)]| -> u64 {
        snapshot
            .iter()
            .filter(|(key, _, _, _)| {
                let key = key.key();
                key.name() == name
                    && labels
                        .iter()
                        .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
            })
            .map(|(_, _, _, value)| match value {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    };
    assert_eq!(
        counter(
            "taskrunner_http_requests_total",
            &[
                ("route", "/v1/task-runner/runs"),
                ("method", "POST"),
                ("status", "201")
            ]
        ),
        1
    );
    assert_eq!(
        counter(
            "taskrunner_http_requests_total",
            &[("route", "/v1/task-runner/runs/{runId}"), ("status", "404")]
        ),
        1
    );
    assert_eq!(counter("taskrunner_runs_created_total", &[]), 1);
    assert_eq!(
        counter("taskrunner_runs_finished_total", &[("status", "Succeeded")]),
        1
    );
    assert_eq!(
        counter(
            "taskrunner_step_attempts_total",
            &[("outcome", "succeeded")]
        ),
        1
    );
    assert!(
        snapshot
            .iter()
            .any(|(key, _, _, _)| key.key().name() == "taskrunner_step_attempt_duration_seconds")
    );
}
