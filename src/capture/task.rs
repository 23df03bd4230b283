//! One container's capture: open the follow stream from the cursor, read, hand batches to the
//! pipeline, rotate on schedule, and react to EOF and errors. Every wait races cancellation
//! and the rotation deadline, and the stream's connection is owned by this task alone, so
//! closing a stream — idle or busy — is a drop that releases its socket immediately.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::assembler::Assembler;
use super::coalesce::Coalescer;
use super::cursor::{Cursor, Replay};
use super::decoder::{Decoder, Message};
use super::pause::PauseTimer;
use crate::backoff::{Backoff, sleep_or_cancel};
use crate::docker::{DockerClient, DockerError, HttpStream};
use crate::observability::metrics::{ContainerLabels, ContainerStreamLabels, Metrics};
use crate::pipeline::{Batch, ContainerMeta, Delivery, LogLine, QueueBudget, StreamKind};

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

/// A committed cursor shared between a capture task and discovery (which keeps it across
/// stops and starts of the container).
pub type SharedCursor = Arc<Mutex<Cursor>>;

pub fn read_cursor(cursor: &SharedCursor) -> Cursor {
    match cursor.lock() {
        Ok(c) => *c,
        Err(poisoned) => *poisoned.into_inner(),
    }
}

fn write_cursor(cursor: &SharedCursor, value: Cursor) {
    match cursor.lock() {
        Ok(mut c) => *c = value,
        Err(poisoned) => *poisoned.into_inner() = value,
    }
}

enum SessionEnd {
    Rotate,
    Cancelled,
    /// Clean end of stream; `lines` is how many new lines the session emitted.
    Eof {
        lines: u64,
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
    pub cursor: SharedCursor,
    pub cancel: CancellationToken,
}

impl CaptureTask {
    pub async fn run(mut self) -> CaptureExit {
        let ctx = Arc::clone(&self.ctx);
        let mut backoff = Backoff::new(ctx.backoff_initial, ctx.backoff_max);
        loop {
            if self.cancel.is_cancelled() {
                return CaptureExit::Cancelled;
            }
            let since = read_cursor(&self.cursor).ts_ns;
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
                    Some(404) | Some(409) => {
                        debug!(container = %self.name(), error = %e, "container gone");
                        return CaptureExit::Gone;
                    }
                    _ => {
                        ctx.metrics.stream_error(open_reason(&e));
                        let delay = backoff.next_delay();
                        warn!(container = %self.name(), error = %e, retry_in = ?delay, "cannot open log stream");
                        if !sleep_or_cancel(delay, &self.cancel).await {
                            return CaptureExit::Cancelled;
                        }
                        continue;
                    }
                },
            };
            let active = ActiveStream::open(&ctx.metrics);
            let end = self.session(stream, active.opened).await;
            let age = active.opened.elapsed();
            drop(active);
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
                SessionEnd::Eof { lines } => {
                    match self.after_eof().await {
                        // The daemon can end a follow stream when the container stops before
                        // it has sent every line (seen with json-file under load). A stopped
                        // container is done only once a reopen from the cursor brings nothing.
                        Some(CaptureExit::Stopped) if lines > 0 => {
                            debug!(container = %self.name(), lines, "container stopped; reading again until nothing is left");
                            backoff.reset();
                        }
                        Some(exit) => return exit,
                        None => {
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
                    let delay = backoff.next_delay();
                    warn!(container = %self.name(), error = %message, retry_in = ?delay, "log stream failed; reopening from cursor");
                    if !sleep_or_cancel(delay, &self.cancel).await {
                        return CaptureExit::Cancelled;
                    }
                }
            }
        }
    }

    fn name(&self) -> String {
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

    /// Reads one stream until rotation, EOF, error or cancellation.
    async fn session(&mut self, mut stream: HttpStream, opened: Instant) -> SessionEnd {
        let ctx = Arc::clone(&self.ctx);
        let deadline = tokio::time::sleep_until((opened + ctx.rotation_interval).into());
        tokio::pin!(deadline);
        let committed = read_cursor(&self.cursor);
        let mut replay = Replay::new(committed);
        let mut cursor = committed;
        let mut decoder = Decoder::new(self.tty);
        let mut assembler = Assembler::new(ctx.max_line_bytes);
        let mut lines: Vec<LogLine> = Vec::new();
        let mut emitted: u64 = 0;
        let counters = SessionCounters::new(&ctx.metrics, &self.meta.borrow().name, self.tty);
        let mut coalescer = Coalescer::new(Instant::now());
        let mut timer = PauseTimer::default();
        loop {
            let chunk = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return SessionEnd::Cancelled,
                _ = &mut deadline => return SessionEnd::Rotate,
                c = stream.next_chunk() => c,
            };
            // Gather what is already there into one batch: the daemon sends every line as its
            // own HTTP chunk, and a batch per line would cost more than the line.
            // A failure ends the session, but only after the lines completed before it are
            // handed over: the daemon may not be able to serve them again (a removed container).
            let mut eof = false;
            let mut failure = None;
            let mut gathered = 0usize;
            let mut next = Some(chunk);
            while let Some(chunk) = next.take() {
                match chunk {
                    Ok(Some(bytes)) => {
                        gathered += bytes.len();
                        decoder.push(bytes);
                    }
                    Ok(None) => eof = true,
                    Err(e) => {
                        failure = Some(SessionEnd::Error("read", e.to_string()));
                        break;
                    }
                }
                if let Err(end) = drain_decoder(&mut decoder, &mut assembler, &mut lines) {
                    failure = Some(end);
                    break;
                }
                if !eof && gathered < GATHER_BYTES && !stream.drained() {
                    next = stream.try_next_chunk();
                }
            }
            let read_lines = lines.len();
            if eof && failure.is_none() {
                if let Some(Message::Log { stream, payload }) = decoder.finish() {
                    assembler.push(stream, payload, &mut lines);
                }
                assembler.flush(&mut lines);
            }
            if assembler.unstamped > 0 {
                ctx.metrics.stream_error("line_without_timestamp");
                assembler.unstamped = 0;
            }
            lines.retain(|line| {
                let new = replay.admit(line.ts_ns);
                if new {
                    cursor.advance(line.ts_ns);
                }
                new
            });
            if !lines.is_empty() {
                counters.count(&lines, &ctx.metrics);
                emitted += lines.len() as u64;
                let message_bytes: usize = lines.iter().map(|l| l.message.len()).sum();
                let line_count = lines.len();
                // The next batch will likely be as large: size it once instead of regrowing
                // (within reason: an idle stream should not keep a burst-sized vector).
                let next_lines = Vec::with_capacity(line_count.min(1024));
                let batch = Batch {
                    container: self.meta.borrow().clone(),
                    lines: std::mem::replace(&mut lines, next_lines),
                    cursor,
                };
                // Waiting for budget and queue room is where backpressure pauses reading. Both
                // race rotation too: an unsent batch is simply re-read after the reopen, because
                // the shared cursor only moves once the batch is handed over.
                let charge = ctx.budget.charge(line_count, message_bytes);
                let permit = tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return SessionEnd::Cancelled,
                    _ = &mut deadline => return SessionEnd::Rotate,
                    p = ctx.budget.acquire(charge, line_count) => match p {
                        Some(p) => p,
                        None => return SessionEnd::Cancelled,
                    },
                };
                tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return SessionEnd::Cancelled,
                    _ = &mut deadline => return SessionEnd::Rotate,
                    sent = ctx.pipeline.send(Delivery::new(batch, permit)) => {
                        if sent.is_err() {
                            return SessionEnd::Cancelled;
                        }
                    }
                }
                write_cursor(&self.cursor, cursor);
            }
            if let Some(end) = failure {
                return end;
            }
            if eof {
                return SessionEnd::Eof { lines: emitted };
            }
            // A busy stream that has been caught up with waits a moment before the next read,
            // so that one read brings many lines instead of a few (see `coalesce`).
            let pause = coalescer.after_read(read_lines, gathered, Instant::now());
            if let Some(pause) = pause {
                if let Err(e) = stream.park() {
                    return SessionEnd::Error("read", e.to_string());
                }
                tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return SessionEnd::Cancelled,
                    _ = &mut deadline => return SessionEnd::Rotate,
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

/// At most this much is gathered into one batch from chunks that are already available.
const GATHER_BYTES: usize = 256 * 1024;

/// Decodes every complete message buffered in `decoder` into `lines`.
fn drain_decoder(
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
        DockerError::Transport(_) => "open_transport",
        _ => "open_failed",
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

    fn count(&self, lines: &[LogLine], metrics: &Metrics) {
        let (mut err, mut bytes, mut truncated) = (0, 0, 0);
        for l in lines {
            err += u64::from(l.stream == StreamKind::Stderr);
            bytes += l.message.len() as u64;
            truncated += u64::from(l.truncated);
        }
        let first = lines.len() as u64 - err;
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
