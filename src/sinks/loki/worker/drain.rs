//! Draining (shutdown): one short live attempt per push, else the buffer, else the push and
//! every later one stay unacknowledged (read again after the restart).

use tracing::error;

use super::super::client::{Rejection, SendError};
use super::batcher::Push;
use super::{LokiWorker, Machine, SHUTDOWN_SEND_GRACE, SINK};
use crate::observability::reasons::LokiSinkFailureReason;

impl LokiWorker {
    pub(super) async fn step_draining(&self, m: &mut Machine) {
        let Some(mut head) = m.batcher.ready.pop_front() else {
            return;
        };
        if self.abandon.is_cancelled() && !m.abandoning {
            return self.abandon(m, &head, "pipeline.shutdown_timeout ran out");
        }
        if m.abandoning {
            return self.abandon(m, &head, "an earlier batch could not be kept");
        }
        if head.rejected.is_some() {
            if self.retry_dead_letter(m, &mut head).await {
                self.done(head);
            } else {
                self.abandon(m, &head, "its dead letter could not be written");
            }
            return;
        }
        let live = self.buffered() == 0 && !m.loki_failing && head.failing_since.is_none();
        if live {
            let batch = self.encoded(&mut head);
            let attempt = tokio::time::timeout(SHUTDOWN_SEND_GRACE, self.send_once(&batch, None));
            let sent = tokio::select! {
                r = attempt => r.ok(),
                _ = self.abandon.cancelled() => None,
            }
            .unwrap_or(Err(SendError::Retryable {
                reason: LokiSinkFailureReason::Timeout,
                detail: "shutdown grace over".to_string(),
                retry_after: None,
            }));
            if self.abandon.is_cancelled() && sent.is_err() {
                return self.abandon(m, &head, "pipeline.shutdown_timeout ran out");
            }
            match sent {
                Ok(()) => return self.done(head),
                Err(SendError::Rejected { status, body }) => {
                    head.rejected = Some(Rejection { status, body });
                    if self.retry_dead_letter(m, &mut head).await {
                        self.done(head);
                    } else {
                        self.abandon(m, &head, "its dead letter could not be written");
                    }
                    return;
                }
                Err(SendError::Retryable { .. }) => m.loki_failing = true,
            }
        }
        if !head.too_large && self.spill(m, &mut head).await {
            self.done(head);
        } else {
            self.abandon(
                m,
                &head,
                "Loki is unreachable and the on-disk buffer cannot take it",
            );
        }
    }

    /// Shutdown: the push is left unacknowledged; capture reads its lines again after the
    /// restart. So are all later pushes, so that none of them is both in the buffer and read
    /// again.
    pub(super) fn abandon(&self, m: &mut Machine, push: &Push, why: &str) {
        m.abandoning = true;
        error!(
            sink = SINK,
            entries = push.entries,
            "shutdown: {why}; these lines are not acknowledged and will be read again after restart"
        );
    }
}
