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
//! - **Replaying** (buffer non-empty): first, ready pushes are appended behind the buffer while
//!   they fit (the ordering rule). Then the oldest record is sent, at the Loki retry time —
//!   which carries over from Sending, so a `Retry-After` or back-off is honoured across the
//!   spill. Sent (or dead-lettered): the record is consumed, which frees room, so pushes that
//!   found the buffer full follow; the worker remembers the record was delivered, so a failed
//!   consume (position file not writable) is retried with back-off without sending it again. A
//!   record that went corrupt on disk is skipped and counted. Buffer empty → Sending.
//! - **Draining** (shutdown): no replay. Every ready push, and the open one, gets one short
//!   live attempt if the buffer is empty and Loki was not failing, else goes to the buffer. A
//!   push that neither Loki nor the buffer took stays unacknowledged, and so does every push
//!   after it: their lines are read again after the restart, and none of them is also in the
//!   buffer (no duplicate). When `pipeline.shutdown_timeout` runs out (the `abandon` token),
//!   a live attempt under way is dropped and every push not yet done is abandoned the same way.
//!
//! Every wait of the loop races new input, the `max_wait` timer and the shutdown token; a step
//! itself (one push, bounded by `timeout`, or one disk operation) runs to its end.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant as Deadline;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::client::{LokiClient, SendError};
use super::encode::{EncodedBatch, Encoder, Modified, Slice};
use super::store::{RecordHeader, SharedStore, decode_record, encode_record};
use crate::backoff::Backoff;
use crate::buffer::{AppendError, RecordId};
use crate::config::LokiSinkConfig;
use crate::observability::metrics::{Metrics, SinkLabels, SinkReasonLabels};
use crate::observability::status::SinkStatus;
use crate::pipeline::{AckLedger, Delivery};

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

/// A delivery, with how many of its parts are not done yet.
struct Tracked {
    delivery: Arc<Delivery>,
    parts_left: AtomicUsize,
}

/// Consecutive entries of one delivery inside one push (counting only the push's tenant's
/// lines).
struct Part {
    tracked: Arc<Tracked>,
    line: usize,
    piece: usize,
    entries: usize,
}

/// One push request to be.
#[derive(Default)]
struct Push {
    /// The tenant of all its entries; None: the sink's configured `tenant`.
    tenant: Option<Arc<str>>,
    parts: Vec<Part>,
    entries: usize,
    bytes: usize,
    /// Encoded on first use, kept for retries.
    encoded: Option<EncodedBatch>,
    /// Loki rejected it (status, answer): only the dead-letter append is left to do.
    rejected: Option<(u16, String)>,
    /// When its first failed attempt started (for `spill_after`).
    failing_since: Option<Instant>,
    /// The buffer said it can never hold it: it waits in memory for Loki.
    too_large: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Sending,
    Spilling,
    Replaying,
    Draining,
}

/// The buffer record being replayed, once Loki is done with it.
enum ReplayHead {
    /// Loki accepted it (or it is a dead letter): only the consume is left.
    Delivered(RecordId),
    /// Loki rejected it: only the dead-letter append (then the consume) is left.
    Rejected(RecordId, u16, String),
}

/// What the worker does next, and when.
#[derive(Clone, Copy)]
enum Due {
    Now,
    At(Deadline),
    /// Nothing to do until input arrives.
    Idle,
}

/// A push being filled, and when its first entry came.
#[derive(Default)]
struct Open {
    push: Push,
    opened_at: Option<Deadline>,
}

/// Cuts deliveries into pushes under the caps, one open push per tenant.
struct Batcher {
    max_entries: usize,
    max_bytes: usize,
    /// Usually one (the sink's own tenant); pushes of several tenants fill side by side.
    open: Vec<Open>,
    ready: VecDeque<Push>,
}

impl Batcher {
    fn new(max_entries: usize, max_bytes: usize) -> Self {
        Batcher {
            max_entries,
            max_bytes,
            open: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    /// The open push of `tenant` (created empty if there is none).
    fn open_for(&mut self, tenant: Option<&Arc<str>>) -> usize {
        if let Some(i) = self
            .open
            .iter()
            .position(|o| o.push.tenant.as_ref() == tenant)
        {
            return i;
        }
        self.open.push(Open {
            push: Push {
                tenant: tenant.cloned(),
                ..Push::default()
            },
            opened_at: None,
        });
        self.open.len() - 1
    }

    fn add(&mut self, delivery: Arc<Delivery>, encoder: &Encoder) {
        if delivery.batch.lines.is_empty() {
            // An end-of-stream marker, or nothing: no entries, nothing to acknowledge.
            return;
        }
        let tracked = Arc::new(Tracked {
            delivery,
            parts_left: AtomicUsize::new(0),
        });
        // The part being filled per open push (same index as `self.open`).
        let mut parts: Vec<Option<Part>> = Vec::new();
        for (line_index, line) in tracked.delivery.batch.lines.iter().enumerate() {
            let tenant = line
                .extra
                .as_deref()
                .and_then(|e| e.tenant.as_ref())
                .filter(|t| !t.is_empty());
            let t = self.open_for(tenant);
            parts.resize_with(self.open.len(), || None);
            let mut piece = 0;
            encoder.entry_sizes(line, |size| {
                let part = parts[t].get_or_insert_with(|| Part {
                    tracked: Arc::clone(&tracked),
                    line: line_index,
                    piece,
                    entries: 0,
                });
                let open = &mut self.open[t];
                let over = open.push.entries + 1 > self.max_entries
                    || open.push.bytes + size > self.max_bytes;
                if over && open.push.entries > 0 {
                    let next = Part {
                        tracked: Arc::clone(&tracked),
                        line: line_index,
                        piece,
                        entries: 0,
                    };
                    let full = std::mem::replace(part, next);
                    if full.entries > 0 {
                        full.tracked.parts_left.fetch_add(1, Ordering::Relaxed);
                        open.push.parts.push(full);
                    }
                    Self::seal_into(&mut self.ready, open);
                }
                part.entries += 1;
                open.push.entries += 1;
                open.push.bytes += size;
                open.opened_at.get_or_insert_with(Deadline::now);
                piece += 1;
            });
        }
        for (open, part) in self.open.iter_mut().zip(parts) {
            if let Some(part) = part.filter(|p| p.entries > 0) {
                part.tracked.parts_left.fetch_add(1, Ordering::Relaxed);
                open.push.parts.push(part);
            }
        }
        for i in 0..self.open.len() {
            let open = &mut self.open[i];
            if open.push.entries >= self.max_entries || open.push.bytes >= self.max_bytes {
                Self::seal_into(&mut self.ready, open);
            }
        }
    }

    /// Closes an open push (if it has anything) into `ready`; it stays open, empty.
    fn seal_into(ready: &mut VecDeque<Push>, open: &mut Open) {
        if open.push.entries > 0 {
            let tenant = open.push.tenant.clone();
            let full = std::mem::replace(
                &mut open.push,
                Push {
                    tenant,
                    ..Push::default()
                },
            );
            ready.push_back(full);
        }
        open.opened_at = None;
    }

    /// When the oldest open push was opened.
    fn opened_at(&self) -> Option<Deadline> {
        self.open.iter().filter_map(|o| o.opened_at).min()
    }

    /// Closes every open push (oldest first) into `ready`.
    fn seal(&mut self) {
        self.open.sort_by_key(|o| o.opened_at);
        for mut open in std::mem::take(&mut self.open) {
            Self::seal_into(&mut self.ready, &mut open);
        }
    }

    /// Closes the open pushes whose `max_wait` is over (oldest first).
    fn seal_due(&mut self, max_wait: Duration) {
        let now = Deadline::now();
        self.open.sort_by_key(|o| o.opened_at);
        for open in &mut self.open {
            if open.opened_at.is_some_and(|t| t + max_wait <= now) {
                Self::seal_into(&mut self.ready, open);
            }
        }
        // Tenants that went quiet do not keep an entry.
        self.open.retain(|o| o.push.entries > 0);
    }
}

/// The machine's variables besides the state.
struct Machine {
    state: State,
    batcher: Batcher,
    /// Loki's next allowed attempt (Retry-After or back-off), shared by live sends and replay.
    loki_at: Deadline,
    loki_backoff: Backoff,
    /// Next allowed buffer read/consume or dead-letter append after an I/O failure.
    disk_at: Deadline,
    disk_backoff: Backoff,
    /// Next allowed buffer append after an I/O failure (kept apart so that replay, which
    /// frees room, goes on while appends fail, e.g. with ENOSPC).
    append_at: Deadline,
    append_backoff: Backoff,
    /// The buffer refused an append as full; set again only after a record was consumed.
    buffer_full: bool,
    replay_head: Option<ReplayHead>,
    /// Draining: Loki failed, the rest goes straight to the buffer.
    loki_failing: bool,
    /// Draining: a push was left unacknowledged, so every later one is too (had a later one
    /// gone to the buffer, the restart would read its lines again and replay them as well).
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

    pub async fn run(mut self) {
        self.metrics.init_sink(SINK, true);
        self.metrics
            .buffer_max_bytes
            .get_or_create(&Self::labels())
            .set(i64::try_from(self.config.buffer.max_bytes.0).unwrap_or(i64::MAX));
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
            replay_head: None,
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
        if let Some(ReplayHead::Delivered(id)) = m.replay_head {
            // A last try, so that the restart does not send this record again.
            if let Ok(Err(e)) | Err(e) = self
                .buffer
                .with(move |s| s.consume(id))
                .await
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
                let replay = Self::replay_due(m);
                if head.is_some_and(|p| self.can_queue_behind(m, p)) {
                    return Due::At(replay.min(m.append_at));
                }
                Due::At(replay)
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

    /// When the oldest buffer record may be worked on: a delivered or rejected one only waits
    /// for the disk, one to send also for Loki.
    fn replay_due(m: &Machine) -> Deadline {
        match m.replay_head {
            Some(_) => m.disk_at,
            None => m.loki_at.max(m.disk_at),
        }
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

    async fn step_sending(&self, m: &mut Machine) {
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
                head.rejected = Some((status, body));
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

    fn start_spilling(&self, m: &mut Machine, head: Push) {
        // Try the buffer again, even if it was full some time ago.
        m.buffer_full = false;
        m.state = State::Spilling;
        m.batcher.ready.push_front(head);
    }

    async fn step_spilling(&self, m: &mut Machine) {
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

    async fn step_replaying(&self, m: &mut Machine) {
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
        if now < Self::replay_due(m) {
            // Woken for the append timer only.
            return;
        }
        self.replay_one(m).await;
        self.update_buffer_gauges();
        if self.buffered() == 0 {
            m.state = State::Sending;
        }
    }

    async fn step_draining(&self, m: &mut Machine) {
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
                reason: "timeout",
                detail: "shutdown grace over".to_string(),
                retry_after: None,
            }));
            if self.abandon.is_cancelled() && sent.is_err() {
                return self.abandon(m, &head, "pipeline.shutdown_timeout ran out");
            }
            match sent {
                Ok(()) => return self.done(head),
                Err(SendError::Rejected { status, body }) => {
                    head.rejected = Some((status, body));
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
    fn abandon(&self, m: &mut Machine, push: &Push, why: &str) {
        m.abandoning = true;
        error!(
            sink = SINK,
            entries = push.entries,
            "shutdown: {why}; these lines are not acknowledged and will be read again after restart"
        );
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

    /// The push's request body, encoded once. If the configured encoding fails (a compression
    /// bug), the push goes as plain JSON instead, counted and logged, so that its containers'
    /// checkpoints do not stop for the rest of the run.
    fn encoded(&self, push: &mut Push) -> EncodedBatch {
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
                    .get_or_create(&Self::reason("encode"))
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
    fn done(&self, push: Push) {
        for part in push.parts {
            if part.tracked.parts_left.fetch_sub(1, Ordering::AcqRel) == 1 {
                let d = &part.tracked.delivery;
                self.ledger.complete(&d.batch.container.id, d.seq);
                self.status.finished(d.charged_bytes());
            }
        }
    }

    fn count_modified(&self, m: Modified) {
        for (reason, n) in [
            ("truncated", m.truncated),
            ("split", m.split),
            ("label_value_cut", m.label_values_cut),
            ("label_invalid", m.labels_invalid),
        ] {
            if n > 0 {
                self.metrics
                    .sink_lines_modified
                    .get_or_create(&Self::reason(reason))
                    .inc_by(n);
            }
        }
    }

    /// One push to Loki, with its metrics and log.
    async fn send_once(
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
                    .get_or_create(&Self::reason(reason))
                    .inc();
                let failing_for = failing_since.unwrap_or(sent_at).elapsed();
                warn!(sink = SINK, reason, error = %detail, ?failing_for, "Loki push failed; retrying");
            }
        }
        result
    }

    /// Appends a rejected push to the dead-letter store; true when durable.
    async fn retry_dead_letter(&self, m: &mut Machine, push: &mut Push) -> bool {
        let Some((status, body)) = push.rejected.clone() else {
            return true;
        };
        let batch = self.encoded(push);
        let ok = self.dead_letter(&batch, status, &body).await;
        if ok {
            self.disk_ok(m);
        } else {
            self.disk_failed(m);
        }
        ok
    }

    /// Keeps a batch Loki rejected (400/413) with its answer. True once it is durable; false
    /// when the store could not take it: the caller keeps the batch unacknowledged and retries.
    async fn dead_letter(&self, batch: &EncodedBatch, status: u16, body: &str) -> bool {
        let reason = format!("{status}: {body}");
        let record = encode_record(
            &RecordHeader::for_batch(batch, Some(reason.clone())),
            &batch.body,
        );
        match self.dead_letters.append(record).await {
            Ok(id) => {
                self.status.recovered(DEAD_LETTER_FAILURE);
                self.status.set_dead_letters(self.dead_letters.pending().0);
                let label = if status == 413 { "413" } else { "400" };
                self.metrics
                    .dead_letters
                    .get_or_create(&Self::reason(label))
                    .inc();
                warn!(sink = SINK, %id, entries = batch.entries, %reason, "Loki rejected a batch; kept as a dead letter (see `log-capturer dlq list`)");
                true
            }
            Err(e) => {
                self.status
                    .failed(DEAD_LETTER_FAILURE, &format!("dead-letter store: {e}"));
                self.metrics
                    .sink_failures
                    .get_or_create(&Self::reason("dead_letter"))
                    .inc();
                error!(sink = SINK, error = %e, entries = batch.entries, %reason,
                    "Loki rejected a batch and the dead-letter store cannot keep it; the batch waits (not acknowledged) and the append is retried");
                false
            }
        }
    }

    /// Appends a push to the on-disk buffer; true when durable.
    async fn spill(&self, m: &mut Machine, push: &mut Push) -> bool {
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
                self.metrics
                    .buffer_full
                    .get_or_create(&Self::labels())
                    .inc();
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
                self.metrics
                    .buffer_full
                    .get_or_create(&Self::labels())
                    .inc();
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
                    .get_or_create(&Self::reason("append"))
                    .inc();
                error!(sink = SINK, error = %e, "cannot write the on-disk buffer; retrying");
                false
            }
        }
    }

    /// Replays (or finishes replaying) the oldest buffer record.
    async fn replay_one(&self, m: &mut Machine) {
        let peeked = self.buffer.with(|s| s.peek()).await;
        let (id, bytes) = match peeked {
            Ok(Ok(Some(x))) => x,
            Ok(Ok(None)) => return,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
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
                m.replay_head = None;
                m.buffer_full = false;
                if skipped == 0 {
                    // Nothing could be skipped (should not happen): do not retry at once.
                    self.disk_failed(m);
                }
                return;
            }
            Ok(Err(e)) => {
                self.buffer_error(m, "read", &e.to_string());
                return;
            }
            Err(e) => {
                self.buffer_error(m, "read", &e);
                return;
            }
        };
        if !matches!(m.replay_head, Some(ReplayHead::Delivered(rid)) if rid == id) {
            let done = match decode_record(&bytes) {
                Ok((header, body)) => self.replay_send(m, id, header, body).await,
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
            m.replay_head = Some(ReplayHead::Delivered(id));
        }
        match self.buffer.with(move |s| s.consume(id)).await {
            Ok(Ok(())) => {
                m.replay_head = None;
                m.buffer_full = false;
                self.disk_ok(m);
            }
            Ok(Err(e)) => self.buffer_error(m, "consume", &e.to_string()),
            Err(e) => self.buffer_error(m, "consume", &e),
        }
    }

    /// Sends a buffer record (or dead-letters it if Loki rejected it); true when done with Loki.
    async fn replay_send(
        &self,
        m: &mut Machine,
        id: RecordId,
        header: RecordHeader,
        body: Vec<u8>,
    ) -> bool {
        let batch = header.to_batch(body);
        let rejected = match m.replay_head.take() {
            Some(ReplayHead::Rejected(rid, status, answer)) if rid == id => Some((status, answer)),
            _ => None,
        };
        let (status, answer) = match rejected {
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
                    Err(SendError::Rejected { status, body }) => (status, body),
                }
            }
        };
        if self.dead_letter(&batch, status, &answer).await {
            self.disk_ok(m);
            true
        } else {
            self.disk_failed(m);
            m.replay_head = Some(ReplayHead::Rejected(id, status, answer));
            false
        }
    }

    fn buffer_error(&self, m: &mut Machine, op: &'static str, e: &str) {
        self.disk_failed(m);
        self.metrics
            .buffer_errors
            .get_or_create(&Self::reason(op))
            .inc();
        let what = if op == "consume" {
            "cannot advance the on-disk buffer past a delivered batch; retrying (it is not sent again)"
        } else {
            "cannot read the on-disk buffer; retrying"
        };
        error!(sink = SINK, op, error = %e, "{what}");
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
mod tests {
    use super::*;
    use crate::capture::Cursor;
    use crate::checkpoint::CheckpointStore;
    use crate::pipeline::{Batch, ContainerMeta, LogLine, QueueBudget, StreamKind};
    use bytes::Bytes;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // `pub(super)`: also used by `file_tests`.
    pub(super) struct Harness {
        pub(super) worker: Option<LokiWorker>,
        pub(super) ledger: Arc<AckLedger>,
        pub(super) metrics: Arc<Metrics>,
        pub(super) shutdown: CancellationToken,
        abandon: CancellationToken,
        pub(super) buffer: SharedStore,
        pub(super) tx: mpsc::UnboundedSender<Arc<Delivery>>,
        pub(super) checkpoints: Arc<CheckpointStore>,
        pub(super) budget: QueueBudget,
        _dir: tempfile::TempDir,
    }

    fn harness(url: &str, max_entries: usize) -> Harness {
        harness_with(url, max_entries, |_| {})
    }

    pub(super) fn harness_with(
        url: &str,
        max_entries: usize,
        tweak: impl FnOnce(&mut LokiSinkConfig),
    ) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let checkpoints = Arc::new(
            CheckpointStore::open(&dir.path().join("cp"), Arc::clone(&metrics)).expect("cp"),
        );
        let mut config = LokiSinkConfig {
            url: url.to_string(),
            ..LokiSinkConfig::default()
        };
        config.batch.max_entries = max_entries;
        config.batch.max_wait = crate::config::HumanDuration(Duration::from_millis(10));
        tweak(&mut config);
        let (buffer, _) = SharedStore::open(
            &dir.path().join("buffer"),
            super::super::buffer_options(&config),
        )
        .expect("buffer");
        let (dead_letters, _) =
            SharedStore::open(&dir.path().join("dlq"), super::super::dlq_options(&config))
                .expect("dlq");
        let (tx, input) = mpsc::unbounded_channel();
        let ledger = Arc::new(AckLedger::new(1, Arc::clone(&checkpoints)));
        let shutdown = CancellationToken::new();
        let abandon = CancellationToken::new();
        let worker = LokiWorker {
            input,
            ledger: Arc::clone(&ledger),
            metrics: Arc::clone(&metrics),
            encoder: Encoder::new(&config),
            client: LokiClient::new(&config).expect("client"),
            buffer,
            dead_letters,
            config,
            shutdown: shutdown.clone(),
            abandon: abandon.clone(),
            status: Arc::new(SinkStatus::new(SINK, true)),
        };
        Harness {
            buffer: worker.buffer.clone(),
            worker: Some(worker),
            ledger,
            metrics: Arc::clone(&metrics),
            shutdown,
            abandon,
            tx,
            checkpoints,
            budget: QueueBudget::new(1 << 20, metrics),
            _dir: dir,
        }
    }

    impl Harness {
        pub(super) fn worker(&self) -> &LokiWorker {
            self.worker.as_ref().expect("worker not started")
        }

        pub(super) fn start(&mut self) -> tokio::task::JoinHandle<()> {
            let worker = self.worker.take().expect("worker not started");
            tokio::spawn(worker.run())
        }

        pub(super) async fn stop(self, task: tokio::task::JoinHandle<()>) {
            self.shutdown.cancel();
            drop(self.tx);
            task.await.expect("worker");
        }
    }

    /// A delivery of `n` lines stamped 1..=n, registered in the ledger as `seq`.
    async fn delivery(h: &Harness, seq: u64, n: usize) -> Arc<Delivery> {
        delivery_with(h, seq, n, |_, _| {}).await
    }

    /// Like [`delivery`], with `edit(i, line)` applied to each line.
    async fn delivery_with(
        h: &Harness,
        seq: u64,
        n: usize,
        edit: impl Fn(usize, &mut LogLine),
    ) -> Arc<Delivery> {
        let meta = Arc::new(ContainerMeta::new(
            "c1".into(),
            "web".into(),
            "img".into(),
            None,
            None,
        ));
        let lines = (1..=n)
            .map(|i| {
                let mut line = LogLine {
                    ts_ns: i as i64,
                    stream: StreamKind::Stdout,
                    message: Bytes::from(format!("line {i}")),
                    truncated: false,
                    extra: None,
                };
                edit(i, &mut line);
                line
            })
            .collect();
        let cursor = Cursor::legacy(n as i64, 1);
        let permit = h.budget.acquire(1, 1).await.expect("permit");
        let mut d = Delivery::new(
            Batch {
                container: meta,
                lines,
                position: cursor.into(),
            },
            permit,
        );
        d.seq = seq;
        if n > 0 {
            h.checkpoints.init("c1", Cursor::at(0));
            h.ledger.register("c1", seq, cursor);
        }
        Arc::new(d)
    }

    pub(super) type Seen = Arc<Mutex<Vec<(String, Vec<u8>, String)>>>;

    /// A Loki that answers 204 to everything and records (content type, body, X-Scope-OrgID)
    /// per request.
    async fn accepting_loki() -> (String, Seen) {
        answering_loki(Arc::new(std::sync::atomic::AtomicU16::new(204))).await
    }

    /// A Loki that answers each request with the status `answer` holds then (a short text
    /// body unless 204) and records (content type, body, X-Scope-OrgID) per request.
    pub(super) async fn answering_loki(
        answer: Arc<std::sync::atomic::AtomicU16>,
    ) -> (String, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/loki/api/v1/push",
            listener.local_addr().expect("addr")
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                let status = Arc::clone(&answer);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            let mut chunk = [0u8; 4096];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let header = |name: &str| {
                            head.lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.trim()
                                        .eq_ignore_ascii_case(name)
                                        .then(|| v.trim().to_string())
                                })
                                .unwrap_or_default()
                        };
                        let len: usize = header("content-length").parse().unwrap_or(0);
                        while buf.len() < end + 4 + len {
                            let mut chunk = [0u8; 4096];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body = buf[end + 4..end + 4 + len].to_vec();
                        buf.drain(..end + 4 + len);
                        if let Ok(mut seen) = record.lock() {
                            seen.push((header("content-type"), body, header("x-scope-orgid")));
                        }
                        let answer = match status.load(std::sync::atomic::Ordering::SeqCst) {
                            204 => "HTTP/1.1 204 No Content\r\n\r\n".to_string(),
                            code => format!(
                                "HTTP/1.1 {code} Test\r\ncontent-length: 14\r\n\r\nanswer by test"
                            ),
                        };
                        if conn.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, seen)
    }

    async fn wait_acked(h: &Harness, ts_ns: i64) -> bool {
        for _ in 0..500 {
            if h.checkpoints
                .get("c1")
                .is_some_and(|c| c.streams.stdout.timestamp_ns == ts_ns)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Issue 9 item 12: a batch whose configured encoding fails goes as plain JSON (counted),
    /// and is acknowledged, so the container's checkpoint keeps moving.
    /// `pipeline.shutdown_timeout` ran out while Loki hangs: the push under way is dropped and
    /// every push not yet done is abandoned, not buffered, so that nothing is acknowledged or
    /// buffered after the agent's final checkpoint write (a buffered batch that is also read
    /// again would be delivered twice).
    #[tokio::test]
    async fn abandon_at_the_deadline_buffers_and_acknowledges_nothing_more() {
        // A Loki that takes connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/loki/api/v1/push",
            listener.local_addr().expect("addr")
        );
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                open.push(conn);
            }
        });
        let mut h = harness(&url, 2);
        let d1 = delivery(&h, 1, 2).await;
        let d2 = delivery(&h, 2, 2).await;
        h.tx.send(d1).expect("send");
        h.tx.send(d2).expect("send");
        // Shut down at once: the worker drains, and its first live attempt hangs.
        h.shutdown.cancel();
        let task = h.start();
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.abandon.cancel();
        drop(h.tx);
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the worker ends once abandoned")
            .expect("worker");
        assert_eq!(h.ledger.unacknowledged(), 2, "nothing acknowledged");
        hold.abort();
        let (records, _) = h.buffer.pending();
        assert_eq!(records, 0, "nothing buffered after the deadline");
    }

    #[tokio::test]
    async fn unencodable_batch_goes_as_plain_json_and_is_acknowledged() {
        let (url, seen) = accepting_loki().await;
        let mut h = harness(&url, 100);
        if let Some(w) = h.worker.as_mut() {
            w.encoder.fail_for_test = true;
        }
        let d = delivery(&h, 1, 3).await;
        h.tx.send(d).expect("send");
        let task = h.start();
        assert!(wait_acked(&h, 3).await, "not acknowledged");
        let requests = seen.lock().expect("seen").clone();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].0, "application/json");
        let body: serde_json::Value = serde_json::from_slice(&requests[0].1).expect("json");
        assert_eq!(body["streams"][0]["values"][2][1], "line 3");
        assert_eq!(
            h.metrics
                .sink_failures
                .get_or_create(&LokiWorker::reason("encode"))
                .get(),
            1
        );
        h.stop(task).await;
    }

    /// Deliveries without lines (end-of-stream markers) are ignored: no push, nothing to ack.
    #[tokio::test]
    async fn delivery_without_lines_is_ignored() {
        let (url, seen) = accepting_loki().await;
        let mut h = harness(&url, 100);
        let empty = delivery(&h, 7, 0).await;
        h.tx.send(empty).expect("send");
        let d = delivery(&h, 8, 2).await;
        let task = h.start();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            seen.lock().expect("seen").is_empty(),
            "an empty push was sent"
        );
        h.tx.send(d).expect("send");
        assert!(wait_acked(&h, 2).await, "not acknowledged");
        assert_eq!(seen.lock().expect("seen").len(), 1);
        h.stop(task).await;
    }

    /// Issue 9 item 10: a delivery larger than `max_entries` is cut across pushes, and it is
    /// acknowledged only when every one of them is done.
    #[tokio::test]
    async fn split_delivery_is_acknowledged_when_all_parts_are_done() {
        let h = harness("http://127.0.0.1:9/loki/api/v1/push", 2);
        let mut batcher = Batcher::new(2, 1 << 20);
        batcher.add(delivery(&h, 1, 5).await, &h.worker().encoder);
        batcher.seal();
        let pushes: Vec<Push> = batcher.ready.drain(..).collect();
        assert_eq!(
            pushes.iter().map(|p| p.entries).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        let mut pushes = pushes.into_iter();
        for push in pushes.by_ref().take(2) {
            h.worker().done(push);
            assert_eq!(
                h.checkpoints.get("c1"),
                Some(Cursor::at(0)),
                "acknowledged early"
            );
        }
        for push in pushes {
            h.worker().done(push);
        }
        assert_eq!(
            h.checkpoints
                .get("c1")
                .map(|c| c.streams.stdout.timestamp_ns),
            Some(5)
        );
    }

    /// The lines of a protobuf push body, by stream.
    fn pushed_lines(body: &[u8]) -> Vec<String> {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(body)
            .expect("snappy");
        let req: super::super::proto::PushRequest =
            prost::Message::decode(raw.as_slice()).expect("protobuf");
        req.streams
            .into_iter()
            .flat_map(|s| s.entries.into_iter().map(|e| e.line))
            .collect()
    }

    /// Issue 12: one delivery holding records of two tenants and records without one goes out
    /// as one push per tenant, each with its X-Scope-OrgID (the sink's `tenant` for records
    /// without one), and is acknowledged once all of them are accepted.
    #[tokio::test]
    async fn pushes_are_grouped_per_tenant() {
        let (url, seen) = accepting_loki().await;
        let mut h = harness_with(&url, 100, |c| c.tenant = "sink-t".into());
        let tenants = [None, Some("a"), None, Some("b"), Some("a"), Some("b")];
        let d = delivery_with(&h, 1, tenants.len(), |i, line| {
            if let Some(t) = tenants[i - 1] {
                line.extra_mut().tenant = Some(t.into());
            }
        })
        .await;
        h.tx.send(d).expect("send");
        let task = h.start();
        assert!(wait_acked(&h, 6).await, "not acknowledged");
        let mut pushes: Vec<(String, Vec<String>)> = seen
            .lock()
            .expect("seen")
            .iter()
            .map(|(_, body, tenant)| (tenant.clone(), pushed_lines(body)))
            .collect();
        pushes.sort();
        assert_eq!(
            pushes,
            [
                (
                    "a".to_string(),
                    vec!["line 2".to_string(), "line 5".to_string()]
                ),
                (
                    "b".to_string(),
                    vec!["line 4".to_string(), "line 6".to_string()]
                ),
                (
                    "sink-t".to_string(),
                    vec!["line 1".to_string(), "line 3".to_string()]
                ),
            ]
        );
        h.stop(task).await;
    }

    /// A push with its own tenant, in the on-disk buffer, is replayed with that tenant; one
    /// without (as written before tenants existed) with the sink's.
    #[tokio::test]
    async fn buffer_replay_keeps_the_tenant() {
        let (url, seen) = accepting_loki().await;
        let mut h = harness_with(&url, 100, |c| c.tenant = "sink-t".into());
        for (ts, tenant) in [(1, Some("t9")), (2, None)] {
            let d = delivery_with(&h, ts as u64, 1, |_, line| line.ts_ns = ts).await;
            let slices = [Slice::whole(&d)];
            let (mut batch, _) = h.worker().encoder.encode_slices(&slices).expect("encode");
            batch.tenant = tenant.map(str::to_string);
            let record = encode_record(&RecordHeader::for_batch(&batch, None), &batch.body);
            h.buffer.append(record).await.expect("append");
        }
        let task = h.start();
        for _ in 0..500 {
            if h.buffer.pending().0 == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(h.buffer.pending().0, 0, "buffer not replayed");
        let tenants: Vec<String> = seen
            .lock()
            .expect("seen")
            .iter()
            .map(|(_, _, t)| t.clone())
            .collect();
        assert_eq!(tenants, ["t9", "sink-t"]);
        h.stop(task).await;
    }
}
