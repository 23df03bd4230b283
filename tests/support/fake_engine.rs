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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;

/// 2026-01-01T00:00:00Z in nanoseconds since the UNIX epoch: the base of log timestamps.
pub const BASE_NS: i64 = 1_767_225_600 * 1_000_000_000;

/// How long a new logs request waits for the previous connection of the same container to be
/// noticed as closed before both count as open at the same time. A client that closes its old
/// stream before opening the next one can still race the server noticing the close; a leaked
/// stream stays open forever and is counted anyway.
const OVERLAP_GRACE: Duration = Duration::from_secs(1);

/// Formats a time (nanoseconds since the UNIX epoch, from 1970 on) as Docker's fixed-width
/// RFC3339Nano (30 bytes), independent of the agent's own formatter on purpose.
/// What dockerd says for a time that never came (`StartedAt` of a container never started).
const NEVER: &str = "0001-01-01T00:00:00Z";

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

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let task = tokio::spawn(handle(stream, Arc::clone(&shared)));
                shared.track(task.abort_handle());
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Reads the request head; returns the target of a GET (None if the client went away).
async fn read_head(stream: &mut UnixStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut parts = text.lines().next()?.split_whitespace();
    let _method = parts.next()?;
    parts.next().map(str::to_string)
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "Error",
    }
}

/// A short answer. Unless the engine is told to close after answering, the connection is
/// kept alive (HTTP/1.1 default, what dockerd does) until the client closes it.
async fn respond(stream: &mut UnixStream, shared: &Shared, status: u16, body: &str) {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        reason_phrase(status),
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    if shared.lock().close_after_response {
        return;
    }
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

fn error_body(message: &str) -> String {
    serde_json::json!({ "message": message }).to_string()
}

/// Writes one HTTP chunk.
async fn write_chunk(w: &mut OwnedWriteHalf, data: &[u8]) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    w.write_all(&out).await?;
    w.flush().await
}

/// Reads (and discards) until the client closes the connection or it fails.
async fn until_closed(r: &mut OwnedReadHalf) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// `SEC.NANOS` (Docker's `since`) to nanoseconds.
fn parse_since(v: &str) -> Option<i64> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        nanos += i64::from(c.to_digit(10)?) * 10i64.pow(8 - i as u32);
    }
    Some(secs * 1_000_000_000 + nanos)
}

async fn handle(mut stream: UnixStream, shared: Arc<Shared>) {
    let Some(target) = read_head(&mut stream).await else {
        return;
    };
    shared.lock().requests.push(target.clone());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    // Strip the `/vN.M` prefix.
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map_or("/", |i| &rest[i..])
        }
        _ => path,
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["version"] => {
            let version = shared
                .lock()
                .api_version
                .clone()
                .unwrap_or_else(|| "1.41".to_string());
            let body = format!(r#"{{"ApiVersion":"{version}","Version":"fake"}}"#);
            respond(&mut stream, &shared, 200, &body).await
        }
        ["containers", "json"] => {
            let all = query_param(query, "all") == Some("1");
            let fail = {
                let mut st = shared.lock();
                let fail_all = all && st.failing_all_lists > 0;
                if fail_all {
                    st.failing_all_lists -= 1;
                }
                let fail = fail_all || st.failing_lists > 0;
                st.failing_lists = st.failing_lists.saturating_sub(1);
                fail
            };
            if fail {
                let body = error_body("fake engine: listing failed");
                return respond(&mut stream, &shared, 500, &body).await;
            }
            let list: Vec<serde_json::Value> = shared
                .lock()
                .containers
                .iter()
                .filter(|c| all || c.running)
                .map(|c| {
                    let state = if c.running { "running" } else { "exited" };
                    serde_json::json!({ "Id": c.id, "Names": [format!("/{}", c.name)], "State": state })
                })
                .collect();
            respond(
                &mut stream,
                &shared,
                200,
                &serde_json::Value::from(list).to_string(),
            )
            .await;
        }
        ["containers", id, "json"] => {
            let fail = {
                let mut st = shared.lock();
                match st.failing_inspects.get_mut(*id) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        true
                    }
                    _ => false,
                }
            };
            if fail {
                let body = error_body("fake engine: inspect failed");
                return respond(&mut stream, &shared, 500, &body).await;
            }
            let exit_after = {
                let mut st = shared.lock();
                if st.removed_during_inspect.remove(*id) {
                    st.containers.retain(|c| c.id != *id);
                }
                let delay = st.exit_during_inspect.remove(*id);
                if delay.is_some()
                    && let Some(c) = st.containers.iter_mut().find(|c| c.id == *id)
                {
                    c.running = false;
                }
                delay
            };
            if let Some(delay) = exit_after {
                tokio::time::sleep(delay).await;
            }
            let found = shared
                .lock()
                .containers
                .iter()
                .find(|c| c.id == *id)
                .map(Container::inspect_json);
            match found {
                Some(body) => respond(&mut stream, &shared, 200, &body).await,
                None => {
                    let body = error_body(&format!("No such container: {id}"));
                    respond(&mut stream, &shared, 404, &body).await;
                }
            }
        }
        ["containers", id, "logs"] => logs(stream, &shared, id, query).await,
        ["events"] => events(stream, &shared).await,
        _ => respond(&mut stream, &shared, 404, &error_body("page not found")).await,
    }
}

/// Counts a logs connection as open for as long as it lives.
struct OpenLogs {
    shared: Arc<Shared>,
    id: String,
}

impl Drop for OpenLogs {
    fn drop(&mut self) {
        if let Some(s) = self.shared.lock().logs.get_mut(&self.id) {
            s.open -= 1;
        }
    }
}

async fn logs(mut stream: UnixStream, shared: &Arc<Shared>, id: &str, query: &str) {
    let since = query_param(query, "since")
        .and_then(parse_since)
        .unwrap_or(0);
    let found = {
        let mut st = shared.lock();
        let container = st.containers.iter().find(|c| c.id == id).cloned();
        if let Some(c) = &container {
            let stats = st.logs.entry(c.id.clone()).or_default();
            let plan = c.plans[stats.requests.min(c.plans.len() - 1)].clone();
            stats.requests += 1;
            stats.since.push(since);
            Some((c.clone(), plan))
        } else {
            None
        }
    };
    let Some((container, plan)) = found else {
        let body = error_body(&format!("No such container: {id}"));
        return respond(&mut stream, shared, 404, &body).await;
    };
    // Let a just-closed previous connection be noticed before counting this one as concurrent.
    let deadline = Instant::now() + OVERLAP_GRACE;
    while Instant::now() < deadline && shared.lock().logs[id].open > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _open = {
        let mut st = shared.lock();
        let stats = st.logs.get_mut(id).expect("stats");
        stats.open += 1;
        stats.max_open = stats.max_open.max(stats.open);
        OpenLogs {
            shared: Arc::clone(shared),
            id: id.to_string(),
        }
    };
    let (mut r, mut w) = stream.into_split();
    if let LogsPlan::Status(status, message) = &plan {
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            reason_phrase(*status),
            error_body(message).len()
        );
        let _ = w.write_all(head.as_bytes()).await;
        let _ = w.write_all(error_body(message).as_bytes()).await;
        let _ = w.flush().await;
        // The client reads the body and closes: count the connection until then.
        until_closed(&mut r).await;
        return;
    }
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    if w.write_all(head.as_bytes()).await.is_err() || w.flush().await.is_err() {
        return;
    }
    let served: Vec<(usize, &Line)> = container
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| l.ts_ns >= since)
        .collect();
    match plan {
        LogsPlan::Follow | LogsPlan::End => {
            let body: Vec<u8> = served.iter().flat_map(|(_, l)| l.frame()).collect();
            if write_chunk(&mut w, &body).await.is_err() {
                return;
            }
            if matches!(plan, LogsPlan::End) {
                let _ = w.write_all(b"0\r\n\r\n").await;
                let _ = w.flush().await;
            }
            until_closed(&mut r).await;
        }
        LogsPlan::CutMidFrame { last_line } => {
            let body: Vec<u8> = served
                .iter()
                .filter(|(n, _)| *n <= last_line)
                .flat_map(|(_, l)| l.frame())
                .collect();
            if write_chunk(&mut w, &body).await.is_err() {
                return;
            }
            if let Some(next) = container.lines.get(last_line) {
                let frame = next.frame();
                let _ = write_chunk(&mut w, &frame[..frame.len() / 2]).await;
            }
            // Let the bytes reach the client, then drop both halves: the socket closes with
            // the chunked body unfinished.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        LogsPlan::LineByLine { every, pause } => {
            for (k, (_, line)) in served.iter().enumerate() {
                if write_chunk(&mut w, &line.frame()).await.is_err() {
                    return;
                }
                if (k + 1) % every.max(1) == 0 {
                    tokio::time::sleep(pause).await;
                }
            }
            until_closed(&mut r).await;
        }
        LogsPlan::Status(..) => unreachable!(),
    }
}

async fn events(stream: UnixStream, shared: &Arc<Shared>) {
    // Subscribe before answering: an event sent once the client sees the head is delivered.
    let mut rx = shared.events.subscribe();
    let mut drop_now = shared.drop_events.subscribe();
    let close_after = {
        let mut st = shared.lock();
        st.events_requests += 1;
        st.events_open += 1;
        if st.events_requests == 1 {
            st.close_first_events_after
        } else {
            None
        }
    };
    let (mut r, mut w) = stream.into_split();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    let mut ok = w.write_all(head.as_bytes()).await.is_ok() && w.flush().await.is_ok();
    let closer = async {
        match close_after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(closer);
    let mut closed_by_engine = false;
    let mut buf = [0u8; 1024];
    while ok {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(line) => ok = write_chunk(&mut w, line.as_bytes()).await.is_ok(),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            n = r.read(&mut buf) => if !matches!(n, Ok(n) if n > 0) { break },
            () = &mut closer => {
                closed_by_engine = true;
                break;
            }
            _ = drop_now.changed() => {
                closed_by_engine = true;
                break;
            }
        }
    }
    {
        let mut st = shared.lock();
        st.events_open -= 1;
        if closed_by_engine {
            // Appear before the client can notice the close (the socket closes when `w`
            // drops, after this).
            let added = std::mem::take(&mut st.after_events_drop);
            st.containers.extend(added);
        }
    }
    if closed_by_engine {
        let _ = w.write_all(b"0\r\n\r\n").await;
        let _ = w.flush().await;
    }
}
