//! Buffer replay: the Replaying state sends the on-disk buffer's records, oldest first, and
//! consumes each once Loki (or the dead-letter store) took it.

use std::time::{Duration, Instant};
use tokio::time::Instant as Deadline;
use tracing::error;

use super::super::client::{Rejection, SendError};
use super::super::store::{RecordHeader, decode_record};
use super::{BufferReplayHead, LokiWorker, Machine, SINK, State};
use crate::buffer::RecordId;
use crate::observability::reasons::BufferErrorReason;
use crate::sinks::buffer_errors::BufferErrors;

impl LokiWorker {
    /// When the oldest buffer record may be worked on: a delivered or rejected one only waits
    /// for the disk, one to send also for Loki.
    pub(super) fn buffer_replay_due(m: &Machine) -> Deadline {
        match m.buffer_replay_head {
            Some(_) => m.disk_at,
            None => m.loki_at.max(m.disk_at),
        }
    }

    pub(super) async fn step_replaying(&self, m: &mut Machine) {
        if self.buffered() == 0 {
            m.state = State::Sending;
            return;
        }
        // The ordering rule: new pushes queue behind the buffer while they fit.
        let now = Deadline::now();
        if let Some(mut head) = m.batcher.ready.pop_front() {
            if self.can_queue_behind(m, &head) && now >= m.append_at {
                if self.spill(m, &mut head).await {
                    self.done(head);
                } else {
                    m.batcher.ready.push_front(head);
                }
                return;
            }
            m.batcher.ready.push_front(head);
        }
        if now < Self::buffer_replay_due(m) {
            // Woken for the append timer only.
            return;
        }
        self.buffer_replay_one(m).await;
        self.update_buffer_gauges();
        if self.buffered() == 0 {
            m.state = State::Sending;
        }
    }

    /// Buffer replay of the oldest buffer record (or the rest of it: its dead letter, its consume).
    pub(super) async fn buffer_replay_one(&self, m: &mut Machine) {
        let peeked = self.buffer.with(|s| s.peek()).await;
        let (id, bytes) = match peeked {
            Ok(Ok(Some(x))) => x,
            Ok(Ok(None)) => return,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                // The Kafka worker's `read_replay` skips a corrupt record the same way; kept
                // apart, as what follows differs (here the buffer replay head is dropped).
                let skipped = self
                    .buffer
                    .with(|s| s.skip_corrupt_head())
                    .await
                    .unwrap_or(0);
                self.metrics
                    .buffer_corrupt
                    .get_or_create(&Self::labels())
                    .inc_by(skipped.max(1));
                error!(sink = SINK, error = %e, skipped,
                    "corrupt on-disk buffer record; skipped it and the rest of its segment");
                m.buffer_replay_head = None;
                m.buffer_full = false;
                if skipped == 0 {
                    // Nothing could be skipped (should not happen): do not retry at once.
                    self.disk_failed(m);
                }
                return;
            }
            Ok(Err(e)) => {
                self.buffer_error(m, BufferErrorReason::Read, &e.to_string());
                return;
            }
            Err(e) => {
                self.buffer_error(m, BufferErrorReason::Read, &e.to_string());
                return;
            }
        };
        if !matches!(m.buffer_replay_head, Some(BufferReplayHead::Delivered(rid)) if rid == id) {
            let done = match decode_record(&bytes) {
                Ok((header, body)) => self.buffer_replay_send(m, id, header, body).await,
                Err(e) => {
                    self.metrics
                        .buffer_corrupt
                        .get_or_create(&Self::labels())
                        .inc();
                    error!(sink = SINK, %id, error = %e, "undecodable buffer record skipped");
                    true
                }
            };
            if !done {
                return;
            }
            m.buffer_replay_head = Some(BufferReplayHead::Delivered(id));
        }
        match self.buffer.with(move |s| s.consume(id)).await {
            Ok(Ok(())) => {
                m.buffer_replay_head = None;
                m.buffer_full = false;
                self.disk_ok(m);
            }
            Ok(Err(e)) => self.buffer_error(m, BufferErrorReason::Consume, &e.to_string()),
            Err(e) => self.buffer_error(m, BufferErrorReason::Consume, &e.to_string()),
        }
    }

    /// Sends a buffer record (or dead-letters it if Loki rejected it); true when done with Loki.
    pub(super) async fn buffer_replay_send(
        &self,
        m: &mut Machine,
        id: RecordId,
        header: RecordHeader,
        body: Vec<u8>,
    ) -> bool {
        let batch = header.to_batch(body);
        let rejected = match m.buffer_replay_head.take() {
            Some(BufferReplayHead::Rejected(rid, rejection)) if rid == id => Some(rejection),
            _ => None,
        };
        let rejection = match rejected {
            Some(r) => r,
            None => {
                let written = Instant::now()
                    .checked_sub(Duration::from_nanos(
                        (crate::clock::now_ns() - header.written_ns).max(0) as u64,
                    ))
                    .unwrap_or_else(Instant::now);
                match self.send_once(&batch, Some(written)).await {
                    Ok(()) => {
                        m.loki_backoff.reset();
                        m.loki_at = Deadline::now();
                        return true;
                    }
                    Err(SendError::Retryable { retry_after, .. }) => {
                        self.loki_failed(m, retry_after);
                        return false;
                    }
                    Err(SendError::Rejected { status, body }) => Rejection { status, body },
                }
            }
        };
        if self.dead_letter(&batch, &rejection).await {
            self.disk_ok(m);
            true
        } else {
            self.disk_failed(m);
            m.buffer_replay_head = Some(BufferReplayHead::Rejected(id, rejection));
            false
        }
    }

    pub(super) fn buffer_error(&self, m: &mut Machine, op: BufferErrorReason, e: &str) {
        self.disk_failed(m);
        BufferErrors {
            sink: SINK,
            record: "batch",
            delivered: "sent",
        }
        .report(&self.metrics, op, e);
    }
}
