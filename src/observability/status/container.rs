//! Container entries of the status board and their JSON views.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

use crate::capture::{Cursor, DeliveredCursor, StreamPositions};
use crate::clock::now_ns;
use crate::docker::timestamp::format_rfc3339_nanos;
use crate::pipeline::ContainerMeta;

use super::lock;

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

    pub(super) fn from_u8(v: u8) -> Self {
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
pub(super) struct Source {
    pub(super) meta: watch::Receiver<Arc<ContainerMeta>>,
    pub(super) delivered: DeliveredCursor,
}

/// One container's entry. Times are ns since the epoch, 0 for "none".
pub struct ContainerStatus {
    pub(super) id: String,
    pub(super) source: Mutex<Source>,
    pub(super) state: AtomicU8,
    pub(super) open_since_ns: AtomicI64,
    pub(super) rotation_interval_ns: AtomicI64,
    pub(super) rotations: AtomicU64,
    pub(super) last_rotation_ns: AtomicI64,
    pub(super) lines: AtomicU64,
    /// Timestamp of the first line delivered in this process (the lag's base until a line is
    /// acknowledged).
    pub(super) first_line_ns: AtomicI64,
    pub(super) errors: AtomicU64,
    pub(super) last_error: Mutex<Option<(String, i64)>>,
    /// The processing pipeline applied to the container's lines, if any.
    pub(super) pipeline: Mutex<Option<Arc<str>>>,
}

impl ContainerStatus {
    pub(super) fn new(id: &str, source: Source) -> Self {
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

    pub(super) fn view(&self, acknowledged: Option<Cursor>, now: i64) -> ContainerView {
        let (meta, delivered) = {
            let source = lock(&self.source);
            let meta = Arc::clone(&source.meta.borrow());
            (meta, source.delivered.get())
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

pub(super) fn nonzero(v: i64) -> Option<i64> {
    (v != 0).then_some(v)
}

pub(super) fn seconds(ns: i64) -> f64 {
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
