//! One container's capture: open the follow stream from the cursor, read, hand batches to the
//! pipeline, rotate on schedule, and react to EOF and errors. Every wait races cancellation
//! and the rotation deadline, and the stream's connection is owned by this task alone, so
//! closing a stream — idle or busy — is a drop that releases its socket immediately.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Level, debug, enabled, info, trace, warn};

use bytes::BytesMut;

use super::assembler::Assembler;
use super::coalesce::Coalescer;
use super::cursor::{Cursor, DeliveredCursor, ResumeFilter};
use super::decoder::{Decoder, Message};
use super::pause::PauseTimer;
use super::rotation::{AtDeadline, RotationGate};
use super::source::{Source, Taken};
use crate::backoff::{Backoff, sleep_or_cancel};
use crate::clock::now_ns;
use crate::docker::{DockerClient, DockerError};
use crate::observability::metrics::{ContainerLabels, ContainerStreamLabels, Metrics};
use crate::observability::status::{CaptureState, ContainerStatus, StatusBoard};
use crate::pipeline::{Batch, ContainerMeta, Delivery, LogLine, QueueBudget, StreamKind};
use crate::processing::{Pipelines, Processor, StageContext};

/// Settings and handles shared by every capture task.
pub struct CaptureContext {
    pub client: DockerClient,
    pub pipeline: mpsc::Sender<Delivery>,
    /// Byte budget of the queue: waiting for it is what pauses reading.
    pub budget: QueueBudget,
    pub metrics: Arc<Metrics>,
    pub rotation_interval: Duration,
    pub max_line_bytes: usize,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// The process's status board (`GET /api/v1/containers`): each task updates its entry.
    pub status: Arc<StatusBoard>,
    /// `processing.pipelines`, compiled (discovery picks each container's).
    pub pipelines: Arc<Pipelines>,
    /// `docker.capture: json_file`: where the logs are (None: every container through the API).
    pub json_file: Option<Arc<super::json_file::JsonFileMode>>,
}

/// Why a capture task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureExit {
    /// Shutdown or the container was dropped by discovery.
    Cancelled,
    /// The stream reached its end and the container is not running.
    Stopped,
    /// The container no longer exists (404) or is being removed (409).
    Gone,
    /// The log driver cannot be read (501): wait for the next `start`.
    Unreadable,
}

pub fn read_cursor(cursor: &DeliveredCursor) -> Cursor {
    match cursor.lock() {
        Ok(c) => *c,
        Err(poisoned) => *poisoned.into_inner(),
    }
}

fn write_cursor(cursor: &DeliveredCursor, value: Cursor) {
    match cursor.lock() {
        Ok(mut c) => *c = value,
        Err(poisoned) => *poisoned.into_inner() = value,
    }
}

pub(super) enum SessionEnd {
    Rotate,
    Cancelled,
    /// Clean end of the source; `lines` is how many new lines the session emitted, `unfinished`
    /// whether a line was still open (some pieces read, not its end).
    Eof {
        lines: u64,
        unfinished: bool,
    },
    Error(&'static str, String),
}

/// Keeps `streams_active` true to the streams actually open, however the session ends.
struct ActiveStream<'a> {
    metrics: &'a Metrics,
    opened: Instant,
}

impl<'a> ActiveStream<'a> {
    fn open(metrics: &'a Metrics) -> Self {
        metrics.streams_active.inc();
        ActiveStream {
            metrics,
            opened: Instant::now(),
        }
    }
}

impl Drop for ActiveStream<'_> {
    fn drop(&mut self) {
        self.metrics.streams_active.dec();
        self.metrics
            .stream_age
            .observe(self.opened.elapsed().as_secs_f64());
    }
}

pub struct CaptureTask {
    pub ctx: Arc<CaptureContext>,
    pub id: String,
    pub tty: bool,
    pub meta: watch::Receiver<Arc<ContainerMeta>>,
    pub cursor: DeliveredCursor,
    pub cancel: CancellationToken,
    /// The container's processing pipeline, never used itself: each session runs a fresh
    /// clone of it (an open multiline group dies with its session and is read again).
    pub processor: Option<Processor>,
    /// `docker.capture: json_file` for this container: read its json-file log, not a follow
    /// stream (None: the Engine API).
    pub json_file: Option<super::json_file::JsonFileTarget>,
}

impl CaptureTask {
    pub async fn run(mut self) -> CaptureExit {
        // The entry discovery made when it started this task; a detached one (on no board)
        // if the container was forgotten meanwhile.
        let status = self.ctx.status.container(&self.id).unwrap_or_else(|| {
            ContainerStatus::detached(&self.id, self.meta.clone(), Arc::clone(&self.cursor))
        });
        status.set_rotation_interval(self.ctx.rotation_interval);
        status.set_pipeline(self.processor.as_ref().map(Processor::name));
        let exit = match self.json_file.take() {
            Some(target) => self.run_json_file(target, &status).await,
            None => self.run_with_status(&status).await,
        };
        status.set_state(match exit {
            CaptureExit::Cancelled => CaptureState::Detached,
            CaptureExit::Stopped | CaptureExit::Gone => CaptureState::Stopped,
            CaptureExit::Unreadable => CaptureState::Unreadable,
        });
        exit
    }

    pub(super) async fn run_with_status(mut self, status: &ContainerStatus) -> CaptureExit {
        let ctx = Arc::clone(&self.ctx);
        let mut backoff = Backoff::new(ctx.backoff_initial, ctx.backoff_max);
        // Whether any stream of this container was opened (a 404/409 before that means the
        // container went away before a line of it could be read).
        let mut ever_opened = false;
        // The container was seen stopped at the end of the last stream: the next stream's end
        // is the end of its output, and a line still open there is complete.
        let mut final_read = false;
        loop {
            if self.cancel.is_cancelled() {
                return CaptureExit::Cancelled;
            }
            let since = read_cursor(&self.cursor).since_ns();
            let opened = tokio::select! {
                _ = self.cancel.cancelled() => return CaptureExit::Cancelled,
                r = ctx.client.logs(&self.id, since) => r,
            };
            let stream = match opened {
                Ok(stream) => stream,
                Err(e) => match e.status() {
                    Some(501) => {
                        ctx.metrics.stream_error("unreadable_log_driver");
                        warn!(container = %self.name(), error = %e,
                            "log driver cannot be read; not retrying until the container starts again");
                        return CaptureExit::Unreadable;
                    }
                    Some(404) | Some(409) if !ever_opened => {
                        ctx.metrics.stream_error("gone_before_read");
                        warn!(container = %self.name(), container_id = %self.id, error = %e,
                            "container was gone (removed or being removed) before its logs could be read; its output is lost");
                        return CaptureExit::Gone;
                    }
                    Some(404) | Some(409) => {
                        debug!(container = %self.name(), error = %e, "container gone");
                        return self.gone();
                    }
                    _ => {
                        ctx.metrics.stream_error(open_reason(&e));
                        status.error(&format!("cannot open log stream: {e}"));
                        let delay = backoff.next_delay();
                        warn!(container = %self.name(), error = %e, retry_in = ?delay, "cannot open log stream");
                        if !sleep_or_cancel(delay, &self.cancel).await {
                            return CaptureExit::Cancelled;
                        }
                        continue;
                    }
                },
            };
            ever_opened = true;
            trace!(container = %self.name(), since = %super::since_text(since), since_ns = since, "stream opened");
            let active = ActiveStream::open(&ctx.metrics);
            status.stream_opened(now_ns());
            let end = self
                .session(
                    Source::api(stream, self.tty),
                    active.opened,
                    ctx.rotation_interval,
                    final_read,
                    status,
                )
                .await;
            let age = active.opened.elapsed();
            drop(active);
            status.stream_closed(matches!(end, SessionEnd::Rotate), now_ns());
            match end {
                SessionEnd::Cancelled => return CaptureExit::Cancelled,
                SessionEnd::Rotate => {
                    ctx.metrics
                        .rotations
                        .get_or_create(&ContainerLabels {
                            container_name: self.name(),
                        })
                        .inc();
                    debug!(container = %self.name(), age_ms = age.as_millis() as u64, "stream rotated");
                    backoff.reset();
                }
                SessionEnd::Eof { lines, unfinished } => {
                    match self.after_eof().await {
                        // The daemon can end a follow stream when the container stops before
                        // it has sent every line (seen with json-file under load). A stopped
                        // container is done only once a reopen from the cursor brings nothing;
                        // a line left open is read once more and then emitted as it is.
                        // A first empty stream of a container that never gave a line is
                        // read once more too: a daemon removing the container (`--rm`) can
                        // answer 200 with an empty body once its log file is gone, and the
                        // reopen then tells (404/409) that it was not silence.
                        Some(CaptureExit::Stopped)
                            if lines > 0
                                || unfinished
                                || (!final_read && self.delivered_nothing()) =>
                        {
                            debug!(container = %self.name(), lines, unfinished,
                                "container stopped; reading again until nothing is left");
                            final_read = true;
                            backoff.reset();
                        }
                        Some(CaptureExit::Gone) => return self.gone(),
                        Some(exit) => return exit,
                        None => {
                            final_read = false;
                            // Still running: the stream ended under us (daemon restart, log file
                            // rotation). Reopen; pause first if the stream was empty and short, so a
                            // daemon that keeps closing at once cannot make us spin.
                            if lines == 0 && age < Duration::from_secs(1) {
                                if !sleep_or_cancel(backoff.next_delay(), &self.cancel).await {
                                    return CaptureExit::Cancelled;
                                }
                            } else {
                                backoff.reset();
                            }
                        }
                    }
                }
                SessionEnd::Error(reason, message) => {
                    ctx.metrics.stream_error(reason);
                    status.error(&format!("{reason}: {message}"));
                    let delay = backoff.next_delay();
                    warn!(container = %self.name(), error = %message, retry_in = ?delay, "log stream failed; reopening from cursor");
                    if !sleep_or_cancel(delay, &self.cancel).await {
                        return CaptureExit::Cancelled;
                    }
                }
            }
        }
    }

    /// No line of this container was ever delivered, by this task or before it (checkpoint
    /// cursors only move forward, so "nothing" now means nothing at the task's start too).
    fn delivered_nothing(&self) -> bool {
        read_cursor(&self.cursor).delivered_nothing()
    }

    /// The container is gone after its stream was opened. If not a line of it was ever
    /// delivered, its stream gave nothing before it was removed (an instant `--rm`: the daemon
    /// may answer 200 with an empty body while it deletes the log file): counted and named like
    /// a container gone before its stream could be opened. A container that printed nothing
    /// and was removed at once is counted too; the two cannot be told apart.
    pub(super) fn gone(&self) -> CaptureExit {
        if self.delivered_nothing() {
            self.ctx.metrics.stream_error("gone_before_read");
            warn!(container = %self.name(), container_id = %self.id,
                "container was gone (removed) before any of its lines could be read; its output, if it had any, is lost");
        }
        CaptureExit::Gone
    }

    pub(super) fn name(&self) -> String {
        self.meta.borrow().name.clone()
    }

    /// After a clean EOF: `Some(exit)` when the task should end, `None` to reopen.
    async fn after_eof(&self) -> Option<CaptureExit> {
        let inspected = tokio::select! {
            _ = self.cancel.cancelled() => return Some(CaptureExit::Cancelled),
            r = self.ctx.client.inspect(&self.id) => r,
        };
        match inspected {
            Ok(c) if c.state.running => None,
            Ok(_) => {
                debug!(container = %self.name(), "container stopped; stream drained");
                Some(CaptureExit::Stopped)
            }
            Err(e) if e.status() == Some(404) => Some(CaptureExit::Gone),
            Err(e) => {
                // Cannot tell: treat as stopped; discovery re-inspects and the next start event
                // resumes from the cursor.
                info!(container = %self.name(), error = %e, "cannot inspect container after its stream ended");
                Some(CaptureExit::Stopped)
            }
        }
    }

    /// Reads one source until rotation, EOF, error or cancellation. `final_read`: the container
    /// has stopped, so a line still open at the end of the stream is complete as it is.
    pub(super) async fn session(
        &mut self,
        mut source: Source,
        opened: Instant,
        rotation_interval: Duration,
        final_read: bool,
        status: &ContainerStatus,
    ) -> SessionEnd {
        let ctx = Arc::clone(&self.ctx);
        let deadline = tokio::time::sleep_until((opened + rotation_interval).into());
        tokio::pin!(deadline);
        let mut rotation = RotationGate::new(rotation_interval, opened, now_ns());
        let mut replay = ResumeFilter::new(read_cursor(&self.cursor));
        let mut assembler = Assembler::new(ctx.max_line_bytes);
        let mut lines: Vec<LogLine> = Vec::new();
        let mut emitted: u64 = 0;
        let mut counters =
            SessionCounters::new(&ctx.metrics, &self.meta.borrow_and_update().name, self.tty);
        let mut coalescer = Coalescer::new(Instant::now());
        let mut timer = PauseTimer::default();
        let mut processor = self.processor.clone();
        // When the open multiline group of a quiet stream is due (see `flush_after`).
        let flush_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(flush_timer);
        let mut last_read = Instant::now();
        loop {
            let flush_due = processor.as_ref().and_then(Processor::due_ns);
            if let Some(due) = flush_due {
                let wait = Duration::from_nanos(u64::try_from(due - now_ns()).unwrap_or(0));
                // Due by Docker's timestamps, and the stream quiet for a moment: a reopen
                // serves an old group's lines in several chunks, and a due group must not
                // be cut between two of them.
                let at = (Instant::now() + wait).max(last_read + QUIET_BEFORE_FLUSH);
                flush_timer.as_mut().reset(at.into());
            }
            // Lines already there are read before a due group is flushed: the group may
            // still get its continuation (the stream arm comes first).
            let event = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return SessionEnd::Cancelled,
                _ = &mut deadline => match rotation.at_deadline(Instant::now()) {
                    AtDeadline::Rotate => return SessionEnd::Rotate,
                    AtDeadline::NotBefore(at) => {
                        deadline.as_mut().reset(at.into());
                        continue;
                    }
                },
                c = source.ready() => Some(c),
                _ = &mut flush_timer, if flush_due.is_some() => None,
            };
            let flushing = event.is_none();
            // Gather what is already there into one batch (see `Source::take`).
            // A failure ends the session, but only after the lines completed before it are
            // handed over: the daemon may not be able to serve them again (a removed container).
            let Taken {
                gathered,
                eof,
                failure,
            } = match event {
                Some(ready) => source.take(ready, &mut assembler, &mut lines),
                None => Taken {
                    gathered: 0,
                    eof: false,
                    failure: None,
                },
            };
            let read_lines = lines.len();
            if gathered > 0 {
                let newest = if rotation.caught_up() {
                    None
                } else {
                    lines.iter().map(|l| l.ts_ns).max()
                };
                last_read = Instant::now();
                rotation.on_read(last_read, newest);
            }
            if eof && failure.is_none() {
                source.finish(&mut assembler, &mut lines);
                // While the container runs, a line open at the end of the stream may still get
                // its last pieces: it stays unfinished, and the reopen serves it again.
                if final_read {
                    assembler.flush(&mut lines);
                }
            }
            if assembler.unstamped > 0 {
                ctx.metrics.stream_error("line_without_timestamp");
                assembler.unstamped = 0;
            }
            let before_filter = lines.len();
            let (cursor, processed) = match &mut processor {
                None => {
                    replay.filter(&mut lines);
                    (replay.cursor(assembler.earliest_open_ns()), None)
                }
                Some(p) => {
                    let meta = self.meta.borrow().clone();
                    let cx = StageContext {
                        container: &meta,
                        now_ns: now_ns(),
                    };
                    let mut records = Vec::with_capacity(lines.len());
                    let mut admitted = 0;
                    for mut line in lines.drain(..) {
                        let before = replay.position(line.stream);
                        if replay.admit_line(&mut line) {
                            admitted += 1;
                            p.push(line, before, &cx, &mut records);
                        }
                    }
                    if flushing {
                        p.flush_due(now_ns(), &cx, &mut records);
                    }
                    // The stream ended cleanly: its open groups end with it. Most often the
                    // container stopped, and may be removed before a reopen could serve the
                    // group again (`--rm`: its last stack trace would be lost). After a daemon
                    // restart a group may be cut in two; nothing is lost or repeated.
                    if eof && failure.is_none() {
                        p.flush_all(&cx, &mut records);
                    }
                    lines = records;
                    let mut cursor = replay.cursor(assembler.earliest_open_ns());
                    // Not past the first line of a group still open.
                    p.hold(&mut cursor);
                    (cursor, Some(admitted))
                }
            };
            if processed.is_none() && before_filter > lines.len() {
                trace!(container = %self.name(), skipped = before_filter - lines.len(),
                    "lines already delivered skipped");
            }
            // With processing, a read whose lines were all dropped (or all went into an open
            // group) can still move the cursor: hand that over too, so dropped lines are
            // acknowledged and never read again.
            // Positions only: a cursor that differs just in `unfinished_ns` (a reopen that
            // has not re-read a held group yet) must not replace the held one.
            let moved = processed.is_some() && cursor.positions_differ(&read_cursor(&self.cursor));
            if !lines.is_empty() || moved {
                let line_count = lines.len();
                // The lines are slices of the read buffers; copied into one buffer of their
                // exact size, a batch holds what the budget charges and no more (see `compact`).
                let message_bytes = compact(&mut lines);
                // The next batch will likely be as large: size it once instead of regrowing
                // (within reason: an idle stream should not keep a burst-sized vector).
                let next_lines = Vec::with_capacity(line_count.min(1024));
                let batch = Batch {
                    container: self.meta.borrow().clone(),
                    lines: std::mem::replace(&mut lines, next_lines),
                    position: cursor.into(),
                };
                // Waiting for budget and queue room is where backpressure pauses reading. Both
                // race rotation too (for a caught-up stream): an unsent batch is simply re-read
                // after the reopen, because the shared cursor only moves once the batch is
                // handed over.
                // What processing added lives as long as the batch: charged with it (only a
                // pipeline adds extras, so the path without one skips the pass).
                let extra_bytes: usize = if processed.is_some() {
                    batch
                        .lines
                        .iter()
                        .filter_map(|l| l.extra.as_deref())
                        .map(crate::processing::Extra::heap_bytes)
                        .sum()
                } else {
                    0
                };
                let charge = ctx
                    .budget
                    .charge(batch.lines.capacity(), message_bytes + extra_bytes);
                let permit = tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return SessionEnd::Cancelled,
                    _ = &mut deadline, if rotation.may_rotate_while_not_reading() => return SessionEnd::Rotate,
                    p = ctx.budget.acquire(charge, line_count) => match p {
                        Some(p) => p,
                        None => return SessionEnd::Cancelled,
                    },
                };
                let first_ts_ns = batch.lines.first().map_or(0, |l| l.ts_ns);
                let mut delivered = LineCounts::of(&batch.lines);
                let summary = enabled!(Level::TRACE).then(|| line_summary(&batch.lines));
                tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return SessionEnd::Cancelled,
                    _ = &mut deadline, if rotation.may_rotate_while_not_reading() => return SessionEnd::Rotate,
                    sent = ctx.pipeline.send(Delivery::new(batch, permit)) => {
                        if sent.is_err() {
                            return SessionEnd::Cancelled;
                        }
                    }
                }
                if let Some(lines) = summary {
                    trace!(container = %self.name(), lines, since = %cursor.since_text(),
                        cursor = ?cursor.streams,
                        "batch handed over");
                }
                write_cursor(&self.cursor, cursor);
                if let Some(p) = &mut processor {
                    // Collected counts what was read, not what processing made of it: the
                    // input lines emitted (in a group or alone) or dropped since the last batch.
                    let ([first, err], bytes) = p.take_finished();
                    delivered = LineCounts {
                        first,
                        err,
                        bytes,
                        truncated: delivered.truncated,
                    };
                }
                // Counted once handed over: a batch dropped by a rotation is re-read, and must
                // not be counted twice. A rename since the last batch counts under the new name.
                if self.meta.has_changed().unwrap_or(false) {
                    counters = SessionCounters::new(
                        &ctx.metrics,
                        &self.meta.borrow_and_update().name,
                        self.tty,
                    );
                }
                counters.count(&delivered, &ctx.metrics);
                status.delivered(line_count as u64, first_ts_ns);
                // New lines read, whatever processing made of them (the end-of-stream logic
                // asks whether a session brought anything).
                emitted += processed.unwrap_or(line_count) as u64;
            }
            if let Some(end) = failure {
                return end;
            }
            if eof {
                return SessionEnd::Eof {
                    lines: emitted,
                    // Open multiline groups were flushed at the end of the stream.
                    unfinished: assembler.has_open_line(),
                };
            }
            // A busy stream that has been caught up with waits a moment before the next read,
            // so that one read brings many lines instead of a few (see `coalesce`).
            let pause = coalescer.after_read(read_lines, gathered, Instant::now());
            if let Some(pause) = pause.filter(|_| source.coalesces()) {
                if let Err(e) = source.park() {
                    return SessionEnd::Error("read", e.to_string());
                }
                tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return SessionEnd::Cancelled,
                    _ = &mut deadline, if rotation.may_rotate_while_not_reading() => return SessionEnd::Rotate,
                    failed = timer.sleep(pause) => if let Some(e) = failed {
                        ctx.metrics.stream_error("pause_timer");
                        warn!(container = %self.name(), error = %e,
                            "no sub-millisecond timer; pausing with the 1 ms one for this stream");
                    }
                }
            }
        }
    }
}

/// Copies the lines' messages, slices of read buffers that may be far larger (a 100-byte line
/// can keep a 256 KiB read alive until it is written), into one buffer of exactly their total
/// size; returns that size. Afterwards a batch holds the bytes the queue budget charges for,
/// and the read buffers are free as soon as the decoder is done with them.
pub fn compact(lines: &mut [LogLine]) -> usize {
    let total: usize = lines.iter().map(|l| l.message.len()).sum();
    let mut buf = BytesMut::with_capacity(total);
    for line in lines.iter() {
        buf.extend_from_slice(&line.message);
    }
    let buf = buf.freeze();
    let mut at = 0;
    for line in lines.iter_mut() {
        let len = line.message.len();
        line.message = buf.slice(at..at + len);
        at += len;
    }
    total
}

/// For tracing: each line's stream, timestamp and first bytes.
fn line_summary(lines: &[LogLine]) -> String {
    lines
        .iter()
        .map(|l| {
            let head = &l.message[..l.message.len().min(12)];
            format!(
                "{:?}@{} {:?}/{}",
                l.stream,
                l.ts_ns,
                String::from_utf8_lossy(head),
                l.message.len()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How long a stream must have sent nothing before its due multiline group is flushed.
const QUIET_BEFORE_FLUSH: Duration = Duration::from_millis(250);

/// Decodes every complete message buffered in `decoder` into `lines`.
pub(super) fn drain_decoder(
    decoder: &mut Decoder,
    assembler: &mut Assembler,
    lines: &mut Vec<LogLine>,
) -> Result<(), SessionEnd> {
    loop {
        match decoder.next_message() {
            Ok(Some(Message::Log { stream, payload })) => assembler.push(stream, payload, lines),
            Ok(Some(Message::SystemError(text))) => {
                return Err(SessionEnd::Error(
                    "daemon_stream_error",
                    String::from_utf8_lossy(&text).trim().to_string(),
                ));
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(SessionEnd::Error("decode", e.to_string())),
        }
    }
}

fn open_reason(e: &DockerError) -> &'static str {
    match e {
        DockerError::Timeout => "open_timeout",
        DockerError::Transport(_) | DockerError::Hinted { .. } => "open_transport",
        _ => "open_failed",
    }
}

/// What a batch adds to the container's counters (taken before the batch is handed over).
#[derive(Clone, Copy)]
struct LineCounts {
    /// stdout or tty lines.
    first: u64,
    err: u64,
    bytes: u64,
    truncated: u64,
}

impl LineCounts {
    fn of(lines: &[LogLine]) -> Self {
        let (mut err, mut bytes, mut truncated) = (0, 0, 0);
        for l in lines {
            err += u64::from(l.stream == StreamKind::Stderr);
            bytes += l.message.len() as u64;
            truncated += u64::from(l.truncated);
        }
        LineCounts {
            first: lines.len() as u64 - err,
            err,
            bytes,
            truncated,
        }
    }
}

/// Per-session handles to the container's counters (label lookups once, not per line).
/// A TTY container only ever has the `tty` series; others only `stdout` and `stderr`.
struct SessionCounters {
    first: prometheus_client::metrics::counter::Counter,
    stderr: Option<prometheus_client::metrics::counter::Counter>,
    bytes: prometheus_client::metrics::counter::Counter,
}

impl SessionCounters {
    fn new(metrics: &Metrics, name: &str, tty: bool) -> Self {
        let per_stream = |stream: StreamKind| {
            metrics
                .logs_collected
                .get_or_create(&ContainerStreamLabels {
                    container_name: name.to_string(),
                    stream: stream.as_str(),
                })
                .clone()
        };
        SessionCounters {
            first: per_stream(if tty {
                StreamKind::Tty
            } else {
                StreamKind::Stdout
            }),
            stderr: (!tty).then(|| per_stream(StreamKind::Stderr)),
            bytes: metrics
                .bytes_collected
                .get_or_create(&ContainerLabels {
                    container_name: name.to_string(),
                })
                .clone(),
        }
    }

    fn count(&self, c: &LineCounts, metrics: &Metrics) {
        let LineCounts {
            first,
            err,
            bytes,
            truncated,
        } = *c;
        if first > 0 {
            self.first.inc_by(first);
        }
        if let (Some(c), true) = (&self.stderr, err > 0) {
            c.inc_by(err);
        }
        self.bytes.inc_by(bytes);
        if truncated > 0 {
            metrics.lines_truncated.inc_by(truncated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Item 13 of issue 9: 100-byte lines decoded from one 256 KiB read are slices of it, so a
    /// batch of a few of them kept the whole read alive (the queue budget counted 100 bytes a
    /// line). After `compact` the batch's messages live in one buffer of exactly their size,
    /// and none of them points into the read buffer.
    #[test]
    fn a_batch_does_not_pin_the_read_buffer() {
        let mut read = Vec::new();
        let mut i = 0;
        while read.len() < 256 * 1024 {
            let text = format!("2026-11-28T23:49:08.{i:09}Z line {i} {}\n", "x".repeat(80));
            read.extend_from_slice(&[1, 0, 0, 0]);
            read.extend_from_slice(&(text.len() as u32).to_be_bytes());
            read.extend_from_slice(text.as_bytes());
            i += 1;
        }
        let read = bytes::Bytes::from(read);
        let range = read.as_ptr() as usize..read.as_ptr() as usize + read.len();
        let mut decoder = Decoder::new(false);
        let mut assembler = Assembler::new(1 << 20);
        let mut lines = Vec::new();
        decoder.push(read.clone());
        assert!(drain_decoder(&mut decoder, &mut assembler, &mut lines).is_ok());
        lines.truncate(5); // a small batch: the rest was handed over before, or filtered out
        assert!(
            lines
                .iter()
                .all(|l| range.contains(&(l.message.as_ptr() as usize))),
            "decoded lines are slices of the read buffer"
        );
        let total = compact(&mut lines);
        assert_eq!(total, lines.iter().map(|l| l.message.len()).sum::<usize>());
        for l in &lines {
            assert!(
                !range.contains(&(l.message.as_ptr() as usize)),
                "a batch's line still points into the read buffer"
            );
        }
        // One buffer, contiguous, exactly the messages.
        let start = lines[0].message.as_ptr() as usize;
        let end = lines[4].message.as_ptr() as usize + lines[4].message.len();
        assert_eq!(end - start, total);
        assert_eq!(&lines[0].message[..7], b"line 0 ");
        // The read buffer is referenced by nothing else now: `read` is its only owner.
        drop(decoder);
        assert!(read.is_unique(), "the read buffer is still shared");
    }
}
