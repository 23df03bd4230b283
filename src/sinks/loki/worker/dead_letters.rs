//! Dead letters: pushes Loki rejected (400/413), kept with its answer in the dead-letter store.

use tracing::{error, warn};

use super::super::client::Rejection;
use super::super::encode::EncodedBatch;
use super::super::store::{RecordHeader, encode_record};
use super::batcher::Push;
use super::{DEAD_LETTER_FAILURE, LokiWorker, Machine, SINK};
use crate::observability::reasons::{DeadLetterReason, LokiSinkFailureReason};

impl LokiWorker {
    /// Appends a rejected push to the dead-letter store; true when durable.
    pub(super) async fn retry_dead_letter(&self, m: &mut Machine, push: &mut Push) -> bool {
        let Some(rejection) = push.rejected.clone() else {
            return true;
        };
        let batch = self.encoded(push);
        let ok = self.dead_letter(&batch, &rejection).await;
        if ok {
            self.disk_ok(m);
        } else {
            self.disk_failed(m);
        }
        ok
    }

    /// Keeps a batch Loki rejected (400/413) with its answer. True once it is durable; false
    /// when the store could not take it: the caller keeps the batch unacknowledged and retries.
    pub(super) async fn dead_letter(&self, batch: &EncodedBatch, rejection: &Rejection) -> bool {
        // "<status>: <answer>"
        let reason = rejection.to_string();
        let status = rejection.status;
        let record = encode_record(
            &RecordHeader::for_batch(batch, Some(reason.clone())),
            &batch.body,
        );
        match self.dead_letters.append(record).await {
            Ok(id) => {
                self.status.recovered(DEAD_LETTER_FAILURE);
                self.status.set_dead_letters(self.dead_letters.pending().0);
                let label = if status == 413 {
                    DeadLetterReason::TooLarge
                } else {
                    DeadLetterReason::BadRequest
                };
                self.metrics
                    .dead_letters
                    .get_or_create(&Self::reason(label.as_label()))
                    .inc();
                warn!(sink = SINK, %id, entries = batch.entries, %reason, "Loki rejected a batch; kept as a dead letter (see `log-capturer dlq list`)");
                true
            }
            Err(e) => {
                self.status
                    .failed(DEAD_LETTER_FAILURE, &format!("dead-letter store: {e}"));
                self.metrics
                    .sink_failures
                    .get_or_create(&Self::reason(LokiSinkFailureReason::DeadLetter.as_label()))
                    .inc();
                error!(sink = SINK, error = %e, entries = batch.entries, %reason,
                    "Loki rejected a batch and the dead-letter store cannot keep it; the batch waits (not acknowledged) and the append is retried");
                false
            }
        }
    }
}
