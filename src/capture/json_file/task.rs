//! A capture task in json-file mode: opens the container's log chain at its cursor and runs
//! the shared session over it; reopens from the cursor after an error; ends when the container
//! has stopped and its log is read to the end. A log file the agent may not read, or one that
//! is not there (after `MISSING_FALLBACK` while the container runs, or once it has stopped),
//! makes the task read the container through the Engine API instead.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, warn};

use super::JsonFileTarget;
use super::reader::ChainReader;
use super::source::JsonFileSource;
use crate::backoff::{Backoff, sleep_or_cancel};
use crate::capture::source::Source;
use crate::capture::task::SessionEnd;
use crate::capture::{CaptureError, CaptureExit, CaptureTask};
use crate::clock::now_ns;
use crate::observability::reasons::JsonFileFallbackReason;
use crate::observability::reasons::StreamErrorReason;
use crate::observability::status::ContainerStatus;

/// A file has no follow stream to rotate: the session's rotation deadline is never reached.
const NO_ROTATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// How often a log file that does not exist yet is looked for (Docker creates it at start).
const NOT_YET: Duration = Duration::from_millis(50);
/// How long a running container's log file may be missing before it is read through the
/// Engine API instead (said and counted as `log_file_missing`).
const MISSING_FALLBACK: Duration = Duration::from_secs(10);
/// How often the daemon is asked whether a container whose log file is missing still runs
/// (in case its `die` is not seen).
const MISSING_INSPECT: Duration = Duration::from_secs(1);

/// Keeps `log_capturer_json_file_containers` true to the sessions open.
struct Reading<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> Reading<'a> {
    fn open(g: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        Reading(g)
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl CaptureTask {
    pub(in crate::capture) async fn run_json_file(
        mut self,
        target: JsonFileTarget,
        status: &ContainerStatus,
    ) -> CaptureExit {
        let ctx = Arc::clone(&self.ctx);
        // `preopened` (the descriptor opened at the container's start) is kept until the task
        // ends: every open gets a clone of it, so a retry after an error can still read an
        // `--rm` container that is gone by then.
        let JsonFileTarget {
            files,
            mut preopened,
            stopped,
            trim_cr,
        } = target;
        let mut backoff = Backoff::new(ctx.backoff_initial, ctx.backoff_max);
        // Since when the log file has been missing while the container runs, and when the
        // daemon was last asked whether it still runs.
        let mut missing_since: Option<Instant> = None;
        let mut missing_inspected = Instant::now();
        let mut stopped_found = false;
        loop {
            if self.cancel.is_cancelled() {
                return CaptureExit::Cancelled;
            }
            let since = self.cursor.get().since_ns();
            let chain = files.clone();
            let pre = preopened.as_ref().and_then(|f| match f.try_clone() {
                Ok(f) => Some(f),
                Err(e) => {
                    warn!(container = %self.name(), error = %e,
                        "cannot duplicate the log descriptor opened at start; opening by path");
                    None
                }
            });
            let opened = tokio::select! {
                _ = self.cancel.cancelled() => return CaptureExit::Cancelled,
                r = tokio::task::spawn_blocking(move || {
                    // Once Docker has replaced the file opened at start (a rotation), that
                    // descriptor can serve nothing a reopen needs: let its space go.
                    let replaced = pre.as_ref().is_some_and(|f| rotated_away(f, &chain.current()));
                    let pre = if replaced { None } else { pre };
                    ChainReader::open(chain, since, pre).map(|r| (r, replaced))
                }) => r,
            };
            let opened = opened.unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
            let reader = match opened {
                Ok((reader, replaced)) => {
                    if replaced {
                        preopened = None;
                    }
                    reader
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Docker creates the file when the container starts. Still missing after
                    // a while, or at the container's stop, it is elsewhere (or gone with the
                    // container): the Engine API serves what the daemon still has (a removed
                    // container: nothing, and the task ends as gone).
                    let since = *missing_since.get_or_insert_with(Instant::now);
                    let stopped_now = stopped_found || *stopped.borrow();
                    if stopped_now {
                        // Removed (an `--rm` container gone before its file was opened): there
                        // is nothing to read anywhere.
                        let inspected = tokio::select! {
                            _ = self.cancel.cancelled() => return CaptureExit::Cancelled,
                            r = ctx.client.inspect(&self.id) => r,
                        };
                        if let Err(e) = &inspected
                            && e.status() == Some(404)
                        {
                            return self.gone();
                        }
                    }
                    if stopped_now || since.elapsed() >= MISSING_FALLBACK {
                        ctx.metrics
                            .json_file
                            .fallback(JsonFileFallbackReason::LogFileMissing);
                        warn!(container = %self.name(), file = %files.current().display(), error = %e,
                            stopped = stopped_now,
                            "the container's json-file log is not there (is docker.containers_dir right?); reading it through the Engine API instead");
                        status.error(&format!("json-file log not found: {e}"));
                        return self.run_with_status(status).await;
                    }
                    if missing_inspected.elapsed() >= MISSING_INSPECT {
                        missing_inspected = Instant::now();
                        let inspected = tokio::select! {
                            _ = self.cancel.cancelled() => return CaptureExit::Cancelled,
                            r = ctx.client.inspect(&self.id) => r,
                        };
                        match inspected {
                            Ok(c) => stopped_found = !c.state.running,
                            Err(e) if e.status() == Some(404) => stopped_found = true,
                            Err(e) => {
                                ctx.metrics.stream_error(StreamErrorReason::Inspect);
                                debug!(container = %self.name(), error = %e, "cannot inspect container");
                            }
                        }
                    }
                    if !sleep_or_cancel(NOT_YET, &self.cancel).await {
                        return CaptureExit::Cancelled;
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    ctx.metrics
                        .json_file
                        .fallback(JsonFileFallbackReason::LogFileUnreadable);
                    error!(container = %self.name(), file = %files.current().display(), error = %e,
                        "cannot read the container's json-file log (mount Docker's containers directory read-only into the agent, e.g. /var/lib/docker/containers, or set docker.containers_dir); reading it through the Engine API instead");
                    return self.run_with_status(status).await;
                }
                Err(e) => {
                    ctx.metrics.stream_error(StreamErrorReason::OpenFailed);
                    status.error(&format!("cannot open json-file log: {e}"));
                    let delay = backoff.next_delay();
                    warn!(container = %self.name(), file = %files.current().display(), error = %e,
                        retry_in = ?delay, "cannot open json-file log");
                    if !sleep_or_cancel(delay, &self.cancel).await {
                        return CaptureExit::Cancelled;
                    }
                    continue;
                }
            };
            debug!(container = %self.name(), file = %reader.path().display(),
                since = %crate::capture::since_text(since), since_ns = since, "json-file log opened");
            let source = JsonFileSource::new(
                reader,
                self.tty,
                stopped.clone(),
                ctx.client.clone(),
                self.id.clone(),
                self.name(),
                Arc::clone(&ctx.metrics),
                ctx.max_line_bytes,
            )
            .trim_cr(trim_cr);
            missing_since = None;
            let reading = Reading::open(&ctx.metrics.json_file.containers);
            let cursor_before = self.cursor.get();
            status.stream_opened(now_ns());
            let end = self
                .session(
                    Source::JsonFile(Box::new(source)),
                    Instant::now(),
                    NO_ROTATION,
                    true,
                    status,
                )
                .await;
            drop(reading);
            status.stream_closed(false, now_ns());
            // The session ends only by an error (or the end): lines delivered mean the error
            // is not a repeating one, so the next one waits from the start of the back-off
            // again (a back-off grown over hours would let rotated files be deleted unread).
            if self.cursor.get() != cursor_before {
                backoff.reset();
            }
            match end {
                SessionEnd::Cancelled => return CaptureExit::Cancelled,
                SessionEnd::Eof { .. } => {
                    debug!(container = %self.name(), "container stopped; its json-file log is read to the end");
                    return CaptureExit::Stopped;
                }
                SessionEnd::Rotate => backoff.reset(),
                // The file's place in the rotation is ambiguous: reopened from the cursor at
                // once (nothing failed).
                SessionEnd::Error(CaptureError::Reopen(message)) => {
                    ctx.metrics.json_file.reopens.inc();
                    debug!(container = %self.name(), reason = %message, "reopening the json-file log from the cursor");
                }
                SessionEnd::Error(CaptureError::Failed {
                    reason,
                    text: message,
                }) => {
                    ctx.metrics.stream_error(reason);
                    status.error(&format!("{reason}: {message}"));
                    let delay = backoff.next_delay();
                    warn!(container = %self.name(), error = %message, retry_in = ?delay,
                        "reading the json-file log failed; reopening from cursor");
                    if !sleep_or_cancel(delay, &self.cancel).await {
                        return CaptureExit::Cancelled;
                    }
                }
            }
        }
    }
}

/// Whether `path` now names another file than `file` (Docker rotated it away).
fn rotated_away(file: &std::fs::File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev() || a.ino() != b.ino(),
        _ => false,
    }
}
