//! The sink writer: takes batches off the queue, writes them to every sink, flushes, and then
//! acknowledges each batch's cursor to the checkpoint store. It runs on a blocking thread
//! because sink I/O (stdout, files) is blocking; it ends when the queue closes and is drained.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::Batch;
use crate::backoff::{Backoff, sleep_or_cancel};
use crate::checkpoint::CheckpointStore;
use crate::observability::metrics::{Metrics, SinkLabels};
use crate::sinks::Sink;

pub struct WriterSettings {
    pub flush_interval: Duration,
    /// Flush early once this many message bytes are waiting (bounds sink buffers).
    pub flush_bytes: usize,
}

pub struct SinkWriter {
    pub sinks: Vec<Box<dyn Sink>>,
    pub queue: mpsc::Receiver<Batch>,
    pub checkpoints: Arc<CheckpointStore>,
    pub metrics: Arc<Metrics>,
    pub settings: WriterSettings,
    /// Cancelled at shutdown: a sink that keeps failing is then given up on (its batches stay
    /// unacknowledged, so they are read again after the restart).
    pub shutdown: CancellationToken,
}

impl SinkWriter {
    /// Runs until the queue is closed and drained. Call from a blocking thread.
    pub fn run_blocking(mut self, runtime: Handle) {
        let mut written: Vec<Batch> = Vec::new();
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
                runtime.block_on(async { tokio::time::timeout(wait, self.queue.recv()).await });
            match next {
                Ok(Some(batch)) => {
                    self.metrics.queue_batches.dec();
                    if written.is_empty() {
                        oldest = Instant::now();
                    }
                    if !self.write_to_all(&batch, &runtime) {
                        return; // shutdown while a sink failed: acknowledge nothing more
                    }
                    written_bytes += batch.bytes();
                    written.push(batch);
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

    fn write_to_all(&mut self, batch: &Batch, runtime: &Handle) -> bool {
        (0..self.sinks.len()).all(|i| self.retry(i, runtime, |sink| sink.write_batch(batch)))
    }

    /// Flushes every sink (with nothing written this still lets sinks close idle files), then
    /// acknowledges the cursors of all written batches.
    fn flush_and_ack(&mut self, written: &mut Vec<Batch>, runtime: &Handle) -> bool {
        for i in 0..self.sinks.len() {
            if !self.retry(i, runtime, |sink| sink.flush()) {
                return false;
            }
        }
        if written.is_empty() {
            return true;
        }
        let lines: usize = written.iter().map(|b| b.lines.len()).sum();
        for sink in &self.sinks {
            self.metrics
                .sink_lines
                .get_or_create(&SinkLabels { sink: sink.name() })
                .inc_by(lines as u64);
        }
        for batch in written.iter() {
            self.checkpoints.ack(&batch.container.id, batch.cursor);
        }
        written.clear();
        true
    }

    /// Runs `op` on one sink until it succeeds, with back-off; capture pauses meanwhile (the
    /// queue fills). Returns false when shutdown interrupts the retries.
    fn retry(
        &mut self,
        index: usize,
        runtime: &Handle,
        mut op: impl FnMut(&mut dyn Sink) -> io::Result<()>,
    ) -> bool {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let sink = self.sinks[index].as_mut();
            let err = match op(sink) {
                Ok(()) => return true,
                Err(e) => e,
            };
            let name = sink.name();
            self.metrics
                .sink_errors
                .get_or_create(&SinkLabels { sink: name })
                .inc();
            if self.shutdown.is_cancelled() {
                error!(sink = name, error = %err,
                    "sink failed during shutdown; unacknowledged lines will be read again after restart");
                return false;
            }
            let delay = backoff.next_delay();
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
