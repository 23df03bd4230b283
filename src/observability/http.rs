//! The HTTP listener: `/metrics` (OpenMetrics or the Prometheus text format 0.0.4, by the
//! `Accept` header: see `exposition`), `/health` (the process serves),
//! `/ready` (the first container listing succeeded), the status API
//! (`/api/v1/containers`, `/api/v1/sinks`, `/api/v1/config`, `/api/v1/files`: see `status.rs` and the README)
//! and `POST /-/reload` (reload the config, as Prometheus does; see `crate::reload`).
//!
//! Served with hyper's HTTP/1 connection builder rather than `axum::serve`, for two limits
//! that keep idle or slow clients from making the endpoints unreachable:
//! - `header_read_timeout`: a connection that has not sent a complete request head this long
//!   after it opened, or after its previous answer when kept alive, is closed;
//! - `max_connections`: a new connection beyond the cap closes the oldest one. The oldest is
//!   closed gracefully: a request it is serving is answered first (within `CLOSE_GRACE`). A
//!   scraper's fresh connection is therefore always served, whatever number of idle
//!   connections others hold open.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::metrics::{Metrics, ReasonLabels};
use super::reasons::HttpCloseReason;
use super::status::StatusBoard;
use crate::backoff::sleep_or_cancel;
use crate::reload::{ReloadRequest, ReloadSender};

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    status: Arc<StatusBoard>,
    reload: Option<ReloadSender>,
}

/// Limits on what clients may hold (see the module doc).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// How long a connection being closed (over the cap, or at shutdown) may take to finish the
/// request it is serving. An answer takes milliseconds; a client still sending its request
/// head, or not reading its answer, is cut off after this.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Binds `http.listen`: an address, or a host name resolved now (the first of its addresses
/// that can be bound is used).
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("http.listen {addr}: cannot resolve: {e}"))
        })?
        .collect();
    TcpListener::bind(&addrs[..])
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("http.listen {addr}: {e}")))
}

/// The open connections, oldest first, each with the token that closes it.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: VecDeque<(u64, CancellationToken)>,
}

fn lock(c: &Mutex<Connections>) -> MutexGuard<'_, Connections> {
    c.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves until `cancel` fires, then closes every connection (a request being served gets
/// `CLOSE_GRACE` to finish) and returns.
pub async fn serve(
    listener: TcpListener,
    limits: Limits,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    status: Arc<StatusBoard>,
    reload: Option<ReloadSender>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready_handler))
        .route("/api/v1/containers", get(containers_handler))
        .route("/api/v1/sinks", get(sinks_handler))
        .route("/api/v1/config", get(config_handler))
        .route("/api/v1/files", get(files_handler))
        // Other methods get 405 (axum's method router).
        .route("/-/reload", post(reload_handler))
        .with_state(AppState {
            metrics: Arc::clone(&metrics),
            ready,
            status,
            reload,
        });
    let service = TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connections = Arc::new(Mutex::new(Connections::default()));
    let mut tasks = JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. out of file descriptors: wait for some to be released.
                    warn!(error = %e, "HTTP listener cannot accept a connection");
                    if !sleep_or_cancel(Duration::from_millis(100), &cancel).await {
                        break;
                    }
                    continue;
                }
            },
        };
        let close = CancellationToken::new();
        let id = {
            let mut c = lock(&connections);
            while c.open.len() >= limits.max_connections.max(1) {
                let Some((_, oldest)) = c.open.pop_front() else {
                    break;
                };
                oldest.cancel();
                metrics
                    .http_connections_closed
                    .get_or_create(&ReasonLabels {
                        reason: HttpCloseReason::OverLimit.as_label(),
                    })
                    .inc();
            }
            c.next_id += 1;
            let id = c.next_id;
            c.open.push_back((id, close.clone()));
            id
        };
        tasks.spawn(serve_connection(
            stream,
            builder.clone(),
            service.clone(),
            close,
            Arc::clone(&metrics),
            Arc::clone(&connections),
            id,
        ));
    }
    for (_, close) in lock(&connections).open.drain(..) {
        close.cancel();
    }
    if tokio::time::timeout(CLOSE_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tasks.shutdown().await;
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    builder: hyper::server::conn::http1::Builder,
    service: TowerToHyperService<Router>,
    close: CancellationToken,
    metrics: Arc<Metrics>,
    connections: Arc<Mutex<Connections>>,
    id: u64,
) {
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = close.cancelled() => {
            // Answer a request in progress, then close (within `CLOSE_GRACE`).
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await.unwrap_or(Ok(()))
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            metrics
                .http_connections_closed
                .get_or_create(&ReasonLabels {
                    reason: HttpCloseReason::HeaderTimeout.as_label(),
                })
                .inc();
        }
        debug!(error = %e, "HTTP connection ended with an error");
    }
    lock(&connections).open.retain(|(open, _)| *open != id);
}

async fn metrics_handler(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = super::exposition::Format::negotiate(accept);
    // Lag is computed when asked (see `status.rs`), not on the capture path.
    state.status.refresh_lag_metric(&state.metrics);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        state.metrics.render_as(format),
    )
}

/// A JSON answer (serializing these views cannot fail; if it did, a 500 says so).
fn json<T: serde::Serialize>(value: &T) -> axum::response::Response {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn containers_handler(State(state): State<AppState>) -> axum::response::Response {
    json(&state.status.containers())
}

async fn sinks_handler(State(state): State<AppState>) -> axum::response::Response {
    json(&state.status.sinks())
}

async fn files_handler(State(state): State<AppState>) -> axum::response::Response {
    let status = Arc::clone(&state.status);
    match tokio::task::spawn_blocking(move || status.files()).await {
        Ok(files) => json(&files),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn config_handler(State(state): State<AppState>) -> axum::response::Response {
    json(&state.status.config_json())
}

/// Asks the agent to reload and answers with the result: 200 and a short message, or the
/// error's status (409 refused, 500 invalid or failed, 503 stopping) and the reason.
async fn reload_handler(State(state): State<AppState>) -> impl IntoResponse {
    let unavailable = |why: &str| (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    let Some(reload) = state.reload else {
        return unavailable("reload is not available");
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = ReloadRequest {
        origin: "POST /-/reload",
        reply: Some(reply),
    };
    if reload.send(request).await.is_err() {
        return unavailable("the agent is stopping");
    }
    match answer.await {
        Ok(Ok(message)) => (StatusCode::OK, format!("{message}\n")),
        Ok(Err(e)) => (
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            format!("{}\n", e.message),
        ),
        Err(_) => unavailable("the agent is stopping; the reload was not done"),
    }
}

async fn ready_handler(State(state): State<AppState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: Docker not reachable or containers not listed yet\n",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: &str, path: &str) -> Option<(u16, String)> {
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: t\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, text.split_once("\r\n\r\n")?.1.to_string()))
    }

    #[tokio::test]
    async fn listen_host_names_are_resolved_at_bind() {
        let listener = bind("localhost:0").await.expect("localhost resolves");
        let bound = listener.local_addr().expect("bound");
        assert!(bound.ip().is_loopback(), "{bound}");
        let e = bind("no-such-host.invalid:8001")
            .await
            .expect_err("unresolvable");
        let e = e.to_string();
        assert!(
            e.starts_with("http.listen no-such-host.invalid:8001: cannot resolve"),
            "{e}"
        );
    }

    /// Whether the server has closed `s` (EOF or reset), without waiting.
    fn closed_by_server(mut s: &std::net::TcpStream) -> bool {
        s.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue, // e.g. an error answer before the close
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false, // would block: still open
            }
        }
    }

    /// Waits (up to `within`) until at least `count` of `streams` are closed by the server;
    /// returns how many are.
    fn wait_closed(streams: &[std::net::TcpStream], count: usize, within: Duration) -> usize {
        let deadline = std::time::Instant::now() + within;
        loop {
            let closed = streams.iter().filter(|s| closed_by_server(s)).count();
            if closed >= count || std::time::Instant::now() >= deadline {
                return closed;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Many clients that connect and send nothing (or half a request head) neither hold their
    /// connections forever nor lock out a scraper: beyond `max_connections` the oldest are
    /// closed, and every idle one is closed after `header_read_timeout`.
    #[test]
    fn idle_connections_are_capped_and_timed_out() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let metrics = Arc::new(Metrics::new());
        let cancel = CancellationToken::new();
        let limits = Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 8,
        };
        let (addr, server) = runtime.block_on(async {
            let listener = bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr").to_string();
            let server = tokio::spawn(serve(
                listener,
                limits,
                Arc::clone(&metrics),
                Arc::new(AtomicBool::new(true)),
                Arc::new(StatusBoard::new()),
                None,
                cancel.clone(),
            ));
            (addr, server)
        });

        let idle: Vec<std::net::TcpStream> = (0..40)
            .map(|i| {
                let mut s = std::net::TcpStream::connect(&addr).expect("connect");
                if i % 2 == 0 {
                    s.write_all(b"GET /metrics HTTP/1.1\r\n")
                        .expect("half a head");
                }
                s
            })
            .collect();
        let answered = get(&addr, "/metrics");
        assert!(
            answered
                .as_ref()
                .is_some_and(|(status, body)| *status == 200
                    && body.contains("log_capturer_http_connections_closed")),
            "/metrics with 40 idle connections open: {answered:?}"
        );
        // 40 idle + 1 scrape through a cap of 8: at least 33 were closed as the oldest (long
        // before the header read timeout).
        let closed = wait_closed(&idle, 33, Duration::from_secs(5));
        assert!(closed >= 33, "only {closed} of 40 closed over the cap");

        // The rest are closed by the header read timeout.
        let closed = wait_closed(&idle, 40, Duration::from_secs(60));
        assert_eq!(closed, 40, "idle connections left open");
        assert_eq!(get(&addr, "/health").map(|(s, _)| s), Some(200));
        let closed = |reason| {
            metrics
                .http_connections_closed
                .get_or_create(&ReasonLabels { reason })
                .get()
        };
        assert!(closed("over_limit") >= 33, "{}", closed("over_limit"));
        assert!(
            closed("header_timeout") >= 1,
            "{}",
            closed("header_timeout")
        );

        cancel.cancel();
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await })
            .expect("server stops")
            .expect("task")
            .expect("serve");
    }
}
