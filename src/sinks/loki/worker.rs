//! The Loki sink's worker: batches deliveries (max entries, bytes, wait), sends them with
//! retries, spills to the on-disk buffer when Loki has been unreachable for `spill_after` (or at
//! shutdown), replays the buffer in order when Loki answers again, and turns 400/413 answers
//! into dead letters. A delivery is acknowledged when Loki accepted it, when it is durably in
//! the buffer, or when it became a dead letter.
//!
//! Order: while the buffer holds anything, new batches are appended behind it rather than sent,
//! so a stream's entries reach Loki in the order they were captured.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::client::{LokiClient, SendError};
use super::encode::{EncodedBatch, Encoder, Modified};
use super::store::{RecordHeader, SharedStore, decode_record, encode_record};
use crate::backoff::{Backoff, sleep_or_cancel};
use crate::buffer::AppendError;
use crate::config::LokiSinkConfig;
use crate::observability::metrics::{Metrics, SinkLabels, SinkReasonLabels};
use crate::pipeline::{AckLedger, Delivery};

const SINK: &str = "loki";
/// At shutdown a batch gets one attempt this long before it goes to the on-disk buffer.
const SHUTDOWN_SEND_GRACE: Duration = Duration::from_secs(2);

pub struct LokiWorker {
    pub input: mpsc::UnboundedReceiver<Arc<Delivery>>,
    pub ledger: Arc<AckLedger>,
    pub metrics: Arc<Metrics>,
    pub encoder: Encoder,
    pub client: LokiClient,
    pub buffer: SharedStore,
    pub dead_letters: SharedStore,
    pub config: LokiSinkConfig,
    pub shutdown: CancellationToken,
}

enum Replay {
    Empty,
    Progress,
    RetryIn(Duration),
}

impl LokiWorker {
    fn labels() -> SinkLabels {
        SinkLabels { sink: SINK }
    }

    fn update_buffer_gauges(&self) {
        let (records, bytes) = self.buffer.pending();
        self.metrics
            .buffer_records
            .get_or_create(&Self::labels())
            .set(records as i64);
        self.metrics
            .buffer_bytes
            .get_or_create(&Self::labels())
            .set(bytes as i64);
    }

    fn buffered(&self) -> u64 {
        self.buffer.pending().0
    }

    pub async fn run(mut self) {
        let max_wait = self.config.batch.max_wait.0;
        let max_entries = self.config.batch.max_entries;
        let max_bytes = self.config.batch.max_bytes.0 as usize;
        let mut pending: Vec<Arc<Delivery>> = Vec::new();
        let (mut lines, mut bytes) = (0usize, 0usize);
        let mut first_at: Option<tokio::time::Instant> = None;
        let mut replay_at = tokio::time::Instant::now();
        let mut replay_backoff = Backoff::new(self.config.retry.initial.0, self.config.retry.max.0);
        self.update_buffer_gauges();
        loop {
            let flush_at = first_at.map(|t| t + max_wait);
            let buffered = self.buffered() > 0;
            let full = lines >= max_entries || bytes >= max_bytes;
            tokio::select! {
                biased;
                // The buffer goes first: it holds the oldest lines.
                _ = tokio::time::sleep_until(replay_at), if buffered && !self.shutdown.is_cancelled() => {
                    match self.replay_one().await {
                        Replay::Progress => {
                            replay_backoff.reset();
                            replay_at = tokio::time::Instant::now();
                        }
                        Replay::Empty => {}
                        Replay::RetryIn(delay) => {
                            replay_at = tokio::time::Instant::now() + delay.max(replay_backoff.next_delay());
                        }
                    }
                }
                () = async {}, if full => {
                    self.deliver(std::mem::take(&mut pending)).await;
                    (lines, bytes, first_at) = (0, 0, None);
                }
                d = self.input.recv() => match d {
                    Some(d) => {
                        lines += d.batch.lines.len();
                        bytes += d.batch.bytes();
                        first_at.get_or_insert_with(tokio::time::Instant::now);
                        pending.push(d);
                    }
                    None => {
                        if !pending.is_empty() {
                            self.deliver(std::mem::take(&mut pending)).await;
                        }
                        break;
                    }
                },
                _ = tokio::time::sleep_until(flush_at.unwrap_or_else(tokio::time::Instant::now)), if flush_at.is_some() => {
                    self.deliver(std::mem::take(&mut pending)).await;
                    (lines, bytes, first_at) = (0, 0, None);
                }
            }
        }
        self.update_buffer_gauges();
        let (records, _) = self.buffer.pending();
        if records > 0 {
            info!(
                sink = SINK,
                records, "batches left in the on-disk buffer; they are sent after the next start"
            );
        }
    }

    fn complete(&self, items: &[Arc<Delivery>]) {
        for d in items {
            self.ledger.complete(&d.batch.container.id, d.seq);
        }
    }

    fn count_modified(&self, m: Modified) {
        for (reason, n) in [
            ("truncated", m.truncated),
            ("split", m.split),
            ("label_value_cut", m.label_values_cut),
        ] {
            if n > 0 {
                self.metrics
                    .sink_lines_modified
                    .get_or_create(&SinkReasonLabels { sink: SINK, reason })
                    .inc_by(n);
            }
        }
    }

    /// Delivers one batch: send (with retries), or spill to the buffer, or dead-letter it.
    async fn deliver(&mut self, items: Vec<Arc<Delivery>>) {
        if items.is_empty() {
            return;
        }
        let (encoded, modified) = match self.encoder.encode(&items) {
            Ok(x) => x,
            Err(e) => {
                // Encoding only fails on a compression bug; keep the lines unacknowledged.
                error!(sink = SINK, error = %e, "cannot encode batch; its lines will be read again after restart");
                return;
            }
        };
        self.count_modified(modified);
        let started = Instant::now();
        let mut backoff = Backoff::new(self.config.retry.initial.0, self.config.retry.max.0);
        loop {
            // Behind a non-empty buffer a batch queues on disk, to keep the order.
            if self.buffered() == 0 {
                let sent = if self.shutdown.is_cancelled() {
                    // Shutting down: one short attempt, then the buffer keeps it.
                    tokio::time::timeout(
                        SHUTDOWN_SEND_GRACE,
                        self.try_send(&encoded, &items, started),
                    )
                    .await
                    .unwrap_or(Err(None))
                } else {
                    self.try_send(&encoded, &items, started).await
                };
                match sent {
                    Ok(()) => return,
                    Err(retry_after) => {
                        let waited_enough = started.elapsed() >= self.config.buffer.spill_after.0;
                        if !waited_enough && !self.shutdown.is_cancelled() {
                            let delay = retry_after.unwrap_or_default().max(backoff.next_delay());
                            self.metrics
                                .sink_retries
                                .get_or_create(&Self::labels())
                                .inc();
                            sleep_or_cancel(delay, &self.shutdown).await;
                            continue;
                        }
                    }
                }
            }
            if self.spill(&encoded, &items).await {
                return;
            }
            if self.shutdown.is_cancelled() {
                error!(
                    sink = SINK,
                    "shutdown with Loki unreachable and the buffer unusable; these lines will be read again after restart"
                );
                return;
            }
            // Buffer full: keep trying both ways; capture is paused by the queue budget.
            self.metrics
                .sink_retries
                .get_or_create(&Self::labels())
                .inc();
            sleep_or_cancel(backoff.next_delay(), &self.shutdown).await;
        }
    }

    /// One send. Ok when Loki accepted it or it became a dead letter; Err(retry hint) to retry.
    async fn try_send(
        &self,
        batch: &EncodedBatch,
        items: &[Arc<Delivery>],
        first_try: Instant,
    ) -> Result<(), Option<Duration>> {
        let result = self
            .send_once(batch, "Loki push failed; retrying", first_try)
            .await;
        if result.is_ok() {
            self.complete(items);
        }
        result
    }

    /// One push, with its metrics: Ok when Loki accepted the batch or it became a dead letter;
    /// Err(Retry-After hint) when it should be tried again.
    async fn send_once(
        &self,
        batch: &EncodedBatch,
        retry_message: &'static str,
        first_try: Instant,
    ) -> Result<(), Option<Duration>> {
        let sent_at = Instant::now();
        match self.client.send(batch).await {
            Ok(()) => {
                let labels = Self::labels();
                self.metrics.sink_batches.get_or_create(&labels).inc();
                self.metrics
                    .sink_lines
                    .get_or_create(&labels)
                    .inc_by(batch.entries as u64);
                self.metrics
                    .sink_latency
                    .get_or_create(&labels)
                    .observe(sent_at.elapsed().as_secs_f64());
                Ok(())
            }
            Err(SendError::Rejected { status, body }) => {
                self.dead_letter(batch, status, &body).await;
                Ok(())
            }
            Err(SendError::Retryable {
                reason,
                detail,
                retry_after,
            }) => {
                self.metrics
                    .sink_failures
                    .get_or_create(&SinkReasonLabels { sink: SINK, reason })
                    .inc();
                warn!(sink = SINK, reason, error = %detail, failing_for = ?first_try.elapsed(), "{retry_message}");
                Err(retry_after)
            }
        }
    }

    async fn dead_letter(&self, batch: &EncodedBatch, status: u16, body: &str) {
        let reason = format!("{status}: {body}");
        let record = encode_record(
            &RecordHeader::for_batch(batch, Some(reason.clone())),
            &batch.body,
        );
        let label = if status == 413 { "413" } else { "400" };
        self.metrics
            .dead_letters
            .get_or_create(&SinkReasonLabels {
                sink: SINK,
                reason: label,
            })
            .inc();
        match self.dead_letters.append(record).await {
            Ok(id) => {
                warn!(sink = SINK, %id, entries = batch.entries, %reason, "Loki rejected a batch; kept as a dead letter (see `log-capturer dlq list`)")
            }
            Err(e) => error!(sink = SINK, error = %e, entries = batch.entries, %reason,
                "Loki rejected a batch and the dead-letter store could not keep it; the batch is dropped"),
        }
    }

    /// Appends to the on-disk buffer; true when durable (the deliveries are then acknowledged).
    async fn spill(&self, batch: &EncodedBatch, items: &[Arc<Delivery>]) -> bool {
        let record = encode_record(&RecordHeader::for_batch(batch, None), &batch.body);
        let result = self.buffer.append(record).await;
        self.update_buffer_gauges();
        match result {
            Ok(_) => {
                self.complete(items);
                true
            }
            Err(AppendError::Full { used, max }) => {
                self.metrics
                    .buffer_full
                    .get_or_create(&Self::labels())
                    .inc();
                error!(
                    sink = SINK,
                    used,
                    max,
                    "on-disk buffer is full; capture pauses until Loki takes batches again"
                );
                false
            }
            Err(e) => {
                self.metrics
                    .buffer_full
                    .get_or_create(&Self::labels())
                    .inc();
                error!(sink = SINK, error = %e, "cannot write the on-disk buffer; capture pauses");
                false
            }
        }
    }

    /// Sends the oldest buffered batch.
    async fn replay_one(&self) -> Replay {
        let peeked = self.buffer.with(|s| s.peek()).await;
        let (id, bytes) = match peeked {
            Ok(Ok(Some(x))) => x,
            Ok(Ok(None)) => return Replay::Empty,
            Ok(Err(e)) => {
                error!(sink = SINK, error = %e, "cannot read the on-disk buffer");
                return Replay::RetryIn(self.config.retry.max.0);
            }
            Err(e) => {
                error!(sink = SINK, error = %e, "buffer task failed");
                return Replay::RetryIn(self.config.retry.max.0);
            }
        };
        let outcome = match decode_record(&bytes) {
            Ok((header, body)) => {
                let batch = header.to_batch(body);
                let written = Instant::now()
                    .checked_sub(Duration::from_nanos(
                        (crate::checkpoint::now_ns() - header.written_ns).max(0) as u64,
                    ))
                    .unwrap_or_else(Instant::now);
                match self
                    .send_once(&batch, "Loki still failing; buffer replay waits", written)
                    .await
                {
                    Ok(()) => None,
                    Err(retry_after) => {
                        self.metrics
                            .sink_retries
                            .get_or_create(&Self::labels())
                            .inc();
                        Some(retry_after.unwrap_or_default())
                    }
                }
            }
            Err(e) => {
                self.metrics
                    .buffer_corrupt
                    .get_or_create(&Self::labels())
                    .inc();
                error!(sink = SINK, %id, error = %e, "undecodable buffer record skipped");
                None
            }
        };
        if let Some(delay) = outcome {
            return Replay::RetryIn(delay);
        }
        if let Ok(Err(e)) | Err(e) = self
            .buffer
            .with(move |s| s.consume(id))
            .await
            .map(|r| r.map_err(|e| e.to_string()))
        {
            error!(sink = SINK, error = %e, "cannot advance the on-disk buffer; the batch may be sent again");
        }
        self.update_buffer_gauges();
        Replay::Progress
    }
}
