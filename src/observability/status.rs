//! The status board: what `GET /api/v1/containers`, `/api/v1/sinks` and `/api/v1/config` serve
//! (and `log-capturer status` prints). It lives as long as the process, across pipeline
//! generations (a config reload drains the capture pipeline and starts a new one): entries are
//! keyed by container id and by sink name, not by whoever created them.
//!
//! - **Containers**: discovery `track`s a container when it starts a capture task for it (the
//!   same entry again for a later task or a later pipeline generation, so counters go on) and
//!   `forget`s it when the container is destroyed, no longer selected, or no longer listed.
//!   The capture task updates its entry per stream and per batch (a few relaxed atomics per
//!   batch, never per line). The *delivered* cursor is the task's shared cursor itself and the
//!   *acknowledged* one is the checkpoint store's: both are read only when someone asks.
//! - **Sinks**: each sink worker gets its entry from `sink(name)`, which replaces any older one
//!   of that name (a restarted sink starts afresh); `retain_sinks` drops the ones no longer
//!   configured.
//! - **Config**: `set_config` stores the effective config, serialized with its secrets
//!   redacted (`config::Secret` serializes as `***`).
//!
//! **Lag** (`lag_seconds`, metric `log_capturer_container_lag_seconds`, computed when asked):
//! 0 when every line handed to the pipeline is acknowledged by every sink (the delivered
//! cursor equals the acknowledged one). Otherwise, now minus the timestamp of the last
//! acknowledged line (or, if none was acknowledged yet, of the first line delivered in this
//! process), at least 0. So it grows while a sink holds lines back or while capture works
//! through a backlog, and is about the flush interval for a busy container that keeps up. A
//! container whose lines are all acknowledged has lag 0, busy or idle.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

use super::metrics::{ContainerLabels, Metrics};
use crate::capture::{Cursor, DeliveredCursor, StreamPositions, read_cursor};
use crate::checkpoint::CheckpointStore;
use crate::clock::now_ns;
use crate::config::Config;
use crate::docker::timestamp::format_rfc3339_nanos;
use crate::pipeline::ContainerMeta;

/// What a container's capture is doing (`state` in the JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CaptureState {
    /// A capture task runs, no stream is open: it is opening one, or waiting to retry.
    Waiting = 0,
    /// A log stream is open and read.
    Running = 1,
    /// The container stopped and its log was read to its end; read again at its next start.
    Stopped = 2,
    /// Its log driver cannot be read (e.g. `none`); tried again at its next start.
    Unreadable = 3,
    /// No capture task (capture stopped: shutdown, or the pipeline restarting on reload).
    Detached = 4,
}

impl CaptureState {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureState::Waiting => "waiting",
            CaptureState::Running => "running",
            CaptureState::Stopped => "stopped",
            CaptureState::Unreadable => "unreadable",
            CaptureState::Detached => "detached",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => CaptureState::Running,
            2 => CaptureState::Stopped,
            3 => CaptureState::Unreadable,
            4 => CaptureState::Detached,
            _ => CaptureState::Waiting,
        }
    }
}

/// Where a container's metadata and delivered cursor are read from (replaced when a new
/// capture task, perhaps of a new pipeline generation, tracks the container).
struct Source {
    meta: watch::Receiver<Arc<ContainerMeta>>,
    delivered: DeliveredCursor,
}

/// One container's entry. Times are ns since the epoch, 0 for "none".
pub struct ContainerStatus {
    id: String,
    source: Mutex<Source>,
    state: AtomicU8,
    open_since_ns: AtomicI64,
    rotation_interval_ns: AtomicI64,
    rotations: AtomicU64,
    last_rotation_ns: AtomicI64,
    lines: AtomicU64,
    /// Timestamp of the first line delivered in this process (the lag's base until a line is
    /// acknowledged).
    first_line_ns: AtomicI64,
    errors: AtomicU64,
    last_error: Mutex<Option<(String, i64)>>,
    /// The processing pipeline applied to the container's lines, if any.
    pipeline: Mutex<Option<Arc<str>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ContainerStatus {
    fn new(id: &str, source: Source) -> Self {
        ContainerStatus {
            id: id.to_string(),
            source: Mutex::new(source),
            state: AtomicU8::new(CaptureState::Waiting as u8),
            open_since_ns: AtomicI64::new(0),
            rotation_interval_ns: AtomicI64::new(0),
            rotations: AtomicU64::new(0),
            last_rotation_ns: AtomicI64::new(0),
            lines: AtomicU64::new(0),
            first_line_ns: AtomicI64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
            pipeline: Mutex::new(None),
        }
    }

    /// An entry on no board (for a capture task whose container was forgotten meanwhile).
    pub fn detached(
        id: &str,
        meta: watch::Receiver<Arc<ContainerMeta>>,
        delivered: DeliveredCursor,
    ) -> Arc<Self> {
        Arc::new(ContainerStatus::new(id, Source { meta, delivered }))
    }

    pub fn set_state(&self, state: CaptureState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> CaptureState {
        CaptureState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// The processing pipeline the capture task runs (per task: a reload may change it).
    pub fn set_pipeline(&self, name: Option<&str>) {
        *lock(&self.pipeline) = name.map(Arc::from);
    }

    /// The capture task's rotation interval (per task: a reload may change it).
    pub fn set_rotation_interval(&self, every: Duration) {
        let ns = i64::try_from(every.as_nanos()).unwrap_or(i64::MAX);
        self.rotation_interval_ns.store(ns, Ordering::Relaxed);
    }

    pub fn stream_opened(&self, at_ns: i64) {
        self.open_since_ns.store(at_ns, Ordering::Relaxed);
        self.set_state(CaptureState::Running);
    }

    /// The stream was closed; `rotated`: on schedule.
    pub fn stream_closed(&self, rotated: bool, at_ns: i64) {
        self.open_since_ns.store(0, Ordering::Relaxed);
        if rotated {
            self.rotations.fetch_add(1, Ordering::Relaxed);
            self.last_rotation_ns.store(at_ns, Ordering::Relaxed);
        }
        self.set_state(CaptureState::Waiting);
    }

    /// A batch of `lines` lines, the first stamped `first_ts_ns`, was handed to the pipeline.
    pub fn delivered(&self, lines: u64, first_ts_ns: i64) {
        self.lines.fetch_add(lines, Ordering::Relaxed);
        if self.first_line_ns.load(Ordering::Relaxed) == 0 {
            self.first_line_ns.store(first_ts_ns, Ordering::Relaxed);
        }
    }

    /// A stream could not be opened or failed while read.
    pub fn error(&self, message: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_error) = Some((message.to_string(), now_ns()));
    }

    fn view(&self, acknowledged: Option<Cursor>, now: i64) -> ContainerView {
        let (meta, delivered) = {
            let source = lock(&self.source);
            let meta = Arc::clone(&source.meta.borrow());
            (meta, read_cursor(&source.delivered))
        };
        let state = self.state();
        let open_since = nonzero(self.open_since_ns.load(Ordering::Relaxed));
        let interval = self.rotation_interval_ns.load(Ordering::Relaxed);
        let stream_age_ns = open_since.map(|t| (now - t).max(0));
        let rotation_overdue = state == CaptureState::Running
            && interval > 0
            && stream_age_ns.is_some_and(|age| age > interval.saturating_mul(2));
        let pending = acknowledged.is_some_and(|a| a != delivered);
        let lag_ns = match acknowledged {
            Some(acked) if pending => {
                let base = last_line_ns(&acked)
                    .or_else(|| nonzero(self.first_line_ns.load(Ordering::Relaxed)))
                    .unwrap_or(now);
                (now - base).max(0)
            }
            _ => 0,
        };
        let last_error = lock(&self.last_error).clone();
        let last_rotation = nonzero(self.last_rotation_ns.load(Ordering::Relaxed));
        ContainerView {
            id: self.id.clone(),
            name: meta.name.clone(),
            image: meta.image.clone(),
            state: state.as_str().to_string(),
            stream_open_since: open_since.map(format_rfc3339_nanos),
            stream_open_since_ns: open_since,
            stream_age_seconds: stream_age_ns.map(seconds),
            rotation_interval_seconds: nonzero(interval).map(seconds),
            rotation_overdue,
            pipeline: lock(&self.pipeline).as_deref().map(str::to_string),
            rotations: self.rotations.load(Ordering::Relaxed),
            last_rotation: last_rotation.map(format_rfc3339_nanos),
            last_rotation_ns: last_rotation,
            delivered: CursorView::of(&delivered),
            acknowledged: acknowledged.as_ref().map(CursorView::of),
            pending,
            lag_seconds: seconds(lag_ns),
            lines: self.lines.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_error_at: last_error.as_ref().map(|(_, at)| format_rfc3339_nanos(*at)),
            last_error: last_error.map(|(message, _)| message),
        }
    }
}

fn nonzero(v: i64) -> Option<i64> {
    (v != 0).then_some(v)
}

fn seconds(ns: i64) -> f64 {
    ns as f64 / 1e9
}

/// The timestamp of the newest line a cursor is past, if it is past any.
pub fn last_line_ns(c: &Cursor) -> Option<i64> {
    let s = &c.streams;
    let newest = [s.stdout, s.stderr]
        .iter()
        .filter(|p| p.count > 0)
        .map(|p| p.timestamp_ns)
        .max();
    match newest {
        Some(ts) => Some(ts),
        None if c.legacy_count > 0 => Some(c.since_ns()),
        None => None,
    }
}

/// A cursor as served: the checkpoint file's fields (`timestamp_ns`, `count`, `streams`) plus
/// the newest line it is past.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CursorView {
    /// Where reading resumes (`since`), RFC 3339.
    pub timestamp: String,
    pub timestamp_ns: i64,
    /// Lines stamped exactly `timestamp_ns` already delivered.
    pub count: u64,
    /// The newest line the cursor is past (null: none yet).
    pub last_line: Option<String>,
    pub last_line_ns: Option<i64>,
    /// Per-stream positions, as in the checkpoint file.
    pub streams: StreamPositions,
}

impl CursorView {
    pub fn of(c: &Cursor) -> Self {
        let last = last_line_ns(c);
        CursorView {
            timestamp: format_rfc3339_nanos(c.since_ns()),
            timestamp_ns: c.since_ns(),
            count: c.count_at_since(),
            last_line: last.map(format_rfc3339_nanos),
            last_line_ns: last,
            streams: c.streams,
        }
    }
}

/// One element of `GET /api/v1/containers` (documented in the README).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerView {
    pub id: String,
    pub name: String,
    pub image: String,
    pub state: String,
    pub stream_open_since: Option<String>,
    pub stream_open_since_ns: Option<i64>,
    pub stream_age_seconds: Option<f64>,
    pub rotation_interval_seconds: Option<f64>,
    /// Running, and the open stream is older than twice the rotation interval.
    pub rotation_overdue: bool,
    /// The `processing.pipelines` entry applied to its lines (null: none).
    pub pipeline: Option<String>,
    pub rotations: u64,
    pub last_rotation: Option<String>,
    pub last_rotation_ns: Option<i64>,
    pub delivered: CursorView,
    pub acknowledged: Option<CursorView>,
    /// Lines handed to the pipeline and not yet acknowledged by every sink.
    pub pending: bool,
    pub lag_seconds: f64,
    pub lines: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

/// The current failure of a sink.
#[derive(Clone, Debug)]
struct SinkError {
    /// What failed: an error of one kind is cleared only by a success of that kind (a Loki
    /// push that works again does not clear a failing disk).
    kind: &'static str,
    message: String,
    since_ns: i64,
    failures: u64,
}

/// One sink's entry.
pub struct SinkStatus {
    name: &'static str,
    in_flight: AtomicI64,
    queue_bytes: AtomicI64,
    /// The sink has an on-disk buffer and dead-letter store (Loki).
    has_stores: bool,
    buffered_records: AtomicU64,
    buffered_bytes: AtomicU64,
    dead_letters: AtomicU64,
    error: Mutex<Option<SinkError>>,
}

impl SinkStatus {
    pub fn new(name: &'static str, has_stores: bool) -> Self {
        SinkStatus {
            name,
            in_flight: AtomicI64::new(0),
            queue_bytes: AtomicI64::new(0),
            has_stores,
            buffered_records: AtomicU64::new(0),
            buffered_bytes: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            error: Mutex::new(None),
        }
    }

    /// The sink took a batch holding `bytes` of the queue budget.
    pub fn received(&self, bytes: usize) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.queue_bytes.fetch_add(bytes as i64, Ordering::Relaxed);
    }

    /// The sink is done with a batch (acknowledged it, or released it unwritten).
    pub fn finished(&self, bytes: usize) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.queue_bytes.fetch_sub(bytes as i64, Ordering::Relaxed);
    }

    pub fn set_buffered(&self, records: u64, bytes: u64) {
        self.buffered_records.store(records, Ordering::Relaxed);
        self.buffered_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn set_dead_letters(&self, records: u64) {
        self.dead_letters.store(records, Ordering::Relaxed);
    }

    /// An attempt of `kind` failed; the sink is failing since the first such failure.
    pub fn failed(&self, kind: &'static str, message: &str) {
        let mut error = lock(&self.error);
        match error.as_mut() {
            Some(e) if e.kind == kind => {
                e.failures += 1;
                e.message = message.to_string();
            }
            _ => {
                *error = Some(SinkError {
                    kind,
                    message: message.to_string(),
                    since_ns: now_ns(),
                    failures: 1,
                })
            }
        }
    }

    /// An attempt of `kind` worked: a failure of that kind is over.
    pub fn recovered(&self, kind: &'static str) {
        let mut error = lock(&self.error);
        if error.as_ref().is_some_and(|e| e.kind == kind) {
            *error = None;
        }
    }

    /// The entry as served.
    pub fn view(&self) -> SinkView {
        let error = lock(&self.error).clone();
        let stores = |v: &AtomicU64| self.has_stores.then(|| v.load(Ordering::Relaxed));
        SinkView {
            name: self.name.to_string(),
            queue_bytes: self.queue_bytes.load(Ordering::Relaxed).max(0) as u64,
            in_flight_batches: self.in_flight.load(Ordering::Relaxed).max(0) as u64,
            buffered_records: stores(&self.buffered_records),
            buffered_bytes: stores(&self.buffered_bytes),
            dead_letters: stores(&self.dead_letters),
            failing: error.is_some(),
            failures: error.as_ref().map_or(0, |e| e.failures),
            failing_since: error.as_ref().map(|e| format_rfc3339_nanos(e.since_ns)),
            failing_since_ns: error.as_ref().map(|e| e.since_ns),
            last_error: error.map(|e| e.message),
        }
    }
}

/// One element of `GET /api/v1/sinks` (documented in the README).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SinkView {
    pub name: String,
    pub queue_bytes: u64,
    pub in_flight_batches: u64,
    pub buffered_records: Option<u64>,
    pub buffered_bytes: Option<u64>,
    pub dead_letters: Option<u64>,
    pub failing: bool,
    pub failures: u64,
    pub last_error: Option<String>,
    pub failing_since: Option<String>,
    pub failing_since_ns: Option<i64>,
}

#[derive(Default)]
pub struct StatusBoard {
    containers: Mutex<HashMap<String, Arc<ContainerStatus>>>,
    sinks: Mutex<BTreeMap<&'static str, Arc<SinkStatus>>>,
    config: Mutex<serde_json::Value>,
    checkpoints: OnceLock<Arc<CheckpointStore>>,
    /// Container names whose lag gauge the last scrape set (to drop the ones gone since).
    lag_series: Mutex<HashSet<String>>,
}

impl StatusBoard {
    pub fn new() -> Self {
        StatusBoard::default()
    }

    /// Where acknowledged cursors are read from (set once; the store lives as long as the
    /// process).
    pub fn attach_checkpoints(&self, store: Arc<CheckpointStore>) {
        let _ = self.checkpoints.set(store);
    }

    /// The effective config, with its secrets redacted (call again after a reload).
    pub fn set_config(&self, config: &Config) {
        let value = serde_json::to_value(config)
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
        *lock(&self.config) = value;
    }

    pub fn config_json(&self) -> serde_json::Value {
        lock(&self.config).clone()
    }

    /// Host files with a stored position (`GET /api/v1/files`). Blocking (`stat`s).
    pub fn files(&self) -> Vec<crate::sources::files::status::FileView> {
        self.checkpoints
            .get()
            .map(|s| crate::sources::files::status::file_views(s))
            .unwrap_or_default()
    }

    /// A capture task starts for `id`: its entry (the existing one, with its counters, or a
    /// new one), now reading from this task's metadata and cursor. Containers only: a host
    /// file (which the file source never tracks here) gets an entry on no board, so it can
    /// never show in `/api/v1/containers` or the container lag metric.
    pub fn track(
        &self,
        id: &str,
        meta: watch::Receiver<Arc<ContainerMeta>>,
        delivered: DeliveredCursor,
    ) -> Arc<ContainerStatus> {
        if meta.borrow().is_file() {
            return ContainerStatus::detached(id, meta, delivered);
        }
        let mut containers = lock(&self.containers);
        match containers.get(id) {
            Some(entry) => {
                *lock(&entry.source) = Source { meta, delivered };
                entry.set_state(CaptureState::Waiting);
                Arc::clone(entry)
            }
            None => {
                let entry = Arc::new(ContainerStatus::new(id, Source { meta, delivered }));
                containers.insert(id.to_string(), Arc::clone(&entry));
                entry
            }
        }
    }

    pub fn container(&self, id: &str) -> Option<Arc<ContainerStatus>> {
        lock(&self.containers).get(id).cloned()
    }

    /// The container is no longer captured (destroyed, not selected, not listed).
    pub fn forget(&self, id: &str) {
        lock(&self.containers).remove(id);
    }

    /// Drops every container for which `keep` is false.
    pub fn retain_containers(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.containers).retain(|id, _| keep(id));
    }

    /// A sink worker starts: a fresh entry, replacing any older one of that name.
    pub fn sink(&self, name: &'static str, has_stores: bool) -> Arc<SinkStatus> {
        let entry = Arc::new(SinkStatus::new(name, has_stores));
        lock(&self.sinks).insert(name, Arc::clone(&entry));
        entry
    }

    /// Drops the sinks not named (no longer configured).
    pub fn retain_sinks(&self, names: &[&str]) {
        lock(&self.sinks).retain(|name, _| names.contains(name));
    }

    /// Every container, by name.
    pub fn containers(&self) -> Vec<ContainerView> {
        let entries: Vec<Arc<ContainerStatus>> = lock(&self.containers).values().cloned().collect();
        let now = now_ns();
        let store = self.checkpoints.get();
        let mut views: Vec<ContainerView> = entries
            .iter()
            .map(|e| e.view(store.and_then(|s| s.get(&e.id)), now))
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        views
    }

    /// Every sink, by name.
    pub fn sinks(&self) -> Vec<SinkView> {
        let entries: Vec<Arc<SinkStatus>> = lock(&self.sinks).values().cloned().collect();
        entries.iter().map(|s| s.view()).collect()
    }

    /// Sets `log_capturer_container_lag_seconds` for every container on the board and removes
    /// the series of containers gone since the last call (called at each scrape).
    pub fn refresh_lag_metric(&self, metrics: &Metrics) {
        let views = self.containers();
        let mut series = lock(&self.lag_series);
        let now: HashSet<String> = views.iter().map(|v| v.name.clone()).collect();
        for gone in series.difference(&now) {
            metrics.container_lag_seconds.remove(&ContainerLabels {
                container_name: gone.clone(),
            });
        }
        for v in &views {
            metrics
                .container_lag_seconds
                .get_or_create(&ContainerLabels {
                    container_name: v.name.clone(),
                })
                .set(v.lag_seconds);
        }
        *series = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::StreamKind;

    fn meta(name: &str) -> watch::Receiver<Arc<ContainerMeta>> {
        watch::Sender::new(Arc::new(ContainerMeta::new(
            format!("id-{name}"),
            name.to_string(),
            "img:1".to_string(),
            None,
            None,
        )))
        .subscribe()
    }

    fn after(mut c: Cursor, stream: StreamKind, ts: i64) -> Cursor {
        c.deliver(stream, ts);
        c
    }

    struct Fixture {
        board: StatusBoard,
        store: Arc<CheckpointStore>,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Arc::new(CheckpointStore::open(dir.path(), Arc::new(Metrics::new())).expect("store"));
        let board = StatusBoard::new();
        board.attach_checkpoints(Arc::clone(&store));
        Fixture {
            board,
            store,
            _dir: dir,
        }
    }

    /// Delivered and acknowledged cursors, lines and lag as the JSON shows them: lag is 0
    /// while nothing is pending and counts from the last acknowledged line while something is.
    #[test]
    fn containers_show_cursors_lines_and_lag() {
        let f = fixture();
        let start = Cursor::at(0);
        f.store.init("id-web", start);
        let delivered: DeliveredCursor = Arc::new(Mutex::new(start));
        let entry = f.board.track("id-web", meta("web"), Arc::clone(&delivered));
        entry.set_rotation_interval(Duration::from_secs(300));
        let views = f.board.containers();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].state, "waiting");
        assert!(!views[0].pending);
        assert_eq!(views[0].lag_seconds, 0.0);
        assert_eq!(views[0].acknowledged, Some(CursorView::of(&start)));

        entry.stream_opened(now_ns());
        let now = now_ns();
        let first = after(start, StreamKind::Stdout, now - 30_000_000_000);
        let second = after(first, StreamKind::Stderr, now - 10_000_000_000);
        *lock(&delivered) = second;
        entry.delivered(2, now - 30_000_000_000);
        let v = &f.board.containers()[0];
        assert_eq!((v.state.as_str(), v.lines, v.pending), ("running", 2, true));
        // Nothing acknowledged yet: counted from the first line delivered.
        assert!(v.lag_seconds >= 30.0 && v.lag_seconds < 60.0, "{v:?}");
        assert!(!v.rotation_overdue);

        f.store.ack("id-web", first);
        let v = &f.board.containers()[0];
        assert!(v.lag_seconds >= 30.0 && v.lag_seconds < 60.0, "{v:?}");
        assert_eq!(v.acknowledged, Some(CursorView::of(&first)));
        assert_eq!(
            v.acknowledged.as_ref().and_then(|a| a.last_line_ns),
            Some(now - 30_000_000_000)
        );

        f.store.ack("id-web", second);
        let v = &f.board.containers()[0];
        assert!(!v.pending);
        assert_eq!(v.lag_seconds, 0.0, "everything delivered is acknowledged");
        assert_eq!(v.delivered, CursorView::of(&second));
        assert_eq!(v.acknowledged.as_ref(), Some(&v.delivered));

        entry.stream_closed(true, now_ns());
        entry.error("read: connection reset");
        let v = &f.board.containers()[0];
        assert_eq!((v.rotations, v.errors), (1, 1));
        assert!(v.last_rotation_ns.is_some() && v.stream_open_since.is_none());
        assert_eq!(v.last_error.as_deref(), Some("read: connection reset"));
    }

    /// An entry survives a new capture task (or pipeline generation) with its counters, and
    /// goes with `forget` or `retain_containers`; the lag series goes with it.
    #[test]
    fn entries_outlive_tasks_and_go_with_the_container() {
        let f = fixture();
        let metrics = Metrics::new();
        let cursor = || Arc::new(Mutex::new(Cursor::at(0)));
        let a = f.board.track("id-a", meta("a"), cursor());
        a.delivered(5, 1);
        a.set_state(CaptureState::Detached);
        let again = f.board.track("id-a", meta("a"), cursor());
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(f.board.containers()[0].lines, 5);
        assert_eq!(f.board.containers()[0].state, "waiting");
        f.board.track("id-b", meta("b"), cursor());
        f.board.refresh_lag_metric(&metrics);
        assert!(
            metrics
                .render()
                .contains("container_lag_seconds{container_name=\"b\"} 0.0")
        );

        f.board.forget("id-b");
        f.board.refresh_lag_metric(&metrics);
        let text = metrics.render();
        assert!(!text.contains("container_name=\"b\""), "{text}");
        assert!(text.contains("container_name=\"a\""), "{text}");
        f.board.retain_containers(|id| id != "id-a");
        assert!(f.board.containers().is_empty());
    }

    /// A host file is no container: tracking one leaves the board (and the lag metric) as
    /// it was.
    #[test]
    fn host_files_are_never_listed_as_containers() {
        let f = fixture();
        let metrics = Metrics::new();
        let file = watch::Sender::new(Arc::new(ContainerMeta::for_file(
            "file-1-2".into(),
            "/var/log/syslog".into(),
            "h".into(),
            Vec::new(),
        )))
        .subscribe();
        let entry = f
            .board
            .track("file-1-2", file, Arc::new(Mutex::new(Cursor::at(0))));
        entry.delivered(3, 1);
        assert!(f.board.containers().is_empty());
        assert!(f.board.container("file-1-2").is_none());
        f.board.refresh_lag_metric(&metrics);
        assert!(!metrics.render().contains("syslog"));
    }

    /// A stream open longer than twice its rotation interval is overdue.
    #[test]
    fn a_stream_not_rotated_for_two_intervals_is_overdue() {
        let f = fixture();
        let e = f
            .board
            .track("id-x", meta("x"), Arc::new(Mutex::new(Cursor::at(0))));
        e.set_rotation_interval(Duration::from_secs(10));
        e.stream_opened(now_ns() - 15_000_000_000);
        assert!(!f.board.containers()[0].rotation_overdue);
        e.stream_opened(now_ns() - 21_000_000_000);
        assert!(f.board.containers()[0].rotation_overdue);
        e.stream_closed(false, now_ns());
        assert!(!f.board.containers()[0].rotation_overdue);
    }

    /// A sink error is cleared by a success of its kind only; a restarted sink starts afresh.
    #[test]
    fn sink_errors_and_counts() {
        let board = StatusBoard::new();
        let loki = board.sink("loki", true);
        loki.received(100);
        loki.received(50);
        loki.finished(100);
        loki.failed("send", "connection refused");
        loki.failed("send", "timeout");
        loki.recovered("dead_letter");
        loki.set_buffered(3, 4096);
        let v = &board.sinks()[0];
        assert_eq!((v.in_flight_batches, v.queue_bytes), (1, 50));
        assert!(v.failing);
        assert_eq!(v.failures, 2);
        assert_eq!(v.last_error.as_deref(), Some("timeout"));
        assert_eq!(
            (v.buffered_records, v.buffered_bytes),
            (Some(3), Some(4096))
        );
        loki.recovered("send");
        assert!(!board.sinks()[0].failing);
        assert_eq!(board.sinks()[0].last_error, None);

        let file = board.sink("file", false);
        assert_eq!(board.sinks()[0].name, "file");
        assert_eq!(board.sinks()[0].buffered_records, None);
        file.failed("write", "disk full");
        let again = board.sink("file", false);
        assert!(!again.error.lock().map(|e| e.is_some()).unwrap_or(true));
        board.retain_sinks(&["loki"]);
        assert_eq!(board.sinks().len(), 1);
    }

    /// The served config carries no secret.
    #[test]
    fn config_is_redacted() {
        let yaml = "sinks:\n  loki:\n    url: http://u:pw-s3cret-0@127.0.0.1:3100/loki/api/v1/push\n    \
                    basic_auth: { username: u, password: pw-s3cret-1 }\n    \
                    headers: { X-Api-Key: key-s3cret-3 }\n";
        let config = Config::parse(yaml, "t").expect("valid");
        let board = StatusBoard::new();
        board.set_config(&config);
        let json = board.config_json();
        let text = json.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        let loki = &json["sinks"]["loki"];
        assert_eq!(loki["basic_auth"]["password"], "***");
        assert_eq!(loki["basic_auth"]["username"], "u");
        assert_eq!(loki["bearer_token"], "", "empty: shown empty");
        assert_eq!(loki["headers"]["X-Api-Key"], "***");
        assert_eq!(loki["url"], "http://u:***@127.0.0.1:3100/loki/api/v1/push");
        assert_eq!(json["capture"]["rotation_interval"], "5m");
        assert_eq!(json["pipeline"]["queue_bytes"], 64 * 1024 * 1024);

        let yaml = "sinks:\n  loki:\n    bearer_token: tok-s3cret-2\n";
        board.set_config(&Config::parse(yaml, "t").expect("valid"));
        let json = board.config_json();
        assert!(!json.to_string().contains("s3cret"), "{json}");
        assert_eq!(json["sinks"]["loki"]["bearer_token"], "***");
    }
}
