//! A Loki-compatible push receiver, for the agent's Loki sink: it decodes what Grafana Loki
//! accepts on `POST /loki/api/v1/push` (snappy-block protobuf, or JSON with optional gzip /
//! deflate) and can be told to answer slowly, answer an error status, hang, reset connections
//! or go down.
//!
//! Hand-rolled HTTP/1.1 on a tokio `TcpListener` on 127.0.0.1, on a runtime the
//! `LokiReceiver` owns (tests themselves stay synchronous, like `agent.rs` and
//! `fake_engine.rs`). Connections are kept alive for as many requests as the client sends.
//! The port is chosen at start and kept across `Mode::Down` and back, so the URL the agent
//! was configured with stays valid.
//!
//! The parts: `schema` (Loki's push messages, written from `pkg/push/push.proto`
//! independently of the agent's encoder on purpose, and encoding them for tests that send
//! their own pushes), `decode` (what a push body means, as Loki reads it), `server`
//! (listening and HTTP/1.1), `modes` (what each `Mode` does to a push request). This file
//! holds the `LokiReceiver` handle and the state it shares with the server.

mod decode;
mod modes;
mod schema;
mod server;

pub use decode::{decode_push, parse_labels};
pub use modes::Mode;
pub use schema::{encode_push_protobuf, encode_push_request, proto, timestamp};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use server::{bind, supervise};

/// The push endpoint.
pub const PUSH_PATH: &str = "/loki/api/v1/push";

/// How long `set_mode` waits for the server to apply a mode (a rebind included).
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// One accepted log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub labels: BTreeMap<String, String>,
    pub ts_ns: i64,
    pub line: String,
    /// Structured metadata.
    pub metadata: BTreeMap<String, String>,
}

/// One push request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct RequestInfo {
    /// The status answered; 0 when not answered (Hang, Reset, Down).
    pub status: u16,
    pub content_type: String,
    pub content_encoding: Option<String>,
    /// `X-Scope-OrgID`.
    pub tenant: Option<String>,
    pub authorization: Option<String>,
    /// Every header, names as sent, in order.
    pub headers: Vec<(String, String)>,
    /// Entries the body decodes to (stored only when answered 204).
    pub entries: usize,
    /// Body size as sent (compressed, de-chunked).
    pub body_bytes: usize,
    /// Sum of the decoded entries' line lengths (bytes), 0 when the body does not decode.
    pub line_bytes: usize,
    /// When the request was read.
    pub at: Instant,
    /// Why the body does not decode (or the request is malformed).
    pub error: Option<String>,
}

impl RequestInfo {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct State {
    mode: Mode,
    /// `(requests left, mode)` of `set_mode_after`.
    pending: Option<(usize, Mode)>,
    /// Bumped on every mode change; `applied` is the last one the server acted upon.
    epoch: u64,
    applied: u64,
    bind_error: Option<String>,
    entries: Vec<Entry>,
    requests: Vec<RequestInfo>,
    connections: usize,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the listener and hanging connections on a mode change.
    notify: watch::Sender<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `(epoch, mode is Down)`.
    fn snapshot(&self) -> (u64, bool) {
        let st = self.lock();
        (st.epoch, st.mode == Mode::Down)
    }

    fn ack(&self, epoch: u64) {
        let mut st = self.lock();
        st.applied = st.applied.max(epoch);
    }
}

pub struct LokiReceiver {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    port: u16,
}

impl LokiReceiver {
    /// Starts listening on a free port of 127.0.0.1, in `Mode::Accept`.
    pub fn start() -> LokiReceiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = {
            let _guard = runtime.enter();
            bind(0).expect("bind Loki receiver")
        };
        let port = listener.local_addr().expect("local addr").port();
        let (notify, _) = watch::channel(());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: Mode::Accept,
                pending: None,
                epoch: 0,
                applied: 0,
                bind_error: None,
                entries: Vec::new(),
                requests: Vec::new(),
                connections: 0,
            }),
            notify,
        });
        // Subscribed here, not in the task: a mode set before the task first runs is seen.
        let rx = shared.notify.subscribe();
        runtime.spawn(supervise(listener, port, Arc::clone(&shared), rx));
        LokiReceiver {
            runtime: Some(runtime),
            shared,
            port,
        }
    }

    /// `http://127.0.0.1:PORT` (the same for the receiver's whole life).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The full push URL.
    pub fn push_url(&self) -> String {
        format!("{}{PUSH_PATH}", self.url())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn mode(&self) -> Mode {
        self.shared.lock().mode.clone()
    }

    /// Switches the mode for the requests read from now on (and cancels a `set_mode_after`).
    /// Returns once the server has applied it: after `Down`, connecting is refused and the
    /// connections that were open are closed; after leaving `Down`, the same port listens
    /// again (panics if it cannot be bound within a few seconds). Setting any mode ends the
    /// connections hanging in `Hang`.
    pub fn set_mode(&self, mode: Mode) {
        let epoch = {
            let mut st = self.shared.lock();
            st.mode = mode;
            st.pending = None;
            st.bind_error = None;
            st.epoch += 1;
            st.epoch
        };
        self.shared.notify.send_replace(());
        let deadline = Instant::now() + APPLY_TIMEOUT;
        loop {
            {
                let st = self.shared.lock();
                if let Some(e) = &st.bind_error {
                    panic!("Loki receiver: {e}");
                }
                if st.applied >= epoch {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Loki receiver: mode change not applied within {APPLY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The next `n_requests` push requests are handled in the current mode, then the mode
    /// becomes `mode` (the switch happens as the n-th request is read, so a retry on any
    /// connection sees the new mode; to `Down`, the n-th answer is written first). A request
    /// that hangs keeps hanging after its own switch, until the client closes it or the mode
    /// is set again. `n_requests == 0` is `set_mode`.
    pub fn set_mode_after(&self, n_requests: usize, mode: Mode) {
        if n_requests == 0 {
            self.set_mode(mode);
        } else {
            self.shared.lock().pending = Some((n_requests, mode));
        }
    }

    /// Every accepted entry, in arrival order (the order within a request kept).
    pub fn entries(&self) -> Vec<Entry> {
        self.shared.lock().entries.clone()
    }

    /// The lines of `entries()`.
    pub fn lines(&self) -> Vec<String> {
        self.shared
            .lock()
            .entries
            .iter()
            .map(|e| e.line.clone())
            .collect()
    }

    /// Every push request seen, answered or not, in arrival order.
    pub fn requests(&self) -> Vec<RequestInfo> {
        self.shared.lock().requests.clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Forgets the entries, requests and connection count (not the mode).
    pub fn clear(&self) {
        let mut st = self.shared.lock();
        st.entries.clear();
        st.requests.clear();
        st.connections = 0;
    }
}

impl Drop for LokiReceiver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}
