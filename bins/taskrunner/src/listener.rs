//! The HTTP listener of `taskrunner serve`: accepts connections and serves an axum router on
//! them with the timeouts a public listener needs, and shuts down gracefully.
//!
//! Owns: the header-read timeout (hyper only enforces it when a timer is installed — installed
//! here), which also closes keep-alive connections that stay idle between requests; the
//! request-body timeout; stopping to accept on shutdown while in-flight requests finish, within
//! a grace period. Routing, limits on bodies and everything about the API is the router's.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Listener settings.
#[derive(Debug, Clone)]
pub(crate) struct ListenerOptions {
    /// Longest wait for a request's complete header, counted from the connection's start or
    /// from the end of the previous response (so it is also the keep-alive idle timeout).
    pub(crate) header_read_timeout: Duration,
    /// Longest wait for in-flight requests once shutdown began.
    pub(crate) shutdown_grace: Duration,
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish for at most `options.shutdown_grace`, and returns how many connections
/// were still open when the grace period ended (0 after a clean drain).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    options: ListenerOptions,
    shutdown: impl Future<Output = ()>,
) -> usize {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        let open = open.clone();
        open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => 0,
        () = tokio::time::sleep(options.shutdown_grace) => {
            let left = open.load(std::sync::atomic::Ordering::SeqCst);
            tracing::warn!(connections = left, "shutdown grace period over; closing the remaining connections");
            left
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    use super::*;

    struct Server {
        addr: std::net::SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        done: tokio::task::JoinHandle<usize>,
    }

    async fn start(header_read_timeout: Duration) -> Server {
        let app = Router::new().route("/", get(|| async { "hello" })).route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow"
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let options = ListenerOptions {
            header_read_timeout,
            shutdown_grace: Duration::from_secs(5),
        };
        let done = tokio::spawn(serve(listener, app, options, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            done,
        }
    }

    /// Reads until the peer closes (or 10 s pass); returns what arrived and whether it closed.
    async fn read_to_close(stream: &mut TcpStream) -> (String, bool) {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => return (String::from_utf8_lossy(&out).into(), false),
            }
        }
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_is_disconnected() {
        let server = start(Duration::from_millis(500)).await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let (_, closed) = read_to_close(&mut stream).await;
        assert!(
            closed,
            "a silent connection must be closed by the header timeout"
        );
    }

    #[tokio::test]
    async fn headers_trickling_in_byte_by_byte_are_cut_off() {
        let server = start(Duration::from_millis(800)).await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let request =
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut cut_off = false;
        for byte in request {
            if stream.write_all(&[*byte]).await.is_err() {
                cut_off = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (answer, closed) = read_to_close(&mut stream).await;
        assert!(
            cut_off || (closed && !answer.contains("hello")),
            "the request must not be served: {answer:?}"
        );
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_a_response() {
        let server = start(Duration::from_millis(500)).await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (answer, closed) = read_to_close(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(answer.ends_with("hello"), "{answer:?}");
        assert!(closed, "an idle keep-alive connection must be closed");
    }

    #[tokio::test]
    async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_connections() {
        let mut server = start(Duration::from_secs(5)).await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.stop.take().unwrap().send(()).unwrap();
        let (answer, closed) = read_to_close(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(answer.ends_with("slow"), "{answer:?}");
        assert!(closed);
        assert_eq!(server.done.await.unwrap(), 0, "drained cleanly");
        assert!(TcpStream::connect(server.addr).await.is_err());
    }
}
