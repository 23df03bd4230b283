//! The worker of a local sink (stdout, file): takes deliveries, writes them, flushes, and then
//! acknowledges them. It runs on a blocking thread because that I/O is blocking; it ends when
//! its input closes and is drained.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::Delivery;
use super::ledger::AckLedger;
use crate::backoff::{Backoff, sleep_or_cancel};
use crate::observability::metrics::{Metrics, SinkLabels, SinkReasonLabels};
use crate::sinks::Sink;

pub struct WriterSettings {
    pub flush_interval: Duration,
    /// Flush early once this many message bytes are waiting (bounds sink buffers).
    pub flush_bytes: usize,
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
}

impl LocalSinkWorker {
    /// Runs until the input is closed and drained. Call from a blocking thread.
    pub fn run_blocking(mut self, runtime: Handle) {
        let mut written: Vec<Arc<Delivery>> = Vec::new();
        let mut written_bytes = 0usize;
        let mut oldest = Instant::now();
        loop {
            let wait = if written.is_empty() {
                self.settings.flush_interval
            } else {
                self.settings
                    .flush_interval
                    .saturating_sub(oldest.elapsed())
            };
            let next =
                runtime.block_on(async { tokio::time::timeout(wait, self.input.recv()).await });
            match next {
                Ok(Some(first)) => {
                    if written.is_empty() {
                        oldest = Instant::now();
                    }
                    // Take everything already queued without going back to sleep: one thread
                    // wake-up per burst, not per batch.
                    let mut next = Some(first);
                    while let Some(delivery) = next {
                        if !self.retry(&runtime, |sink| sink.write_batch(&delivery.batch)) {
                            return; // shutdown while the sink failed: acknowledge nothing more
                        }
                        written_bytes += delivery.batch.bytes();
                        written.push(delivery);
                        if written_bytes >= self.settings.flush_bytes {
                            break;
                        }
                        next = self.input.try_recv().ok();
                    }
                    if written_bytes >= self.settings.flush_bytes
                        || oldest.elapsed() >= self.settings.flush_interval
                    {
                        if !self.flush_and_ack(&mut written, &runtime) {
                            return;
                        }
                        written_bytes = 0;
                    }
                }
                Ok(None) => {
                    self.flush_and_ack(&mut written, &runtime);
                    return;
                }
                Err(_elapsed) => {
                    if !self.flush_and_ack(&mut written, &runtime) {
                        return;
                    }
                    written_bytes = 0;
                }
            }
        }
    }

    /// Flushes (with nothing written this still lets the sink close idle files), then
    /// acknowledges every written delivery.
    fn flush_and_ack(&mut self, written: &mut Vec<Arc<Delivery>>, runtime: &Handle) -> bool {
        let started = Instant::now();
        if !self.retry(runtime, |sink| sink.flush()) {
            return false;
        }
        if written.is_empty() {
            return true;
        }
        let labels = SinkLabels {
            sink: self.sink.name(),
        };
        let lines: usize = written.iter().map(|d| d.batch.lines.len()).sum();
        self.metrics
            .sink_lines
            .get_or_create(&labels)
            .inc_by(lines as u64);
        self.metrics.sink_batches.get_or_create(&labels).inc();
        self.metrics
            .sink_latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        for d in written.drain(..) {
            self.ledger.complete(&d.batch.container.id, d.seq);
        }
        true
    }

    /// Runs `op` until it succeeds, with back-off; capture pauses meanwhile (the budget fills).
    /// Returns false when shutdown interrupts the retries.
    fn retry(
        &mut self,
        runtime: &Handle,
        mut op: impl FnMut(&mut dyn Sink) -> io::Result<()>,
    ) -> bool {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let err = match op(self.sink.as_mut()) {
                Ok(()) => return true,
                Err(e) => e,
            };
            let name = self.sink.name();
            self.metrics
                .sink_errors
                .get_or_create(&SinkLabels { sink: name })
                .inc();
            self.metrics
                .sink_failures
                .get_or_create(&SinkReasonLabels {
                    sink: name,
                    reason: "io",
                })
                .inc();
            if self.shutdown.is_cancelled() {
                error!(sink = name, error = %err,
                    "sink failed during shutdown; unacknowledged lines will be read again after restart");
                return false;
            }
            let delay = backoff.next_delay();
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
                return false;
            }
        }
    }
}
