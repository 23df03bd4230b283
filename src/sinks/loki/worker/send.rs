//! Sending live: the Sending state, a push's encoding (once, with a plain-JSON fallback), one
//! push to Loki with its metrics, and the acknowledgement of what is done.

use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::time::Instant as Deadline;
use tracing::{error, warn};

use super::super::client::{Rejection, SendError};
use super::super::encode::{EncodedBatch, Modified, Slice};
use super::batcher::Push;
use super::{LokiWorker, Machine, SEND_FAILURE, SINK, State};
use crate::observability::reasons::{LinesModifiedReason, LokiSinkFailureReason};

impl LokiWorker {
    pub(super) async fn step_sending(&self, m: &mut Machine) {
        if self.buffered() > 0 {
            m.state = State::Replaying;
            return;
        }
        let Some(mut head) = m.batcher.ready.pop_front() else {
            return;
        };
        if head.rejected.is_some() {
            if self.retry_dead_letter(m, &mut head).await {
                self.done(head);
            } else {
                m.batcher.ready.push_front(head);
            }
            return;
        }
        let now = Deadline::now();
        if self.spill_at(m, &head).is_some_and(|t| now >= t) {
            return self.start_spilling(m, head);
        }
        if now < m.loki_at {
            m.batcher.ready.push_front(head);
            return;
        }
        let attempt = Instant::now();
        let batch = self.encoded(&mut head);
        match self.send_once(&batch, head.failing_since).await {
            Ok(()) => {
                m.loki_backoff.reset();
                m.loki_at = Deadline::now();
                self.done(head);
            }
            Err(SendError::Rejected { status, body }) => {
                head.rejected = Some(Rejection { status, body });
                if self.retry_dead_letter(m, &mut head).await {
                    self.done(head);
                } else {
                    m.batcher.ready.push_front(head);
                }
            }
            Err(SendError::Retryable { retry_after, .. }) => {
                self.loki_failed(m, retry_after);
                head.failing_since.get_or_insert(attempt);
                if self
                    .spill_at(m, &head)
                    .is_some_and(|t| Deadline::now() >= t)
                {
                    return self.start_spilling(m, head);
                }
                m.batcher.ready.push_front(head);
            }
        }
    }

    /// The push's request body, encoded once. If the configured encoding fails (a compression
    /// bug), the push goes as plain JSON instead, counted and logged, so that its containers'
    /// checkpoints do not stop for the rest of the run.
    pub(super) fn encoded(&self, push: &mut Push) -> EncodedBatch {
        if let Some(batch) = &push.encoded {
            return batch.clone();
        }
        let slices: Vec<Slice<'_>> = push
            .parts
            .iter()
            .map(|p| Slice {
                delivery: &p.tracked.delivery,
                line: p.line,
                piece: p.piece,
                entries: p.entries,
                tenant: push.tenant.as_deref(),
            })
            .collect();
        let (mut batch, modified) = match self.encoder.encode_slices(&slices) {
            Ok(x) => x,
            Err(e) => {
                self.metrics
                    .sink_failures
                    .get_or_create(&Self::reason(LokiSinkFailureReason::Encode.as_label()))
                    .inc();
                error!(sink = SINK, error = %e, entries = push.entries,
                    "cannot encode a batch as configured; sending it as plain JSON instead");
                self.encoder.encode_slices_plain_json(&slices)
            }
        };
        batch.tenant = push.tenant.as_deref().map(str::to_string);
        self.count_modified(modified);
        push.encoded = Some(batch.clone());
        batch
    }

    /// A push is done: acknowledges every delivery whose parts are now all done.
    pub(super) fn done(&self, push: Push) {
        for part in push.parts {
            if part.tracked.parts_left.fetch_sub(1, Ordering::AcqRel) == 1 {
                let d = &part.tracked.delivery;
                self.ledger.acknowledge(&d.batch.container.id, d.seq);
                self.status.finished(d.charged_bytes());
            }
        }
    }

    pub(super) fn count_modified(&self, m: Modified) {
        for (reason, n) in [
            (LinesModifiedReason::Truncated, m.truncated),
            (LinesModifiedReason::Split, m.split),
            (LinesModifiedReason::LabelValueCut, m.label_values_cut),
            (LinesModifiedReason::LabelInvalid, m.labels_invalid),
        ] {
            if n > 0 {
                self.metrics
                    .sink_lines_modified
                    .get_or_create(&Self::reason(reason.as_label()))
                    .inc_by(n);
            }
        }
    }

    /// One push to Loki, with its metrics and log.
    pub(super) async fn send_once(
        &self,
        batch: &EncodedBatch,
        failing_since: Option<Instant>,
    ) -> Result<(), SendError> {
        let sent_at = Instant::now();
        let result = self.client.send(batch).await;
        match &result {
            Ok(()) => {
                self.status.recovered(SEND_FAILURE);
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
            }
            // Loki answered: it works (the batch goes to the dead letters).
            Err(SendError::Rejected { .. }) => self.status.recovered(SEND_FAILURE),
            Err(SendError::Retryable { reason, detail, .. }) => {
                self.status
                    .failed(SEND_FAILURE, &format!("{reason}: {detail}"));
                self.metrics
                    .sink_failures
                    .get_or_create(&Self::reason(reason.as_label()))
                    .inc();
                let failing_for = failing_since.unwrap_or(sent_at).elapsed();
                warn!(sink = SINK, reason = reason.as_label(), error = %detail, ?failing_for, "Loki push failed; retrying");
            }
        }
        result
    }
}
