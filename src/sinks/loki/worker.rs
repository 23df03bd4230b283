//! The Loki sink's worker: one loop, one state machine.
//!
//! # Batching
//!
//! Deliveries are cut into pushes of at most `batch.max_entries` entries and `batch.max_bytes`
//! bytes of log lines (entries as sent, after `max_line_bytes` cutting or splitting): both are
//! hard caps on every push. A delivery larger than the room left is split across consecutive
//! pushes ([`Part`]s). A push is closed when it is full or `batch.max_wait` after its first
//! entry, and joins the `ready` queue (in memory, in capture order; its deliveries keep their
//! share of the queue budget, so the queue is bounded and capture pauses when it is full).
//! Deliveries with no lines are ignored.
//!
//! A push carries one tenant (`X-Scope-OrgID`): records a tenant stage gave a tenant go into
//! that tenant's push, the others into the sink's own (`tenant`). There is one open push per
//! tenant; each is closed on its own caps and `max_wait`, so a tenant's entries stay in
//! capture order, and a delivery spread over tenants is acknowledged when all its parts are.
//!
//! # Acknowledgement
//!
//! A push is *done* when Loki accepted it (2xx), when it is durably in the on-disk buffer, or
//! when Loki rejected it (400/413) and it is durably in the dead-letter store. A delivery is
//! acknowledged to the ledger when every one of its parts is done. Nothing else acknowledges.
//!
//! # The ordering rule
//!
//! **While the buffer holds anything, new pushes queue behind it**: they are appended to the
//! buffer (or, when it is full or they can never fit, wait in `ready`, in memory) and are never
//! sent live before the buffer is empty. Pushes waiting in memory are always newer than
//! everything in the buffer. So each stream's entries reach Loki in capture order.
//!
//! # States
//!
//! ```text
//!              the head push failed for spill_after
//!   Sending ----------------------------------------> Spilling
//!     ^  |                                               |
//!     |  | buffer not empty (e.g. at start-up)           | nothing ready left, buffer full,
//!     |  v                                               | head can never fit, or I/O error
//!     | Replaying <--------------------------------------+
//!     |  |
//!     +--+ buffer empty
//!
//!   any state -- shutdown token cancelled or input closed --> Draining --> exit
//! ```
//!
//! - **Sending** (buffer empty): the oldest ready push is sent live. 2xx: done. 400/413: it
//!   becomes a dead letter (done once the append is durable; a failed append is retried with
//!   back-off, the push is not sent again). 429/5xx/connection error: retried at the Loki
//!   retry time (`Retry-After` or back-off, whichever is later); `buffer.spill_after` after its
//!   first failure (even in the middle of a long `Retry-After`), → Spilling.
//! - **Spilling**: ready pushes are appended to the buffer, in order (each is done when
//!   durable). Nothing ready left, the buffer full, the head can never fit the buffer
//!   (`TooLarge`) or the append failed (I/O, retried after a back-off) → Replaying, which goes
//!   on to Sending at once if the buffer is empty: a push that can never fit then waits in
//!   memory for Loki, in order, retried at the Loki retry time (it never spins; capture pauses
//!   behind it through the queue budget).
//! - **Replaying** (buffer replay; the buffer is non-empty): first, ready pushes are appended behind the buffer while
//!   they fit (the ordering rule). Then the oldest record is sent, at the Loki retry time —
//!   which carries over from Sending, so a `Retry-After` or back-off is honoured across the
//!   spill. Sent (or dead-lettered): the record is consumed, which frees room, so pushes that
//!   found the buffer full follow; the worker remembers the record was delivered, so a failed
//!   consume (position file not writable) is retried with back-off without sending it again. A
//!   record that went corrupt on disk is skipped and counted. Buffer empty → Sending.
//! - **Draining** (shutdown): no buffer replay. Every ready push, and the open one, gets one short
//!   live attempt if the buffer is empty and Loki was not failing, else goes to the buffer. A
//!   push that neither Loki nor the buffer took stays unacknowledged, and so does every push
//!   after it: their lines are read again after the restart, and none of them is also in the
//!   buffer (no duplicate). When `pipeline.shutdown_timeout` runs out (the `abandon` token),
//!   a live attempt under way is dropped and every push not yet done is abandoned the same way.
//!
//! Every wait of the loop races new input, the `max_wait` timer and the shutdown token; a step
//! itself (one push, bounded by `timeout`, or one disk operation) runs to its end.
//!
//! # Files
//!
//! This file: the worker, the machine's variables, the loop and when each state is due.
//! `worker/batcher.rs`: pushes and how deliveries are cut into them; `worker/send.rs`: Sending,
//! encoding, one push to Loki, acknowledgement; `worker/spill.rs`: Spilling (buffer appends);
//! `worker/buffer_replay.rs`: Replaying; `worker/drain.rs`: Draining; `worker/dead_letters.rs`:
//! the dead-letter store.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant as Deadline;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::client::{LokiClient, Rejection};
use super::encode::Encoder;
use super::store::SharedStore;
use crate::backoff::Backoff;
use crate::buffer::RecordId;
use crate::config::LokiSinkConfig;
use crate::observability::metrics::{Metrics, SinkLabels, SinkReasonLabels};
use crate::observability::status::SinkStatus;
use crate::pipeline::{AckLedger, Delivery};

// The loop and the state machine are here; each state's step, and what it shares, in its own
// file.
mod batcher;
mod buffer_replay;
mod dead_letters;
mod drain;
mod send;
mod spill;

use batcher::{Batcher, Push};

const SINK: &str = "loki";
/// At shutdown a push gets one attempt this long before it goes to the on-disk buffer.
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
    /// Cancelled when `pipeline.shutdown_timeout` ran out: the step under way ends (a live
    /// attempt is dropped), every push not yet done is abandoned (not spilled), and the worker
    /// exits, so that nothing is acknowledged or buffered after the final checkpoint write.
    pub abandon: CancellationToken,
    /// This sink's entry on the status board (`GET /api/v1/sinks`).
    pub status: Arc<SinkStatus>,
}

/// Failure kinds reported to the status board: a push to Loki, and the dead-letter store.
/// A buffer append that fails is retried and logged; Loki's own failure is what the board
/// shows while it spills.
const SEND_FAILURE: &str = "send";
const DEAD_LETTER_FAILURE: &str = "dead_letter";

/// The machine's state (see the module documentation). Its `Debug` name is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Sending,
    Spilling,
    /// Buffer replay: the on-disk buffer's records are sent, oldest first.
    Replaying,
    Draining,
}

/// The buffer record under buffer replay, once Loki is done with it.
enum BufferReplayHead {
    /// Loki accepted it (or it is a dead letter): only the consume is left.
    Delivered(RecordId),
    /// Loki rejected it: only the dead-letter append (then the consume) is left.
    Rejected(RecordId, Rejection),
}

/// What the worker does next, and when.
#[derive(Clone, Copy)]
enum Due {
    Now,
    At(Deadline),
    /// Nothing to do until input arrives.
    Idle,
}

/// The machine's variables besides the state.
struct Machine {
    state: State,
    batcher: Batcher,
    /// Loki's next allowed attempt (Retry-After or back-off), shared by live sends and buffer
    /// replay.
    loki_at: Deadline,
    loki_backoff: Backoff,
    /// Next allowed buffer read/consume or dead-letter append after an I/O failure.
    disk_at: Deadline,
    disk_backoff: Backoff,
    /// Next allowed buffer append after an I/O failure (kept apart so that buffer replay, which
    /// frees room, goes on while appends fail, e.g. with ENOSPC).
    append_at: Deadline,
    append_backoff: Backoff,
    /// The buffer refused an append as full; set again only after a record was consumed.
    buffer_full: bool,
    /// The record under buffer replay that Loki is done with (what is left: its dead letter,
    /// its consume).
    buffer_replay_head: Option<BufferReplayHead>,
    /// Draining: Loki failed, the rest goes straight to the buffer.
    loki_failing: bool,
    /// Draining: a push was left unacknowledged, so every later one is too (had a later one
    /// gone to the buffer, the restart would read its lines again and send them from the buffer as well).
    abandoning: bool,
}

impl LokiWorker {
    fn labels() -> SinkLabels {
        SinkLabels { sink: SINK }
    }

    fn reason(reason: &'static str) -> SinkReasonLabels {
        SinkReasonLabels { sink: SINK, reason }
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
        self.status.set_buffered(records, bytes);
    }

    /// A delivery from the input (one with lines holds the queue budget until `done`).
    fn take(&self, m: &mut Machine, d: Arc<Delivery>) {
        if !d.batch.lines.is_empty() {
            self.status.received(d.charged_bytes());
        }
        m.batcher.add(d, &self.encoder);
    }

    fn buffered(&self) -> u64 {
        self.buffer.pending().0
    }

    // Starts as the Kafka worker's `run` does (gauges, back-offs); kept apart: each builds
    // and drives its own state machine from here on.
    pub async fn run(mut self) {
        self.metrics
            .init_buffered_sink(SINK, self.config.buffer.max_bytes.0);
        self.update_buffer_gauges();
        let retry = (self.config.retry.initial.0, self.config.retry.max.0);
        let mut m = Machine {
            state: State::Sending,
            batcher: Batcher::new(
                self.config.batch.max_entries,
                self.config.batch.max_bytes.0 as usize,
            ),
            loki_at: Deadline::now(),
            loki_backoff: Backoff::new(retry.0, retry.1),
            disk_at: Deadline::now(),
            disk_backoff: Backoff::new(retry.0, retry.1),
            append_at: Deadline::now(),
            append_backoff: Backoff::new(retry.0, retry.1),
            buffer_full: false,
            buffer_replay_head: None,
            loki_failing: false,
            abandoning: false,
        };
        let max_wait = self.config.batch.max_wait.0;
        let mut input_open = true;
        self.update_buffer_gauges();
        self.status.set_dead_letters(self.dead_letters.pending().0);
        loop {
            // Take what capture handed over, without waiting.
            while input_open {
                match self.input.try_recv() {
                    Ok(d) => self.take(&mut m, d),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => input_open = false,
                }
            }
            // The input closes only after the shutdown token, but either one ends the run.
            if (self.shutdown.is_cancelled() || !input_open) && m.state != State::Draining {
                info!(sink = SINK, from = ?m.state, "shutting down: draining");
                m.state = State::Draining;
            }
            if m.state == State::Draining {
                m.batcher.seal();
            }
            if !input_open && m.state == State::Draining && m.batcher.ready.is_empty() {
                break;
            }
            let due = self.due(&m);
            let flush_at = m.batcher.opened_at().map(|t| t + max_wait);
            tokio::select! {
                biased;
                _ = sleep_until_due(due), if !matches!(due, Due::Idle) => self.step(&mut m).await,
                d = self.input.recv(), if input_open => match d {
                    Some(d) => self.take(&mut m, d),
                    None => input_open = false,
                },
                _ = tokio::time::sleep_until(flush_at.unwrap_or_else(Deadline::now)), if flush_at.is_some() => {
                    m.batcher.seal_due(max_wait);
                }
                _ = self.shutdown.cancelled(), if m.state != State::Draining => {}
            }
        }
        if let Some(BufferReplayHead::Delivered(id)) = m.buffer_replay_head {
            // A last try, so that the restart does not send this record again.
            if let Ok(Err(e)) | Err(e) = self
                .buffer
                .with(move |s| s.consume(id))
                .await
                .map_err(|e| e.to_string())
                .map(|r| r.map_err(|e| e.to_string()))
            {
                error!(sink = SINK, error = %e, "cannot advance the on-disk buffer past a delivered batch; it is sent again after the restart");
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

    /// When the current state has something to do.
    fn due(&self, m: &Machine) -> Due {
        let head = m.batcher.ready.front();
        match m.state {
            State::Sending => {
                if self.buffered() > 0 {
                    return Due::Now;
                }
                match head {
                    None => Due::Idle,
                    Some(p) if p.rejected.is_some() => Due::At(m.disk_at),
                    Some(p) => match self.spill_at(m, p) {
                        Some(spill) => Due::At(m.loki_at.min(spill)),
                        None => Due::At(m.loki_at),
                    },
                }
            }
            State::Spilling => Due::At(m.append_at),
            State::Replaying => {
                if self.buffered() == 0 {
                    return Due::Now;
                }
                let buffer_replay = Self::buffer_replay_due(m);
                if head.is_some_and(|p| self.can_queue_behind(m, p)) {
                    return Due::At(buffer_replay.min(m.append_at));
                }
                Due::At(buffer_replay)
            }
            State::Draining => {
                if head.is_some() {
                    Due::Now
                } else {
                    Due::Idle
                }
            }
        }
    }

    /// When a failing live push goes to the buffer: `spill_after` after its first failure
    /// (even if Loki's retry time is later, e.g. a long `Retry-After`).
    fn spill_at(&self, m: &Machine, p: &Push) -> Option<Deadline> {
        let since = p.failing_since.filter(|_| !p.too_large)?;
        let at = Deadline::from_std(since + self.config.buffer.spill_after.0);
        Some(at.max(m.append_at))
    }

    /// A ready push may be appended behind the buffer (when `append_at` has come).
    fn can_queue_behind(&self, m: &Machine, p: &Push) -> bool {
        !m.buffer_full && !p.too_large && p.rejected.is_none()
    }

    /// One transition of the machine (see the module documentation).
    async fn step(&self, m: &mut Machine) {
        match m.state {
            State::Sending => self.step_sending(m).await,
            State::Spilling => self.step_spilling(m).await,
            State::Replaying => self.step_replaying(m).await,
            State::Draining => self.step_draining(m).await,
        }
    }

    /// A retryable failure: the next attempt at Loki waits for `Retry-After` or the back-off,
    /// whichever is later, whatever state comes next.
    fn loki_failed(&self, m: &mut Machine, retry_after: Option<Duration>) {
        self.metrics
            .sink_retries
            .get_or_create(&Self::labels())
            .inc();
        let delay = retry_after
            .unwrap_or_default()
            .max(m.loki_backoff.next_delay());
        m.loki_at = Deadline::now() + delay;
    }

    fn disk_failed(&self, m: &mut Machine) {
        m.disk_at = Deadline::now() + m.disk_backoff.next_delay();
    }

    fn disk_ok(&self, m: &mut Machine) {
        m.disk_backoff.reset();
        m.disk_at = Deadline::now();
    }
}

async fn sleep_until_due(due: Due) {
    match due {
        Due::Now => {}
        // Not a timer: a timer for a past instant may first wait for the timer wheel to turn,
        // and new input, polled next, would then win every round and starve the step.
        Due::At(at) if at <= Deadline::now() => {}
        Due::At(at) => tokio::time::sleep_until(at).await,
        Due::Idle => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "worker_file_tests.rs"]
mod file_tests;

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
