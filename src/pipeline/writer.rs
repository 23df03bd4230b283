//! The sink writer: takes batches off the queue, writes them to every sink, flushes, and then
//! acknowledges each batch's cursor to the checkpoint store. It runs on a blocking thread
//! because sink I/O (stdout, files) is blocking; it ends when the queue closes and is drained.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::Batch;
use crate::backoff::Backoff;
use crate::checkpoint::CheckpointStore;
use crate::observability::metrics::{Metrics, SinkLabels};
use crate::sinks::Sink;

pub struct WriterSettings {
    pub flush_interval: Duration,
    /// Flush early once this many message bytes are waiting.
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
    pub fn run_blocking(mut self, runtime: tokio::runtime::Handle) {
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
                    self.write_to_all(&batch, &written);
                    written_bytes += batch.bytes();
                    written.push(batch);
                    if written_bytes >= self.settings.flush_bytes
                        || oldest.elapsed() >= self.settings.flush_interval
                    {
                        self.flush_and_ack(&mut written);
                        written_bytes = 0;
                    }
                }
                Ok(None) => {
                    self.flush_and_ack(&mut written);
                    return;
                }
                Err(_elapsed) => {
                    self.flush_and_ack(&mut written);
                    written_bytes = 0;
                }
            }
        }
    }

    fn write_to_all(&mut self, batch: &Batch, earlier: &[Batch]) {
        for i in 0..self.sinks.len() {
            if let Err(e) = self.sinks[i].write_batch(batch) {
                self.recover(i, &e, earlier.iter().chain(std::iter::once(batch)));
            }
        }
    }

    /// Flushes every sink, then acknowledges the cursors of all written batches.
    fn flush_and_ack(&mut self, written: &mut Vec<Batch>) {
        // Flushing with nothing written still lets sinks do housekeeping (closing idle files).
        let mut all_ok = true;
        for i in 0..self.sinks.len() {
            if let Err(e) = self.sinks[i].flush() {
                all_ok &= self.recover(i, &e, written.iter());
            }
            if all_ok && !written.is_empty() {
                let lines: usize = written.iter().map(|b| b.lines.len()).sum();
                self.metrics
                    .sink_lines
                    .get_or_create(&SinkLabels {
                        sink: self.sinks[i].name(),
                    })
                    .inc_by(lines as u64);
            }
        }
        if all_ok {
            for batch in written.iter() {
                self.checkpoints.ack(&batch.container.id, batch.cursor);
            }
        }
        written.clear();
    }

    /// Retries a failed sink with back-off: re-offers every unacknowledged batch, then flushes.
    /// Returns false only when shutdown interrupted it (nothing is acknowledged then).
    fn recover<'a>(
        &mut self,
        sink: usize,
        first: &std::io::Error,
        batches: impl Iterator<Item = &'a Batch> + Clone,
    ) -> bool {
        let name = self.sinks[sink].name();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut last = first.to_string();
        loop {
            self.metrics
                .sink_errors
                .get_or_create(&SinkLabels { sink: name })
                .inc();
            if self.shutdown.is_cancelled() {
                error!(sink = name, error = %last,
                    "sink failed during shutdown; its unwritten lines will be read again after restart");
                return false;
            }
            let delay = backoff.next_delay();
            warn!(sink = name, error = %last, retry_in = ?delay, "sink write failed; capture pauses until it recovers");
            std::thread::sleep(delay);
            let attempt = batches
                .clone()
                .try_for_each(|b| self.sinks[sink].write_batch(b))
                .and_then(|()| self.sinks[sink].flush());
            match attempt {
                Ok(()) => return true,
                Err(e) => last = e.to_string(),
            }
        }
    }
}
