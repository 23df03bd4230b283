//! A capture task in json-file mode: opens the container's log chain at its cursor and runs
//! the shared session over it; reopens from the cursor after an error; ends when the container
//! has stopped and its log is read to the end. A log file the agent may not read makes the
//! task read the container through the Engine API instead.

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
use crate::capture::{CaptureExit, CaptureTask, read_cursor};
use crate::checkpoint::now_ns;
use crate::observability::status::ContainerStatus;

/// A file has no follow stream to rotate: the session's rotation deadline is never reached.
const NO_ROTATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// How often a log file that does not exist yet is looked for (Docker creates it at start).
const NOT_YET: Duration = Duration::from_millis(50);
/// How long a running container's log file may be missing before that is said.
const MISSING_WARN: Duration = Duration::from_secs(10);

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
        let JsonFileTarget {
            files,
            mut preopened,
            stopped,
        } = target;
        let mut backoff = Backoff::new(ctx.backoff_initial, ctx.backoff_max);
        // Since when the log file has been missing while the container runs.
        let mut missing_since: Option<Instant> = None;
        let mut missing_said = false;
        loop {
            if self.cancel.is_cancelled() {
                return CaptureExit::Cancelled;
            }
            let since = read_cursor(&self.cursor).since_ns();
            let (chain, pre) = (files.clone(), preopened.take());
            let opened = tokio::select! {
                _ = self.cancel.cancelled() => return CaptureExit::Cancelled,
                r = tokio::task::spawn_blocking(move || ChainReader::open(chain, since, pre)) => r,
            };
            let opened = opened.unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
            let reader = match opened {
                Ok(reader) => reader,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if *stopped.borrow() {
                        // Stopped (or removed) without a log file we could open.
                        return self.gone();
                    }
                    // Docker creates the file when the container starts; still missing after
                    // a while, it is elsewhere (say so once, and keep looking).
                    let since = *missing_since.get_or_insert_with(Instant::now);
                    if !missing_said && since.elapsed() >= MISSING_WARN {
                        missing_said = true;
                        warn!(container = %self.name(), file = %files.current().display(), error = %e,
                            "the container runs but its json-file log is not there (is docker.containers_dir right?)");
                        status.error(&format!("json-file log not found: {e}"));
                    }
                    if !sleep_or_cancel(NOT_YET, &self.cancel).await {
                        return CaptureExit::Cancelled;
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    ctx.metrics.json_file.fallback("log_file_unreadable");
                    error!(container = %self.name(), file = %files.current().display(), error = %e,
                        "cannot read the container's json-file log (mount Docker's containers directory read-only into the agent, e.g. /var/lib/docker/containers, or set docker.containers_dir); reading it through the Engine API instead");
                    return self.run_with_status(status).await;
                }
                Err(e) => {
                    ctx.metrics.stream_error("open_failed");
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
            );
            let reading = Reading::open(&ctx.metrics.json_file.containers);
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
            match end {
                SessionEnd::Cancelled => return CaptureExit::Cancelled,
                SessionEnd::Eof { .. } => {
                    debug!(container = %self.name(), "container stopped; its json-file log is read to the end");
                    return CaptureExit::Stopped;
                }
                SessionEnd::Rotate => backoff.reset(),
                SessionEnd::Error(reason, message) => {
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
