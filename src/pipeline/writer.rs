//! The worker of a local sink (stdout, file): takes deliveries, writes them, flushes, makes
//! them durable as the sink's [`Durability`] asks, and only then acknowledges them. It runs on
//! a blocking thread because that I/O is blocking; it ends when its input closes and is
//! drained.
//!
//! - **Durable point**: flush everything → fsync (unless `Durability::Never`) → acknowledge
//!   every written delivery → `Sink::commit`. Nothing is written between these steps, so what
//!   is committed is exactly what is acknowledged. With `Durability::Interval`, flushes in
//!   between only hand bytes to the OS; their deliveries wait for the next durable point.
//! - **Sink errors** (disk full, I/O errors) are retried with back-off, in order; capture pauses
//!   meanwhile (the budget fills). Before retrying a refused batch, what was already written
//!   is committed: that lets the sink close files (e.g. at its file-descriptor limit).
//! - **Container errors** (one container's output cannot be written: permission, name): that
//!   container is *held*. Its lines are released without being written or acknowledged, its
//!   position is frozen in the ledger for this run (so they are read again after a restart),
//!   and every other container goes on. Its output is tried again every `held_retry`; when
//!   that works, writing resumes, but the position stays frozen until the restart, which
//!   writes the held lines and writes the lines since the recovery a second time.
//! - **Giving up** (shutdown while the sink fails): nothing more is acknowledged, and the sink
//!   is told to `abandon`, which removes what was written after the last commit.
//! - **Output closed for good** ([`Sink::is_closed_for_good`]: stdout whose reader exited,
//!   `EPIPE`): retrying cannot help, so the worker gives up at once in the same way and returns
//!   [`OutputClosed`]; the agent then stops (exit code 3). What was acknowledged before stays
//!   checkpointed; nothing written after the error is acknowledged, so it is read again at the
//!   next start.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::Delivery;
use super::ledger::AckLedger;
use crate::backoff::{Backoff, sleep_or_cancel};
use crate::observability::metrics::{Metrics, SinkLabels, SinkReasonLabels};
use crate::observability::reasons::LocalSinkFailureReason;
use crate::observability::status::SinkStatus;
use crate::sinks::{Durability, Sink, WriteError};

/// How long a held container's output rests before it is tried again (the default of
/// [`WriterSettings::held_retry`]).
pub const HELD_RETRY: Duration = Duration::from_secs(30);

pub struct WriterSettings {
    pub flush_interval: Duration,
    /// Flush early once this many message bytes are waiting (bounds sink buffers).
    pub flush_bytes: usize,
    /// With `Durability::Interval`: reach a durable point early once this many message bytes
    /// wait for one, so that waiting for the interval never fills the queue's budget.
    pub sync_bytes: usize,
    /// How long a held container's output rests before it is tried again.
    pub held_retry: Duration,
}

pub struct LocalSinkWorker {
    pub sink: Box<dyn Sink>,
    pub input: mpsc::UnboundedReceiver<Arc<Delivery>>,
    pub ledger: Arc<AckLedger>,
    pub metrics: Arc<Metrics>,
    pub settings: WriterSettings,
    /// Cancelled at shutdown: a sink that keeps failing is then given up on (its batches stay
    /// unacknowledged, so they are read again after the restart).
    pub shutdown: CancellationToken,
    /// This sink's entry on the status board (`GET /api/v1/sinks`).
    pub status: Arc<SinkStatus>,
}

/// The error kind a local sink reports to the status board.
const WRITE_FAILURE: &str = "write";

/// Why the worker stopped writing before its input was drained.
enum GaveUp {
    /// Shutdown came while the sink was failing.
    Shutdown,
    /// The sink's output is gone for good.
    Closed(io::Error),
}

/// The worker stopped because its sink's output is closed for good (see the module doc).
#[derive(Debug)]
pub struct OutputClosed {
    pub sink: &'static str,
    pub error: io::Error,
}

impl fmt::Display for OutputClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sink {} stopped: its output is closed ({}); what it had not written is read again at the next start",
            self.sink, self.error
        )
    }
}

/// Deliveries written but not yet acknowledged.
#[derive(Default)]
struct Pending {
    /// Buffered in the sink since the last flush.
    written: Vec<Arc<Delivery>>,
    written_bytes: usize,
    /// When the first of `written` arrived.
    oldest: Option<Instant>,
    /// Flushed to the OS, waiting for a durable point (`Durability::Interval`).
    flushed: Vec<Arc<Delivery>>,
    flushed_bytes: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.written.is_empty() && self.flushed.is_empty()
    }
}

/// The writer's state besides the sink.
struct Run {
    pending: Pending,
    last_durable: Instant,
    /// Held containers (by id) → when their output is tried again.
    held: HashMap<String, Instant>,
}

impl LocalSinkWorker {
    /// Runs until the input is closed and drained, or until the sink's output is closed for
    /// good (then the caller must stop the agent). Call from a blocking thread.
    pub fn run_blocking(mut self, runtime: Handle) -> Result<(), OutputClosed> {
        self.metrics.init_sink(self.sink.name(), false);
        let mut run = Run {
            pending: Pending::default(),
            last_durable: Instant::now(),
            held: HashMap::new(),
        };
        let mut closed = None;
        if let Err(gave_up) = self.run_until_closed(&runtime, &mut run) {
            // Nothing more is acknowledged; what was written since the last commit goes.
            self.sink.abandon();
            if let GaveUp::Closed(error) = gave_up {
                let sink = self.sink.name();
                error!(sink, %error,
                    "output closed for good (for stdout: the reader of the pipe exited); stopping the \
                     agent. Checkpoints stay at what was written before; the rest is read again at the \
                     next start");
                closed = Some(OutputClosed { sink, error });
            }
        }
        self.report_held(&run);
        match closed {
            Some(closed) => Err(closed),
            None => Ok(()),
        }
    }

    fn report_held(&self, run: &Run) {
        if !run.held.is_empty() {
            warn!(
                sink = self.sink.name(),
                containers = run.held.len(),
                "stopping with containers held; their lines are read again after the restart"
            );
        }
    }

    fn run_until_closed(&mut self, runtime: &Handle, run: &mut Run) -> Result<(), GaveUp> {
        loop {
            let wait = self
                .next_deadline(run)
                .saturating_duration_since(Instant::now());
            let next =
                runtime.block_on(async { tokio::time::timeout(wait, self.input.recv()).await });
            match next {
                Ok(Some(first)) => {
                    // Take everything already queued without going back to sleep: one thread
                    // wake-up per burst, not per batch.
                    let mut next = Some(first);
                    while let Some(delivery) = next {
                        self.take(delivery, runtime, run)?;
                        if run.pending.written_bytes >= self.settings.flush_bytes {
                            break;
                        }
                        next = self.input.try_recv().ok();
                    }
                    self.on_timers(runtime, run)?;
                }
                Ok(None) => return self.durable_point(runtime, run),
                Err(_elapsed) => self.on_timers(runtime, run)?,
            }
        }
    }

    /// When the loop must wake up next even without input.
    fn next_deadline(&self, run: &Run) -> Instant {
        let now = Instant::now();
        let mut at = now + self.settings.flush_interval;
        if let Some(oldest) = run.pending.oldest {
            at = at.min(oldest + self.settings.flush_interval);
        }
        if let Durability::Interval(every) = self.sink.durability()
            && !run.pending.flushed.is_empty()
        {
            at = at.min(run.last_durable + every);
        }
        at
    }

    /// Flushes and reaches durable points as they fall due.
    fn on_timers(&mut self, runtime: &Handle, run: &mut Run) -> Result<(), GaveUp> {
        let p = &run.pending;
        let flush_due = p
            .oldest
            .is_some_and(|t| t.elapsed() >= self.settings.flush_interval)
            || p.written_bytes >= self.settings.flush_bytes;
        match self.sink.durability() {
            Durability::Never | Durability::Always => {
                if flush_due || p.is_empty() {
                    // With nothing written this still lets the sink close idle files.
                    self.durable_point(runtime, run)?;
                }
            }
            Durability::Interval(every) => {
                let waiting = p.written_bytes + p.flushed_bytes;
                let sync_due = !p.is_empty()
                    && (run.last_durable.elapsed() >= every || waiting >= self.settings.sync_bytes);
                if sync_due || p.is_empty() {
                    self.durable_point(runtime, run)?;
                } else if flush_due {
                    self.retry(runtime, |sink| sink.flush())?;
                    let p = &mut run.pending;
                    p.flushed_bytes += std::mem::take(&mut p.written_bytes);
                    p.flushed.append(&mut p.written);
                    p.oldest = None;
                }
            }
        }
        Ok(())
    }

    /// Writes one delivery (or handles a marker, or releases a held container's batch).
    fn take(
        &mut self,
        delivery: Arc<Delivery>,
        runtime: &Handle,
        run: &mut Run,
    ) -> Result<(), GaveUp> {
        if delivery.end_of_stream {
            self.sink.end_of_stream(&delivery.batch.container);
            return Ok(());
        }
        let id = &delivery.batch.container.id;
        self.status.received(delivery.charged_bytes());
        if !run.held.is_empty()
            && run
                .held
                .get(id)
                .is_some_and(|&retry_at| Instant::now() < retry_at)
        {
            // Released unwritten and unacknowledged; read again after restart.
            self.status.finished(delivery.charged_bytes());
            return Ok(());
        }
        let mut attempts = Attempts::new();
        loop {
            match self.sink.write_batch(&delivery.batch) {
                Ok(()) => {
                    attempts.succeeded(self.sink.name(), &self.status);
                    if run.held.remove(id).is_some() {
                        self.held_gauge(run);
                        info!(sink = self.sink.name(), container = %delivery.batch.container.name,
                            "container output works again; writing resumes. Its checkpoint stays \
                             frozen until the restart, which writes the held lines (and these again)");
                    }
                    let p = &mut run.pending;
                    p.oldest.get_or_insert_with(Instant::now);
                    p.written_bytes += delivery.batch.bytes();
                    p.written.push(delivery);
                    return Ok(());
                }
                Err(WriteError::Container(e)) => {
                    self.hold(&delivery, e, run);
                    self.status.finished(delivery.charged_bytes());
                    return Ok(());
                }
                Err(WriteError::Sink(e)) => {
                    if !run.pending.is_empty() {
                        // Commit what is written first (frees files to close), then retry.
                        self.durable_point(runtime, run)?;
                        continue;
                    }
                    self.failed(e, &mut attempts, runtime)?;
                }
            }
        }
    }

    /// One container's output cannot be written: hold it (see the module comment).
    fn hold(&mut self, delivery: &Delivery, err: io::Error, run: &mut Run) {
        let name = self.sink.name();
        let meta = &delivery.batch.container;
        self.ledger.hold(&meta.id, delivery.seq);
        self.metrics
            .sink_failures
            .get_or_create(&SinkReasonLabels {
                sink: name,
                reason: LocalSinkFailureReason::Permanent.as_label(),
            })
            .inc();
        let retry_at = Instant::now() + self.settings.held_retry;
        if run.held.insert(meta.id.clone(), retry_at).is_none() {
            self.held_gauge(run);
            warn!(sink = name, container = %meta.name, container_id = %meta.id, error = %err,
                retry_every = ?self.settings.held_retry,
                "cannot write this container's output; its lines are held (not written, checkpoint \
                 frozen, read again after restart) while the other containers go on");
        } else {
            debug!(sink = name, container = %meta.name, error = %err, "held container still fails");
        }
    }

    fn held_gauge(&self, run: &Run) {
        self.metrics
            .sink_containers_held
            .get_or_create(&SinkLabels {
                sink: self.sink.name(),
            })
            .set(run.held.len() as i64);
    }

    /// Flush → fsync (per the sink's durability) → acknowledge every written delivery →
    /// commit. With nothing written this still lets the sink close idle files.
    fn durable_point(&mut self, runtime: &Handle, run: &mut Run) -> Result<(), GaveUp> {
        let started = Instant::now();
        self.retry(runtime, |sink| sink.flush())?;
        let p = &mut run.pending;
        if !p.is_empty() && self.sink.durability() != Durability::Never {
            self.retry(runtime, |sink| sink.sync())?;
        }
        let p = &mut run.pending;
        let mut done = std::mem::take(&mut p.flushed);
        done.append(&mut p.written);
        *p = Pending::default();
        run.last_durable = Instant::now();
        if !done.is_empty() {
            let labels = SinkLabels {
                sink: self.sink.name(),
            };
            let lines: usize = done.iter().map(|d| d.batch.lines.len()).sum();
            self.metrics
                .sink_lines
                .get_or_create(&labels)
                .inc_by(lines as u64);
            self.metrics.sink_batches.get_or_create(&labels).inc();
            self.metrics
                .sink_latency
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
            for d in done {
                self.ledger.acknowledge(&d.batch.container.id, d.seq);
                self.status.finished(d.charged_bytes());
            }
        }
        self.sink.commit();
        Ok(())
    }

    /// Runs `op` until it succeeds, with back-off; capture pauses meanwhile (the budget fills).
    fn retry(
        &mut self,
        runtime: &Handle,
        mut op: impl FnMut(&mut dyn Sink) -> io::Result<()>,
    ) -> Result<(), GaveUp> {
        let mut attempts = Attempts::new();
        loop {
            match op(self.sink.as_mut()) {
                Ok(()) => {
                    attempts.succeeded(self.sink.name(), &self.status);
                    return Ok(());
                }
                Err(e) => self.failed(e, &mut attempts, runtime)?,
            }
        }
    }

    /// Counts a sink error and waits before the next attempt; `GaveUp` at shutdown, or at once
    /// when the output is closed for good.
    fn failed(
        &mut self,
        err: io::Error,
        attempts: &mut Attempts,
        runtime: &Handle,
    ) -> Result<(), GaveUp> {
        let name = self.sink.name();
        attempts.failures += 1;
        attempts.since.get_or_insert_with(Instant::now);
        let closed = self.sink.is_closed_for_good(&err);
        self.status.failed(WRITE_FAILURE, &err.to_string());
        self.metrics
            .sink_errors
            .get_or_create(&SinkLabels { sink: name })
            .inc();
        self.metrics
            .sink_failures
            .get_or_create(&SinkReasonLabels {
                sink: name,
                reason: if closed {
                    LocalSinkFailureReason::Closed
                } else {
                    LocalSinkFailureReason::Io
                }
                .as_label(),
            })
            .inc();
        if closed {
            return Err(GaveUp::Closed(err));
        }
        if self.shutdown.is_cancelled() {
            error!(sink = name, error = %err,
                "sink failed during shutdown; unacknowledged lines will be read again after restart");
            return Err(GaveUp::Shutdown);
        }
        let delay = attempts.backoff.next_delay();
        self.metrics
            .sink_retries
            .get_or_create(&SinkLabels { sink: name })
            .inc();
        warn!(sink = name, error = %err, retry_in = ?delay, "sink failed; capture pauses until it recovers");
        if !runtime.block_on(sleep_or_cancel(delay, &self.shutdown)) {
            error!(
                sink = name,
                "shutdown while the sink was failing; unacknowledged lines will be read again after restart"
            );
            return Err(GaveUp::Shutdown);
        }
        Ok(())
    }
}

/// Retries of one operation: the back-off, and the failures since the first, so that the
/// operator sees when a failing sink (a full disk) works again.
struct Attempts {
    backoff: Backoff,
    failures: u64,
    since: Option<Instant>,
}

impl Attempts {
    fn new() -> Attempts {
        Attempts {
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            failures: 0,
            since: None,
        }
    }

    fn succeeded(&self, sink: &'static str, status: &SinkStatus) {
        if let Some(since) = self.since {
            status.recovered(WRITE_FAILURE);
            info!(sink, failures = self.failures, after = ?since.elapsed(),
                "sink works again; capture resumes");
        }
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
