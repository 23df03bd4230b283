//! Spilling: pushes appended to the on-disk buffer, in order (each done once durable).

use tokio::time::Instant as Deadline;
use tracing::error;

use super::super::store::{RecordHeader, encode_record};
use super::batcher::Push;
use super::{LokiWorker, Machine, SINK, State};
use crate::buffer::AppendError;
use crate::observability::reasons::BufferErrorReason;

impl LokiWorker {
    pub(super) fn start_spilling(&self, m: &mut Machine, head: Push) {
        // Try the buffer again, even if it was full some time ago.
        m.buffer_full = false;
        m.state = State::Spilling;
        m.batcher.ready.push_front(head);
    }

    pub(super) async fn step_spilling(&self, m: &mut Machine) {
        let Some(mut head) = m.batcher.ready.pop_front() else {
            m.state = State::Replaying;
            return;
        };
        if !self.can_queue_behind(m, &head) {
            m.batcher.ready.push_front(head);
            m.state = State::Replaying;
            return;
        }
        let spilled = self.spill(m, &mut head).await;
        if spilled {
            self.done(head);
        } else {
            m.batcher.ready.push_front(head);
            m.state = State::Replaying;
        }
    }

    fn count_buffer_full(&self) {
        self.metrics
            .buffer_full
            .get_or_create(&Self::labels())
            .inc();
    }

    /// Appends a push to the on-disk buffer; true when durable.
    pub(super) async fn spill(&self, m: &mut Machine, push: &mut Push) -> bool {
        // The Kafka worker's `append_waiting` handles the same outcomes: kept apart, as its log
        // texts name its own unit (messages, Kafka) and its side effects differ (linger, one
        // message at a time, stop draining).
        let batch = self.encoded(push);
        let record = encode_record(&RecordHeader::for_batch(&batch, None), &batch.body);
        let result = self.buffer.append(record).await;
        self.update_buffer_gauges();
        match result {
            Ok(_) => {
                m.append_backoff.reset();
                m.append_at = Deadline::now();
                true
            }
            Err(AppendError::Full { used, max }) => {
                m.buffer_full = true;
                if self.buffered() == 0 {
                    // Full without a record to replay (space held by files that could not be
                    // deleted): nothing will free room soon, so try again after a back-off.
                    m.append_at = Deadline::now() + m.append_backoff.next_delay();
                }
                self.count_buffer_full();
                error!(
                    sink = SINK,
                    used,
                    max,
                    "on-disk buffer is full; new batches wait in memory (capture pauses) while the buffer is replayed"
                );
                false
            }
            Err(AppendError::TooLarge { len }) => {
                push.too_large = true;
                self.count_buffer_full();
                error!(
                    sink = SINK,
                    len,
                    "batch larger than the on-disk buffer can ever hold; it waits in memory for Loki, in order"
                );
                false
            }
            Err(AppendError::Io(e)) => {
                m.append_at = Deadline::now() + m.append_backoff.next_delay();
                self.metrics
                    .buffer_errors
                    .get_or_create(&Self::reason(BufferErrorReason::Append.as_label()))
                    .inc();
                error!(sink = SINK, error = %e, "cannot write the on-disk buffer; retrying");
                false
            }
        }
    }
}
