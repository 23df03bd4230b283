//! A fake Docker Engine API on a unix socket, for faults a real daemon cannot be made to show
//! on demand: silent streams, resets in the middle of a frame, 501/409 answers, an events
//! stream that drops.
//!
//! Hand-rolled HTTP/1.1 on a tokio `UnixListener`, on a runtime the `FakeEngine` owns (tests
//! themselves stay synchronous, like `agent.rs`). Every request gets its own connection (the
//! agent never reuses one). For each container the engine counts the logs requests and the
//! logs connections open: a connection counts as open from its request until the server
//! notices that it is closed — its handler keeps reading the socket while holding the stream
//! open, and a read of 0 bytes (or an error) means the client closed it.
//!
//! This file is the model (containers, their lines and plans, what the engine counts) and
//! the `FakeEngine` handle; `server` answers the Engine API requests.

mod server;

use server::accept_loop;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;

/// 2026-01-01T00:00:00Z in nanoseconds since the UNIX epoch: the base of log timestamps.
pub const BASE_NS: i64 = 1_767_225_600 * 1_000_000_000;

/// What dockerd says for a time that never came (`StartedAt` of a container never started).
const NEVER: &str = "0001-01-01T00:00:00Z";

/// Formats a time (nanoseconds since the UNIX epoch, from 1970 on) as Docker's fixed-width
/// RFC3339Nano (30 bytes), independent of the agent's own formatter on purpose.
pub fn stamp(ts_ns: i64) -> String {
    assert!(ts_ns >= 0, "timestamp before 1970");
    let secs = ts_ns / 1_000_000_000;
    let nanos = ts_ns % 1_000_000_000;
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        day_secs / 3_600,
        day_secs % 3_600 / 60,
        day_secs % 60
    )
}

/// A stable 64-hex container id derived from a name.
pub fn container_id(name: &str) -> String {
    // FNV-1a, four rounds with different seeds.
    (0u64..4)
        .map(|seed| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
            for b in name.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            format!("{h:016x}")
        })
        .collect()
}

/// One log line the engine holds for a container.
#[derive(Clone, Debug)]
pub struct Line {
    pub ts_ns: i64,
    /// 1 stdout, 2 stderr.
    pub stream: u8,
    /// Content without the newline.
    pub text: String,
}

impl Line {
    pub fn stdout(ts_ns: i64, text: impl Into<String>) -> Line {
        Line {
            ts_ns,
            stream: 1,
            text: text.into(),
        }
    }

    /// The multiplexed frame: header then `"<stamp> <text>\n"`.
    pub fn frame(&self) -> Vec<u8> {
        let payload = format!("{} {}\n", stamp(self.ts_ns), self.text);
        let mut v = vec![self.stream, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload.as_bytes());
        v
    }
}

/// What one logs request gets.
#[derive(Clone, Debug)]
pub enum LogsPlan {
    /// 200, every line with timestamp >= `since`, then the stream stays open and idle until
    /// the client closes it. With no lines: a silent stream.
    Follow,
    /// 200, the lines with timestamp >= `since` up to and including the 1-based line
    /// `last_line` of the container, then half of the next line's frame, then the socket is
    /// closed without ending the chunked body.
    CutMidFrame { last_line: usize },
    /// 200, every line with timestamp >= `since`, then a clean end of the body.
    End,
    /// An error answer: status and the `message` of the JSON body.
    Status(u16, String),
    /// Like dockerd: 200, then every line with timestamp >= `since` as its own HTTP chunk and
    /// its own write, with a pause of `pause` after every `every` lines; then the stream stays
    /// open and idle.
    LineByLine { every: usize, pause: Duration },
}

/// A container as the fake engine shows it.
#[derive(Clone, Debug)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub running: bool,
    /// `State.StartedAt` / `State.FinishedAt` of the inspect (ns); `None`: never.
    pub started_ns: Option<i64>,
    pub finished_ns: Option<i64>,
    pub lines: Vec<Line>,
    /// Logs request `k` (0-based) follows `plans[k]`, the last plan repeating.
    pub plans: Vec<LogsPlan>,
}

impl Container {
    /// A running container whose logs follow `plans`.
    pub fn new(name: &str, lines: Vec<Line>, plans: Vec<LogsPlan>) -> Container {
        assert!(!plans.is_empty(), "at least one logs plan");
        Container {
            id: container_id(name),
            name: name.to_string(),
            running: true,
            started_ns: None,
            finished_ns: None,
            lines,
            plans,
        }
    }

    fn inspect_json(&self) -> String {
        serde_json::json!({
            "Id": self.id,
            "Name": format!("/{}", self.name),
            "Created": "2026-01-01T00:00:00Z",
            "State": {
                "Running": self.running,
                "StartedAt": self.started_ns.map_or(NEVER.to_string(), stamp),
                "FinishedAt": self.finished_ns.map_or(NEVER.to_string(), stamp),
            },
            "Config": {"Tty": false, "Image": "img", "Labels": {}},
        })
        .to_string()
    }
}

/// What the engine saw of one container's logs.
#[derive(Clone, Debug, Default)]
pub struct LogsStats {
    /// Logs requests received.
    pub requests: usize,
    /// Logs connections open now.
    pub open: usize,
    /// Most logs connections open at the same time (see `OVERLAP_GRACE`).
    pub max_open: usize,
    /// The `since` of each request, in nanoseconds.
    pub since: Vec<i64>,
}

#[derive(Default)]
struct State {
    containers: Vec<Container>,
    /// What `/version` reports as `ApiVersion`; None: 1.41.
    api_version: Option<String>,
    /// Containers that appear when the first events connection is closed by the engine.
    after_events_drop: Vec<Container>,
    /// Close the first events connection this long after it is established.
    close_first_events_after: Option<Duration>,
    events_requests: usize,
    events_open: usize,
    logs: HashMap<String, LogsStats>,
    /// Every request target, in order (for failure messages).
    requests: Vec<String>,
    /// Close the connection right after a short (Content-Length) answer, instead of keeping
    /// it alive until the client closes it as dockerd does.
    close_after_response: bool,
    /// This many of the next container listings answer 500.
    failing_lists: usize,
    /// This many of the next listings of all containers (`all=1`) answer 500.
    failing_all_lists: usize,
    /// Containers that exit at their next inspect, which answers (not running) this much later.
    exit_during_inspect: HashMap<String, Duration>,
    /// Containers removed at their next inspect, which answers 404 (an instant `--rm`).
    removed_during_inspect: HashSet<String>,
    /// This many of a container's next inspects answer 500 (e.g. dockerd out of FDs).
    failing_inspects: HashMap<String, usize>,
}

struct Shared {
    state: Mutex<State>,
    events: broadcast::Sender<String>,
    /// The accept loop and every connection's handler (aborted by `stop`).
    tasks: Mutex<Vec<AbortHandle>>,
    /// Bumped to make the engine close every open events stream.
    drop_events: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn track(&self, task: AbortHandle) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }
}

pub struct FakeEngine {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeEngine {
    /// Starts serving on a fresh socket (in a short directory under /tmp: unix socket paths
    /// are limited to 108 bytes).
    pub fn start(containers: Vec<Container>) -> FakeEngine {
        let engine = FakeEngine::unbound(containers);
        engine.bind();
        engine
    }

    /// An engine whose socket path is chosen but not listened on yet (see `bind`): a daemon
    /// that is down.
    pub fn unbound(containers: Vec<Container>) -> FakeEngine {
        let dir = tempfile::Builder::new()
            .prefix("fe")
            .tempdir_in("/tmp")
            .expect("socket dir");
        let sock = dir.path().join("d.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (events, _) = broadcast::channel(64);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                containers,
                ..State::default()
            }),
            events,
            tasks: Mutex::new(Vec::new()),
            drop_events: watch::Sender::new(0),
        });
        FakeEngine {
            runtime: Some(runtime),
            shared,
            sock,
            _dir: dir,
        }
    }

    /// Starts listening on the socket.
    pub fn bind(&self) {
        let runtime = self.runtime.as_ref().expect("runtime");
        let listener = {
            let _guard = runtime.enter();
            UnixListener::bind(&self.sock).expect("bind fake engine socket")
        };
        let accept = runtime.spawn(accept_loop(listener, Arc::clone(&self.shared)));
        self.shared.track(accept.abort_handle());
    }

    /// The daemon goes away: stops listening (the socket file is removed) and cuts every open
    /// connection. `bind` brings it back.
    pub fn stop(&self) {
        let tasks =
            std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.sock);
    }

    /// The engine closes every open events stream now (cleanly ending its body).
    pub fn drop_events_streams(&self) {
        self.shared.drop_events.send_modify(|n| *n += 1);
    }

    /// The next `n` listings of all containers (`/containers/json?all=1`) answer 500; the
    /// listings of running containers are not affected.
    pub fn fail_next_all_lists(&self, n: usize) {
        self.shared.lock().failing_all_lists = n;
    }

    /// The container exits at its next inspect, which answers "not running" `delay` later
    /// (the container exits while the agent waits for that answer).
    pub fn exit_during_inspect(&self, id: &str, delay: Duration) {
        self.shared
            .lock()
            .exit_during_inspect
            .insert(id.to_string(), delay);
    }

    /// Container `id` is removed at its next inspect, which answers 404 (listed running, gone
    /// before it could be inspected).
    pub fn remove_during_inspect(&self, id: &str) {
        self.shared
            .lock()
            .removed_during_inspect
            .insert(id.to_string());
    }

    /// The next `n` inspects of container `id` answer 500.
    pub fn fail_next_inspects(&self, id: &str, n: usize) {
        self.shared
            .lock()
            .failing_inspects
            .insert(id.to_string(), n);
    }

    /// Adds a container without sending any event (send one with `send_start`).
    pub fn add(&self, container: Container) {
        self.shared.lock().containers.push(container);
    }

    /// Removes a container without sending any event (as if it was removed while the agent's
    /// events stream was down).
    pub fn remove_silently(&self, id: &str) {
        self.shared.lock().containers.retain(|c| c.id != id);
    }

    pub fn socket(&self) -> &Path {
        &self.sock
    }

    /// The `DOCKER_HOST` value for the agent.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    /// The first events connection is closed by the engine this long after it is established.
    pub fn close_first_events_after(&self, after: Duration) {
        self.shared.lock().close_first_events_after = Some(after);
    }

    /// `container` appears (listed, inspectable) at the moment the engine closes the first
    /// events connection, before the client can notice the close.
    pub fn add_after_first_events_drop(&self, container: Container) {
        self.shared.lock().after_events_drop.push(container);
    }

    /// Closes connections right after short answers (as an HTTP/1.1 server may, and some
    /// proxies in front of dockerd do), instead of keeping them alive like dockerd.
    pub fn close_after_response(&self, close: bool) {
        self.shared.lock().close_after_response = close;
    }

    /// The next `n` container listings (`/containers/json`, with or without `all`) answer
    /// 500.
    pub fn fail_next_lists(&self, n: usize) {
        self.shared.lock().failing_lists = n;
    }

    /// Sends one event (a JSON object, without newline) to every open events stream.
    pub fn send_event(&self, json: &str) {
        let _ = self.shared.events.send(format!("{json}\n"));
    }

    /// A container `start` event, as dockerd sends it.
    pub fn send_start(&self, id: &str, name: &str) {
        let ts_ns = now_ns();
        self.send_event(
            &serde_json::json!({
                "status": "start", "id": id, "from": "img",
                "Type": "container", "Action": "start",
                "Actor": {"ID": id, "Attributes": {"image": "img", "name": name}},
                "scope": "local",
                "time": ts_ns / 1_000_000_000, "timeNano": ts_ns,
            })
            .to_string(),
        );
    }

    pub fn logs_stats(&self, id: &str) -> LogsStats {
        self.shared.lock().logs.get(id).cloned().unwrap_or_default()
    }

    pub fn events_requests(&self) -> usize {
        self.shared.lock().events_requests
    }

    pub fn events_open(&self) -> usize {
        self.shared.lock().events_open
    }

    /// The API version `/version` reports (default 1.41).
    pub fn set_api_version(&self, version: &str) {
        self.shared.lock().api_version = Some(version.to_string());
    }

    /// Every request target received so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
