#![allow(clippy::unwrap_used)]
//! `builtin:http` against a local test server: the egress allowlist (hosts, ports, resolved
//! addresses, redirects), outputs, caps and masking.

use std::time::Duration;

use serde_json::{Value, json};
use taskrunner_exec::{ExecOutcome, ExecRequest, Executor, NetworkMode, OutputLine, SandboxSpec};
use taskrunner_exec_http::{HttpConfig, HttpExecutor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A tiny HTTP/1.1 server on 127.0.0.1: `/json` answers JSON, `/echo` echoes the request
/// body, `/to/<url>` redirects to `<url>`, `/big` sends 100 kB, anything else 404.
async fn server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0_u8; 4096];
                let head_end = loop {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = buf[head_end..].to_vec();
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let path = target.split('?').next().unwrap_or("/").to_owned();
                let (status, extra, content_type, payload): (&str, String, &str, Vec<u8>) =
                    if path == "/json" {
                        (
                            "200 OK",
                            String::new(),
                            "application/json",
                            br#"{"ok":true,"n":[1,2]}"#.to_vec(),
                        )
                    } else if path == "/echo" {
                        ("200 OK", String::new(), "text/plain", body)
                    } else if path == "/big" {
                        ("200 OK", String::new(), "text/plain", vec![b'x'; 100_000])
                    } else if let Some(to) = path.strip_prefix("/to/") {
                        (
                            "302 Found",
                            format!("Location: {to}\r\n"),
                            "text/plain",
                            Vec::new(),
                        )
                    } else {
                        (
                            "404 Not Found",
                            String::new(),
                            "text/plain",
                            b"nope".to_vec(),
                        )
                    };
                let response = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Type: {content_type}\r\nContent-Length: {}\r\nX-Test: a\r\nX-Test: b\r\nConnection: close\r\n\r\n",
                    payload.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.write_all(&payload).await;
            });
        }
    });
    port
}

fn request(with: Value, sandbox: SandboxSpec) -> ExecRequest {
    ExecRequest {
        tenant: "acme".into(),
        run_id: "run-1".into(),
        step_id: "call".into(),
        attempt: 1,
        idempotency_key: "acme/run-1/call/1".into(),
        uses: "builtin:http".into(),
        with,
        workspace: std::env::temp_dir(),
        timeout: Some(Duration::from_secs(10)),
        secrets: vec!["s3cr3t-token".into()],
        sandbox,
        kill: tokio_util::sync::CancellationToken::new(),
    }
}

fn allow(list: &[String]) -> SandboxSpec {
    SandboxSpec::new(NetworkMode::Sealed).with_egress_allowlist(list.to_vec())
}

async fn call(executor: &HttpExecutor, req: ExecRequest) -> (ExecOutcome, Vec<OutputLine>) {
    let (tx, mut rx) = mpsc::channel(64);
    let outcome = executor.execute(req, tx, CancellationToken::new()).await;
    let mut lines = Vec::new();
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    (outcome, lines)
}

fn reason(outcome: &ExecOutcome) -> &str {
    outcome.failure_reason().unwrap_or("succeeded")
}

#[tokio::test]
async fn an_allowed_host_is_reached_and_json_is_parsed() {
    let port = server().await;
    let http = HttpExecutor::default();
    let (outcome, lines) = call(
        &http,
        request(
            json!({"url": format!("http://127.0.0.1:{port}/json")}),
            allow(&[format!("127.0.0.1:{port}")]),
        ),
    )
    .await;
    assert!(outcome.is_success(), "{outcome:?}");
    let out = outcome.outputs();
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], json!({"ok": true, "n": [1, 2]}));
    assert_eq!(out["headers"]["x-test"], "a, b");
    assert!(lines[0].line.ends_with("-> 200 OK"), "{lines:?}");
}

#[tokio::test]
async fn a_post_sends_json_and_secrets_are_masked_in_outputs_and_log() {
    let port = server().await;
    let http = HttpExecutor::default();
    let (outcome, lines) = call(
        &http,
        request(
            json!({"method": "post", "url": format!("http://127.0.0.1:{port}/echo?t=s3cr3t-token"),
                   "body": {"token": "s3cr3t-token", "x": 1}}),
            allow(&[format!("127.0.0.1:{port}")]),
        ),
    )
    .await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(outcome.outputs()["body"], r#"{"token":"***","x":1}"#);
    assert!(
        lines.iter().all(|l| !l.line.contains("s3cr3t-token")),
        "{lines:?}"
    );
    assert!(lines[0].line.contains("t=***"), "{lines:?}");
}

#[tokio::test]
async fn hosts_and_ports_outside_the_allowlist_are_refused() {
    let port = server().await;
    let http = HttpExecutor::default();
    for (url, list, expected) in [
        // Another port of an allowed address.
        (
            format!("http://127.0.0.1:{port}/json"),
            vec![format!("127.0.0.1:{}", port.wrapping_add(1))],
            "not in the egressAllowlist",
        ),
        // A name resolving to an allowed address is not that address.
        (
            format!("http://localhost:{port}/json"),
            vec![format!("127.0.0.1:{port}")],
            "not in the egressAllowlist",
        ),
        // Sealed with an empty list: no HTTP at all.
        (format!("http://127.0.0.1:{port}/json"), vec![], "sealed"),
    ] {
        let (outcome, lines) = call(&http, request(json!({"url": url}), allow(&list))).await;
        assert_eq!(
            reason(&outcome),
            "egress-blocked",
            "{url} {list:?}: {outcome:?}"
        );
        let ExecOutcome::Failed { message, .. } = &outcome else {
            unreachable!()
        };
        assert!(message.contains(expected), "{message}");
        assert!(
            lines.iter().any(|l| l.line.contains("egress blocked")),
            "logged: {lines:?}"
        );
    }
    // Networked with an empty list: public addresses only, so the loopback is refused.
    let (outcome, _) = call(
        &http,
        request(
            json!({"url": format!("http://127.0.0.1:{port}/json")}),
            SandboxSpec::new(NetworkMode::Shared),
        ),
    )
    .await;
    assert_eq!(reason(&outcome), "egress-blocked", "{outcome:?}");
    // `localhost` listed explicitly may resolve to loopback (other listed names must resolve
    // to public addresses; see the unit tests of the egress policy).
    let (outcome, _) = call(
        &http,
        request(
            json!({"url": format!("http://localhost:{port}/json")}),
            allow(&[format!("localhost:{port}")]),
        ),
    )
    .await;
    assert!(
        outcome.is_success(),
        "localhost listed explicitly: {outcome:?}"
    );
}

#[tokio::test]
async fn redirects_are_followed_only_to_allowed_hosts() {
    let port = server().await;
    let http = HttpExecutor::default();
    let list = vec![format!("127.0.0.1:{port}")];
    let inside = format!("http://127.0.0.1:{port}/to/http://127.0.0.1:{port}/json");
    let (outcome, _) = call(&http, request(json!({"url": inside}), allow(&list))).await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(outcome.outputs()["body"]["ok"], true);

    let outside = format!("http://127.0.0.1:{port}/to/http://127.0.0.2:{port}/json");
    let (outcome, _) = call(&http, request(json!({"url": outside}), allow(&list))).await;
    assert_eq!(reason(&outcome), "egress-blocked", "{outcome:?}");

    // A redirect loop stops at the cap.
    let mut url = format!("http://127.0.0.1:{port}/json");
    for _ in 0..7 {
        url = format!("http://127.0.0.1:{port}/to/{url}");
    }
    let (outcome, _) = call(&http, request(json!({"url": url}), allow(&list))).await;
    let ExecOutcome::Failed { message, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(message.contains("more than 5 redirects"), "{message}");
}

#[tokio::test]
async fn large_bodies_error_statuses_and_bad_parameters_fail() {
    let port = server().await;
    let list = vec![format!("127.0.0.1:{port}")];
    let small = HttpExecutor::new(HttpConfig {
        body_bytes_max: 1000,
        ..HttpConfig::default()
    });
    let (outcome, _) = call(
        &small,
        request(
            json!({"url": format!("http://127.0.0.1:{port}/big")}),
            allow(&list),
        ),
    )
    .await;
    let ExecOutcome::Failed { message, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(message.contains("larger than 1000 bytes"), "{message}");

    let http = HttpExecutor::default();
    let (outcome, _) = call(
        &http,
        request(
            json!({"url": format!("http://127.0.0.1:{port}/missing")}),
            allow(&list),
        ),
    )
    .await;
    assert_eq!(reason(&outcome), "http-status");
    assert_eq!(outcome.outputs()["status"], 404);

    for with in [
        json!({}),
        json!({"url": "ftp://x/"}),
        json!({"url": "http://a/", "verb": "GET"}),
        json!({"url": "http://u:p@a/"}),
        json!({"url": "http://a/", "timeoutSeconds": 0}),
    ] {
        let (outcome, _) = call(&http, request(with.clone(), allow(&list))).await;
        assert_eq!(
            reason(&outcome),
            "invalid-parameters",
            "{with}: {outcome:?}"
        );
    }
}
