//! One container's capture: open the follow stream from the cursor, read, hand batches to the
//! pipeline, rotate on schedule, and react to EOF and errors. Every wait races cancellation
//! and the rotation deadline, and the stream's connection is owned by this task alone, so
//! closing a stream — idle or busy — is a drop that releases its socket immediately.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::cursor::DeliveredCursor;
use super::error::{CaptureError, StreamErrorReason};
use super::source::Source;
use crate::backoff::{Backoff, sleep_or_cancel};
use crate::clock::now_ns;
use crate::docker::DockerClient;
use crate::observability::metrics::{ContainerLabels, Metrics};
use crate::observability::status::{CaptureState, ContainerStatus, StatusBoard};
use crate::pipeline::{ContainerMeta, Delivery, QueueBudget};
use crate::processing::{Pipelines, Processor};

mod batch;
mod session;

pub use batch::compact;
pub(super) use batch::drain_decoder;

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

pub(super) enum SessionEnd {
    Rotate,
    Cancelled,
    /// Clean end of the source; `lines` is how many new lines the session emitted, `unfinished`
    /// whether a line was still open (some pieces read, not its end).
    Eof {
        lines: u64,
        unfinished: bool,
    },
    Error(CaptureError),
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
            ContainerStatus::detached(&self.id, self.meta.clone(), self.cursor.clone())
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
            let since = self.cursor.get().since_ns();
            let opened = tokio::select! {
                _ = self.cancel.cancelled() => return CaptureExit::Cancelled,
                r = ctx.client.logs(&self.id, since) => r,
            };
            let stream = match opened {
                Ok(stream) => stream,
                Err(e) => match e.status() {
                    Some(501) => {
                        ctx.metrics
                            .stream_error(StreamErrorReason::UnreadableLogDriver);
                        warn!(container = %self.name(), error = %e,
                            "log driver cannot be read; not retrying until the container starts again");
                        return CaptureExit::Unreadable;
                    }
                    Some(404) | Some(409) if !ever_opened => {
                        ctx.metrics.stream_error(StreamErrorReason::GoneBeforeRead);
                        warn!(container = %self.name(), container_id = %self.id, error = %e,
                            "container was gone (removed or being removed) before its logs could be read; its output is lost");
                        return CaptureExit::Gone;
                    }
                    Some(404) | Some(409) => {
                        debug!(container = %self.name(), error = %e, "container gone");
                        return self.gone();
                    }
                    _ => {
                        ctx.metrics.stream_error(StreamErrorReason::of_open(&e));
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
                // The Engine API source never asks for a reopen; were it to, it would be
                // reopened after the back-off like a failure, but not counted as one.
                SessionEnd::Error(error) => {
                    let reason = match &error {
                        CaptureError::Failed { reason, .. } => {
                            ctx.metrics.stream_error(*reason);
                            reason.as_label()
                        }
                        CaptureError::Reopen(_) => "reopen",
                    };
                    let message = error.to_string();
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
        self.cursor.get().delivered_nothing()
    }

    /// The container is gone after its stream was opened. If not a line of it was ever
    /// delivered, its stream gave nothing before it was removed (an instant `--rm`: the daemon
    /// may answer 200 with an empty body while it deletes the log file): counted and named like
    /// a container gone before its stream could be opened. A container that printed nothing
    /// and was removed at once is counted too; the two cannot be told apart.
    pub(super) fn gone(&self) -> CaptureExit {
        if self.delivered_nothing() {
            self.ctx
                .metrics
                .stream_error(StreamErrorReason::GoneBeforeRead);
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
}
