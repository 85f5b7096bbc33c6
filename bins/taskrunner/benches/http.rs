//! `cargo xtask bench http`: the HTTP server measured over real TCP on this machine, each figure
//! against a baseline measured in the same run.
//!
//! (a) throughput of `GET /healthz` and `GET /v1/task-runner/runs/{id}` on `taskrunner serve`
//!     (release build, embedded SQLite store, auth `none`), as a ratio to a raw hyper
//!     hello-world server (this benchmark binary re-executed as a separate process), with the
//!     same keep-alive load generator (`HTTP_BENCH_CONNECTIONS` connections, default 32, for
//!     `HTTP_BENCH_SECONDS` seconds, default 5, after a 1 s warm-up);
//! (b) approval round-trip: from sending the decision to the `step.started` line of the next
//!     step arriving on an open `follow=true` log stream (p50/p99 over `HTTP_BENCH_APPROVALS`
//!     runs, default 200);
//! (c) log follow throughput: one `builtin:shell` step printing 100 MB (1,000,000 lines of 100
//!     bytes), followed live until the run ends (`HTTP_BENCH_LOG_MB` to scale).
//!
//! The load generator and the servers share the machine's cores, so the ratios — not the
//! absolute numbers — are what compare across machines.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failed unwrap is a failed run

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HELLO_FLAG: &str = "--hello-server";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == HELLO_FLAG) {
        hello_server(
            args.get(i + 1)
                .expect("an address")
                .parse()
                .expect("an address"),
        );
        return;
    }
    // `cargo bench` passes `--bench`; anything else is ignored.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

/// The baseline: hyper's hello world, one connection task per connection, nothing else.
fn hello_server(addr: SocketAddr) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        println!("listening");
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(axum::body::Body::from(
                        "Hello, World!",
                    )))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_hello() -> (Proc, SocketAddr) {
    let addr = free_port();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([HELLO_FLAG, &addr.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(addr);
    (Proc(child), addr)
}

fn start_taskrunner(data: &std::path::Path) -> (Proc, SocketAddr) {
    let addr = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_taskrunner"))
        .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_listening(addr);
    (Proc(child), addr)
}

/// One HTTP/1.1 exchange on a keep-alive connection: returns (status, body).
async fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> (u16, Vec<u8>) {
    stream.write_all(request).await.unwrap();
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("a content-length response");
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (status, buf[header_end..header_end + length].to_vec())
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes()
}

fn post(path: &str, body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Requests per second of `request` against `addr` with `connections` keep-alive connections.
async fn throughput(addr: SocketAddr, request: Vec<u8>, connections: u64, seconds: u64) -> f64 {
    let request = Arc::new(request);
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (request, counting, stop, count) = (
            request.clone(),
            counting.clone(),
            stop.clone(),
            count.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut buf = Vec::with_capacity(16 * 1024);
            while !stop.load(Ordering::Relaxed) {
                let (status, _) = exchange(&mut stream, &request, &mut buf).await;
                assert_eq!(status, 200);
                if counting.load(Ordering::Relaxed) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    counting.store(true, Ordering::SeqCst);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    counting.store(false, Ordering::SeqCst);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::SeqCst) as f64 / elapsed
}

const GATE_PACK: &str = "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: bench-approval, version: 1.0.0}\nspec:\n  approvals: [{id: go}]\n  steps:\n    - {id: wait, gate: {approval: {id: go, message: go?}}}\n    - {id: after, run: {uses: builtin:noop}}\n";

async fn create_run(addr: SocketAddr, manifest: &str) -> Value {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let (status, body) = exchange(
        &mut stream,
        &post("/v1/task-runner/runs", &json!({ "manifest": manifest })),
        &mut buf,
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Reads a follow stream until `needle` appears in what was read (false if it ended first).
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &[u8]) -> bool {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        if seen.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn open_follow(addr: SocketAddr, run_id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .write_all(&get(&format!(
            "/v1/task-runner/runs/{run_id}/logs?follow=true"
        )))
        .await
        .unwrap();
    stream
}

async fn approval_round_trips(addr: SocketAddr, runs: u64) -> Vec<f64> {
    let mut samples = Vec::new();
    let mut control = TcpStream::connect(addr).await.unwrap();
    control.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    for _ in 0..runs {
        let run = create_run(addr, GATE_PACK).await;
        let run_id = run["runId"].as_str().unwrap().to_owned();
        let plan_hash = run["planHash"].as_str().unwrap().to_owned();
        let mut logs = open_follow(addr, &run_id).await;
        let mut seen = Vec::new();
        assert!(read_until(&mut logs, &mut seen, b"\"gate.awaiting\"").await);
        let decision = post(
            &format!("/v1/task-runner/runs/{run_id}/approvals/go"),
            &json!({"decision": "approved", "planHash": plan_hash}),
        );
        seen.clear();
        let start = Instant::now();
        let (status, body) = exchange(&mut control, &decision, &mut buf).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let found = read_until(&mut logs, &mut seen, b"\"stepId\":\"after\"").await;
        let elapsed = start.elapsed().as_secs_f64() * 1000.0;
        assert!(found, "no step.started of the next step");
        samples.push(elapsed);
    }
    samples
}

async fn log_follow(addr: SocketAddr, megabytes: u64) -> (f64, u64) {
    let lines = megabytes * 10_000;
    let manifest = format!(
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {{name: bench-logs, version: 1.0.0}}\nspec:\n  sandbox: {{mode: networked}}\n  steps:\n    - id: print\n      run:\n        uses: builtin:shell\n        with:\n          script: \"yes 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' | head -n {lines}\"\n"
    );
    let start = Instant::now();
    let run = create_run(addr, &manifest).await;
    let run_id = run["runId"].as_str().unwrap().to_owned();
    let mut logs = open_follow(addr, &run_id).await;
    let mut chunk = vec![0u8; 256 * 1024];
    let mut received = 0u64;
    let mut tail: Vec<u8> = Vec::new();
    loop {
        match logs.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                received += n as u64;
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > 4096 {
                    tail.drain(..tail.len() - 4096);
                }
                // The stream ends with the terminating chunk once the run finished.
                if tail.ends_with(b"0\r\n\r\n") {
                    break;
                }
            }
        }
    }
    (start.elapsed().as_secs_f64(), received)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn bench() {
    let connections = env_number("HTTP_BENCH_CONNECTIONS", 32);
    let seconds = env_number("HTTP_BENCH_SECONDS", 5);
    let approvals = env_number("HTTP_BENCH_APPROVALS", 200);
    let log_mb = env_number("HTTP_BENCH_LOG_MB", 100);
    let data = std::env::temp_dir().join(format!("taskrunner-http-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);

    let (_hello, hello_addr) = start_hello();
    let (_server, addr) = start_taskrunner(&data);
    let run = create_run(
        addr,
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: bench-state, version: 1.0.0}\nspec:\n  steps:\n    - {id: a, run: {uses: builtin:noop}}\n    - {id: b, run: {uses: builtin:noop}}\n    - {id: c, run: {uses: builtin:noop}}\n",
    )
    .await;
    let run_id = run["runId"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!("(a) throughput, {connections} keep-alive connections, {seconds} s each");
    let hello = throughput(hello_addr, get("/"), connections, seconds).await;
    println!("  hyper hello world (baseline)   {hello:>10.0} req/s");
    let healthz = throughput(addr, get("/healthz"), connections, seconds).await;
    println!(
        "  GET /healthz                   {healthz:>10.0} req/s   {:.2}× baseline (goal ≥ 0.8×)",
        healthz / hello
    );
    let state = throughput(
        addr,
        get(&format!("/v1/task-runner/runs/{run_id}")),
        connections,
        seconds,
    )
    .await;
    println!(
        "  GET /v1/task-runner/runs/{{id}} {state:>10.0} req/s   {:.2}× baseline (goal ≥ 0.5×)",
        state / hello
    );

    println!(
        "(b) approval round-trip over {approvals} runs (decision sent → next step.started seen)"
    );
    let mut samples = approval_round_trips(addr, approvals).await;
    samples.sort_by(f64::total_cmp);
    println!(
        "  p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms (goal p99 ≤ 5 ms)",
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        samples.last().copied().unwrap_or(0.0)
    );

    println!("(c) log follow: one step printing {log_mb} MB in 100-byte lines");
    let (elapsed, received) = log_follow(addr, log_mb).await;
    println!(
        "  {elapsed:.1} s from create to end of stream, {:.1} MB of NDJSON received, {:.1} MB/s of step output",
        received as f64 / 1e6,
        log_mb as f64 / elapsed
    );
    drop(_server);
    let _ = std::fs::remove_dir_all(&data);
}
