//! A failed read or consume of a sink's on-disk buffer, reported the same way by every sink
//! that has one (Loki, Kafka): counted in `log_capturer_buffer_errors_total` under the
//! operation, and logged. The caller retries after its disk back-off.

use tracing::error;

use crate::observability::metrics::{Metrics, SinkReasonLabels};
use crate::observability::reasons::BufferErrorReason;

/// How a sink names its buffer records in the log.
pub(crate) struct BufferErrors {
    /// The sink's metric label and log field ("loki", "kafka").
    pub sink: &'static str,
    /// What one buffer record is: "batch" (Loki), "record" (Kafka).
    pub record: &'static str,
    /// What a delivered record would be if it were read again: "sent", "produced".
    pub delivered: &'static str,
}

impl BufferErrors {
    /// `op`: the operation that failed (`Read` or `Consume`), the metric's reason.
    pub(crate) fn report(&self, metrics: &Metrics, op: BufferErrorReason, e: &str) {
        metrics
            .buffer_errors
            .get_or_create(&SinkReasonLabels {
                sink: self.sink,
                reason: op.as_label(),
            })
            .inc();
        let (sink, record, delivered) = (self.sink, self.record, self.delivered);
        let op_label = op.as_label();
        if op == BufferErrorReason::Consume {
            error!(
                sink,
                op = op_label,
                error = %e,
                "cannot advance the on-disk buffer past a delivered {record}; retrying (it is not {delivered} again)"
            );
        } else {
            error!(sink, op = op_label, error = %e, "cannot read the on-disk buffer; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_under_the_operation() {
        let metrics = Metrics::new();
        let loki = BufferErrors {
            sink: "loki",
            record: "batch",
            delivered: "sent",
        };
        loki.report(&metrics, BufferErrorReason::Consume, "disk gone");
        loki.report(&metrics, BufferErrorReason::Read, "disk gone");
        loki.report(&metrics, BufferErrorReason::Read, "disk gone");
        let count = |reason| {
            metrics
                .buffer_errors
                .get_or_create(&SinkReasonLabels {
                    sink: "loki",
                    reason,
                })
                .get()
        };
        assert_eq!((count("read"), count("consume")), (2, 1));
    }
}
