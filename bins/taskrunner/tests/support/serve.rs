//! `taskrunner serve` processes for the fault tests (disk full, database restart): starting
//! one, talking HTTP/1.1 to it, and checking what it stored.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use taskrunner_engine::{AttemptOutcome, Event};
use taskrunner_store::RunStore;

/// Whether the tests run under CI (`CI=true`): a missing capability fails instead of skipping.
pub fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Prints why the test is skipped, or panics under `CI=true`.
pub fn skip(why: &str) {
    assert!(!under_ci(), "CI=true and the test cannot run: {why}");
    eprintln!("SKIPPED: {why}");
}

/// A running `taskrunner serve`, killed on drop.
pub struct Serve {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// `taskrunner serve --listen 127.0.0.1:0 ARGS` with `env`; waits for its listening line.
    /// Its log goes to `$FAULT_LOG_DIR/<name>` when that is set (`RUST_LOG` from `FAULT_LOG`).
    pub fn start(name: &str, args: &[OsString], env: &[(&str, OsString)]) -> Serve {
        let mut command = Command::new(env!("CARGO_BIN_EXE_taskrunner"));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("TASKRUNNER_AUTH")
            .env(
                "RUST_LOG",
                std::env::var("FAULT_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match std::env::var_os("FAULT_LOG_DIR") {
                Some(dir) => {
                    Stdio::from(std::fs::File::create(Path::new(&dir).join(name)).unwrap())
                }
                None => Stdio::null(),
            });
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no listening line, got {line:?}"));
        Serve { child, addr }
    }
}

/// An HTTP answer: status, lower-cased header names with values, JSON body (`Null` if none).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// One HTTP/1.1 request (`Connection: close`), or the I/O error (the server is down).
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if method == "POST" {
        text.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    text.push_str("\r\n");
    text.push_str(&body);
    stream.write_all(text.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no response head"))?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<BTreeMap<_, _>>();
    let mut payload = raw[end + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        payload = dechunk(&payload);
    }
    let body = serde_json::from_slice(&payload).unwrap_or(Value::Null);
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// [`try_request`] that must reach the server.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Answer {
    try_request(addr, method, path, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let Some(chunk) = data.get(start..start + size) else {
            break;
        };
        out.extend_from_slice(chunk);
        data = data.get(start + size + 2..).unwrap_or(&[]);
    }
    out
}

/// `POST /v1/task-runner/runs` with this id and manifest.
pub fn create(addr: SocketAddr, run_id: &str, manifest: &str) -> Answer {
    request(
        addr,
        "POST",
        "/v1/task-runner/runs",
        Some(&json!({"runId": run_id, "manifest": manifest})),
    )
}

/// The run's status as `addr` reports it.
pub fn status_of(addr: SocketAddr, run_id: &str) -> String {
    let answer = request(addr, "GET", &format!("/v1/task-runner/runs/{run_id}"), None);
    assert_eq!(answer.status, 200, "{run_id}: {answer:?}");
    answer.body["status"].as_str().unwrap_or("").to_owned()
}

/// Waits (up to `secs`) until every run has `status`, as `addr` reports it.
pub fn wait_all(addr: SocketAddr, ids: &[String], status: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    for id in ids {
        loop {
            let now = status_of(addr, id);
            if now == status {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never reached {status} (is {now})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The run's journal, verified against its plan hash and the stored head; its status.
pub async fn verified_journal(runs: &dyn RunStore, run_id: &str) -> (String, Vec<Event>) {
    let (record, records) = taskrunner_runtime::verified_journal(runs, "default", run_id)
        .await
        .unwrap_or_else(|e| panic!("{run_id}: journal does not verify: {e}"));
    (
        record.status,
        records.into_iter().map(|r| r.event).collect(),
    )
}

/// Per step, how many attempts succeeded.
pub fn successes(events: &[Event]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events {
        if let Event::AttemptFinished {
            step_id,
            outcome: AttemptOutcome::Succeeded { .. },
            ..
        } = e
        {
            *out.entry(step_id.clone()).or_insert(0) += 1;
        }
    }
    out
}
