//! `GET …/logs` (SPEC §5.8, rules 23–24): NDJSON, one `RunLogEntry` + `sequence` per line.
//!
//! Without `follow` the response holds every entry after `after` and ends. With `follow=true`
//! a task per stream feeds a bounded channel: it sends entries as the run writes them (taken
//! from the run's live broadcast, or re-read from the store by sequence when the broadcast
//! lagged or the run left memory), a blank keep-alive line every 15 s, and ends when the run is
//! finished, the client goes away or the server shuts down. A slow client only fills the
//! channel: the task then stops reading the broadcast, which drops for it, and catches up from
//! the store — the run is never slowed and memory stays bounded.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use taskrunner_auth::Access;
use taskrunner_runtime::{Runtime, log_entry_json};
use taskrunner_store::LogRecord;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::auth::{caller, check_run_id};
use crate::error::ApiError;
use crate::handlers::query_pairs;

/// Largest `after` passed to the store (sequences are stored as signed 64-bit integers).
const SEQUENCE_MAX: u64 = i64::MAX as u64;
/// Entries read from the store at once.
const PAGE_ENTRIES: usize = 500;
/// Chunks buffered between the stream task and the client.
const CHANNEL_CHUNKS: usize = 16;
/// While a followed run is out of memory (parked at a gate), how often to look for its driver.
const REATTACH_POLL: Duration = Duration::from_millis(50);
/// While a followed run is out of memory and nothing new arrives, how many polls between two
/// reads of its status.
const STORE_POLL_EVERY: u32 = 20;

/// `GET /v1/task-runner/runs/{runId}/logs[?after=N][&follow=true]`.
pub(crate) async fn logs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    caller.require(Access::Read)?;
    check_run_id(&run_id, "path.runId")?;
    let mut after = 0u64;
    let mut follow = false;
    for (key, value) in query_pairs(query.as_deref()) {
        match key {
            "after" => {
                after = value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n <= SEQUENCE_MAX)
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "query.after",
                            format!("after must be an integer from 0 to {SEQUENCE_MAX}"),
                        )
                    })?;
            }
            "follow" => {
                follow = match value {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ApiError::bad_request(
                            "query.follow",
                            "follow must be true or false",
                        ));
                    }
                };
            }
            _ => {}
        }
    }
    let tenant = caller.tenant;
    let runtime = state.runtime.clone();
    // Subscribe before the first read, so nothing written in between is missed.
    let live = if follow {
        runtime.subscribe_logs(&tenant, &run_id)
    } else {
        None
    };
    // The first page answers 404 for an unknown run before any byte is sent.
    let first = runtime.logs(&tenant, &run_id, after, PAGE_ENTRIES).await?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let stream = Stream {
        runtime,
        tenant,
        run_id,
        after,
        follow,
        tx,
        shutdown: state.config.shutdown.clone(),
        keepalive: state.config.keepalive_interval,
    };
    tokio::spawn(stream.run(first, live));
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(Ok::<_, std::convert::Infallible>))
    }));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Proxies must not buffer a followed stream.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        body,
    )
        .into_response())
}

struct Stream {
    runtime: Runtime,
    tenant: String,
    run_id: String,
    /// Last sequence sent.
    after: u64,
    follow: bool,
    tx: mpsc::Sender<Bytes>,
    shutdown: CancellationToken,
    keepalive: Duration,
}

/// Why the stream stops.
struct Stop;

impl Stream {
    async fn run(
        mut self,
        first: Vec<LogRecord>,
        mut live: Option<broadcast::Receiver<LogRecord>>,
    ) {
        if self.send_records(&first).await.is_err() {
            return;
        }
        let _ = self.pump(first.len() == PAGE_ENTRIES, &mut live).await;
    }

    async fn pump(
        &mut self,
        mut more: bool,
        live: &mut Option<broadcast::Receiver<LogRecord>>,
    ) -> Result<(), Stop> {
        // Drain what the store has.
        while more {
            more = self.read_store().await?;
        }
        if !self.follow {
            return Ok(());
        }
        let mut keepalive = tokio::time::interval(self.keepalive);
        keepalive.tick().await; // the first tick is immediate
        let mut idle_polls = 0u32;
        loop {
            if live.is_none() {
                *live = self.runtime.subscribe_logs(&self.tenant, &self.run_id);
                if live.is_some() {
                    // Reattached (a decision brought the run back): catch up from the store.
                    while self.read_store().await? {}
                }
            }
            if live.is_none() {
                // Out of memory: finished (end after the last entries) or parked at a gate —
                // or brought back by a decision and already retired again between two polls,
                // so new entries are read on every poll (an indexed range read that is usually
                // empty) and the run's status is checked when some arrived or now and then.
                idle_polls += 1;
                let before = self.after;
                while self.read_store().await? {}
                if idle_polls == 1 || self.after != before || idle_polls > STORE_POLL_EVERY {
                    idle_polls = 1;
                    if self.finished().await? {
                        // Entries written between the read above and the status check.
                        while self.read_store().await? {}
                        return Ok(());
                    }
                }
            }
            let detached = live.is_none();
            let event = tokio::select! {
                () = self.shutdown.cancelled() => return Ok(()),
                () = self.tx.closed() => return Err(Stop),
                _ = keepalive.tick() => Wake::KeepAlive,
                received = recv(live) => Wake::Live(received),
                () = tokio::time::sleep(REATTACH_POLL), if detached => Wake::Poll,
            };
            match event {
                Wake::KeepAlive => self.send(Bytes::from_static(b"\n")).await?,
                Wake::Poll => {}
                Wake::Live(Ok(record)) => {
                    if record.sequence == self.after + 1 {
                        self.send_records(std::slice::from_ref(&record)).await?;
                    } else if record.sequence > self.after {
                        while self.read_store().await? {}
                    }
                }
                // Lagged behind the broadcast: what was dropped is in the store.
                Wake::Live(Err(broadcast::error::RecvError::Lagged(_))) => {
                    while self.read_store().await? {}
                }
                Wake::Live(Err(broadcast::error::RecvError::Closed)) => {
                    // The driver retired (finished or parked): decide from the store.
                    *live = None;
                    idle_polls = 0;
                }
            }
        }
    }

    /// Whether the run is finished (terminal in the store).
    async fn finished(&self) -> Result<bool, Stop> {
        match self.runtime.run_record(&self.tenant, &self.run_id).await {
            Ok(Some(record)) => Ok(record.status.is_terminal()),
            Ok(None) => Ok(true),
            Err(e) => {
                tracing::warn!(error = %e, "log stream: run state could not be read");
                Err(Stop)
            }
        }
    }

    /// Sends the next page from the store; whether there may be more.
    async fn read_store(&mut self) -> Result<bool, Stop> {
        let page = self
            .runtime
            .logs(&self.tenant, &self.run_id, self.after, PAGE_ENTRIES)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "log stream: entries could not be read");
                Stop
            })?;
        self.send_records(&page).await?;
        Ok(page.len() == PAGE_ENTRIES)
    }

    async fn send_records(&mut self, records: &[LogRecord]) -> Result<(), Stop> {
        if records.is_empty() {
            return Ok(());
        }
        let mut chunk = Vec::new();
        for record in records {
            if record.sequence <= self.after {
                continue;
            }
            if let Ok(line) = serde_json::to_vec(&log_entry_json(record)) {
                chunk.extend_from_slice(&line);
                chunk.push(b'\n');
            }
            self.after = record.sequence;
        }
        if chunk.is_empty() {
            return Ok(());
        }
        self.send(Bytes::from(chunk)).await
    }

    async fn send(&self, chunk: Bytes) -> Result<(), Stop> {
        tokio::select! {
            sent = self.tx.send(chunk) => sent.map_err(|_| Stop),
            () = self.shutdown.cancelled() => Err(Stop),
        }
    }
}

enum Wake {
    KeepAlive,
    Poll,
    Live(Result<LogRecord, broadcast::error::RecvError>),
}

async fn recv(
    live: &mut Option<broadcast::Receiver<LogRecord>>,
) -> Result<LogRecord, broadcast::error::RecvError> {
    match live {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
