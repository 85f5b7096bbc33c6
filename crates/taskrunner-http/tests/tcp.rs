//! A few end-to-end tests over real TCP (STYLE habit 11): the router served by hyper on a
//! loopback socket, spoken to with raw HTTP/1.1, so chunked streaming and headers are seen as a
//! client sees them.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn serve(app: &App) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

#[tokio::test]
async fn a_followed_stream_arrives_in_chunks_over_tcp() {
    let app = app().await;
    let addr = serve(&app).await;
    let manifest = pack(
        "  steps:\n    - id: talk\n      run:\n        uses: builtin:shell\n        with:\n          script: |\n            echo early-line\n            sleep 1\n            echo late-line\n",
    );
    let created = post(
        &app.router,
        "/v1/task-runner/runs",
        &json!({"manifest": manifest, "runId": "tcp-1"}),
    )
    .await;
    assert_eq!(created.status, 201);

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /v1/task-runner/runs/tcp-1/logs?follow=true HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n",
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the early line is there: the late one must not be (the step still sleeps).
    while !String::from_utf8_lossy(&seen).contains("early-line") {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .expect("no early line")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&seen).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(
        head.contains("content-type: application/x-ndjson"),
        "{head}"
    );
    assert!(!head.contains("content-encoding"), "{head}");
    assert!(!head.contains("late-line"));
    // Then the rest, until the terminating chunk.
    while !String::from_utf8_lossy(&seen).ends_with("0\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .expect("the stream did not end")
            .unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    let all = String::from_utf8_lossy(&seen);
    assert!(
        all.contains("late-line") && all.contains("run.completed"),
        "{all}"
    );
}
