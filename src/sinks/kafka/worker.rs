//! The Kafka sink's worker.
//!
//! - **Acknowledgement.** A delivery is completed in the ledger (`ledger.complete(container,
//!   seq)`) only when every one of its lines is done: acknowledged by the broker (delivery
//!   report without error), durably in the on-disk buffer, or durably a dead letter.
//! - **Order.** Messages with the same key (one container by default) reach their partition in
//!   capture order: the idempotent producer keeps order across its own retries; while the
//!   buffer holds anything, new messages queue behind it (as in the Loki worker).
//! - **Retriable errors** (broker down, timeouts, leader changes) are retried without limit by
//!   librdkafka (`message.timeout.ms=0`).
//! - **Permanent errors per message** (larger than `message_max_bytes`: never produced;
//!   refused by the broker as too large or invalid, see [`producer::Failure::is_permanent`])
//!   → dead letters, and delivery goes on. A failed dead-letter append is retried with
//!   back-off; the message is not produced again.
//! - **Shutdown** as the Loki worker: a short grace for what is in memory, the rest to the
//!   buffer; at `abandon`, nothing more is acknowledged, buffered or dead-lettered.
//!
//! # Modes
//!
//! ```text
//!            outstanding, no delivery report Ok for spill_after (or a delivery error)
//!   Live ------------------------------------------------------------> Quiesce
//!    ^                                                                    |
//!    | buffer empty, no replay                      nothing outstanding:  |
//!    |                                              purged + waiting      |
//!  Buffered <-------------------------------------- messages → buffer ----+
//! ```
//!
//! - **Live**: messages are produced as they come (librdkafka's queue full: wait for reports).
//! - **Quiesce**: nothing new is produced; librdkafka's queue (not what is in flight: purging
//!   that could still deliver it, a duplicate) is purged, again every [`PURGE_EVERY`] while
//!   anything is outstanding. The purged messages, sorted back into capture order (delivery,
//!   line), go before those waiting; then → Buffered. A fatal producer error also quiesces
//!   (purging everything), then the producer is recreated (after a back-off) and what came
//!   back is produced again (possibly-persisted ones counted as possible duplicates).
//! - **Buffered** (the buffer holds records, also at start-up): waiting messages are appended
//!   behind the buffer (the ordering rule; buffer full or failing: they wait in memory and
//!   capture pauses through the queue budget); the oldest record is replayed: produced, all
//!   reports waited for, refused ones dead-lettered, then consumed (a record delivered but not
//!   consumed is not produced again). Buffer empty and no replay → Live.
//! - **Draining** (shutdown token or input closed; a flag over the modes): Live gets
//!   [`SHUTDOWN_GRACE`] if Kafka was healthy, then quiesces; nothing is replayed; waiting
//!   messages go to the buffer. A failed append stops the drain: those lines and everything
//!   after stay unacknowledged (read again after the restart; none of them also in the buffer).

mod produce;
mod producer;
mod reports;
mod state;
mod stores;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::encode::MessageEncoder;
use crate::backoff::Backoff;
use crate::buffer::SharedStore;
use crate::config::KafkaSinkConfig;
use crate::observability::metrics::{Metrics, SinkLabels, SinkReasonLabels};
use crate::observability::status::SinkStatus;
use crate::pipeline::{AckLedger, Delivery};
use producer::{Event, KafkaProducer};
use state::{Deliveries, Item, Slots};
use stores::{DeadLetter, Replay};

const SINK: &str = super::SINK;
/// At shutdown, what is in memory gets this long to be delivered (when Kafka was healthy).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// While quiescing, librdkafka's queue is purged again this often (messages coming back from
/// failed requests land in it).
const PURGE_EVERY: Duration = Duration::from_millis(200);
/// Messages produced per turn of the loop before reports and input are looked at again.
const PRODUCE_BURST: usize = 20_000;
/// Wait after librdkafka said its queue is full, if no report comes first.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(50);

/// Failure kinds on the status board.
const SEND_FAILURE: &str = "send";
const DEAD_LETTER_FAILURE: &str = "dead_letter";
const PRODUCER_FAILURE: &str = "producer";

pub struct KafkaWorker {
    pub input: mpsc::UnboundedReceiver<Arc<Delivery>>,
    pub ledger: Arc<AckLedger>,
    pub metrics: Arc<Metrics>,
    pub encoder: MessageEncoder,
    /// From [`super::client_config::client_config`]; the worker adds its own properties.
    pub client: rdkafka::ClientConfig,
    pub buffer: SharedStore,
    pub dead_letters: SharedStore,
    pub config: KafkaSinkConfig,
    pub shutdown: CancellationToken,
    /// Cancelled when `pipeline.shutdown_timeout` ran out: nothing is acknowledged, buffered
    /// or dead-lettered after it; the worker exits.
    pub abandon: CancellationToken,
    /// This sink's entry on the status board (`GET /api/v1/sinks`).
    pub status: Arc<SinkStatus>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Live,
    Quiesce,
    Buffered,
}

struct Machine {
    mode: Mode,
    draining: bool,
    grace_until: Instant,
    /// Draining: a line could not be kept; everything left stays unacknowledged.
    abandoning: bool,
    deliveries: Deliveries,
    /// Messages not produced or buffered yet, in capture order.
    waiting: VecDeque<Item>,
    slots: Slots,
    /// Quiesce: live messages that came back (purged or failed).
    spilled: Vec<Item>,
    /// Quiesce ends in Buffered (a spill), not back in Live.
    spill: bool,
    dead: VecDeque<DeadLetter>,
    replay: Option<Replay>,
    producer: Option<KafkaProducer>,
    /// A fatal error: the producer is closed and created again once nothing is outstanding.
    recreate: bool,
    producer_at: Instant,
    producer_backoff: Backoff,
    queue_full: bool,
    /// The last delivery report Ok, or when something became outstanding after none was.
    last_progress: Instant,
    /// Kafka failed (spill or error) and has not delivered since.
    failing: bool,
    /// Acknowledged messages not yet counted in the metrics.
    acked: u64,
    purge_at: Instant,
    append_at: Instant,
    append_backoff: Backoff,
    buffer_full: bool,
    /// The buffer refused a many-message record as too large: append one message at a time.
    chunk_one: bool,
    /// Next replay read/consume or dead-letter append after an I/O failure.
    disk_at: Instant,
    disk_backoff: Backoff,
    /// Next replay attempt after one did not get through.
    replay_at: Instant,
    replay_backoff: Backoff,
}

impl Machine {
    /// Nothing left to do for what was received.
    fn idle(&self) -> bool {
        self.waiting.is_empty()
            && self.slots.is_empty()
            && self.spilled.is_empty()
            && self.dead.is_empty()
            && self.replay.is_none()
            && self.mode != Mode::Quiesce
    }
}

impl KafkaWorker {
    fn labels() -> SinkLabels {
        SinkLabels { sink: SINK }
    }

    fn reason(reason: &'static str) -> SinkReasonLabels {
        SinkReasonLabels { sink: SINK, reason }
    }

    /// Counts `n` messages failed for `reason`.
    fn failed(&self, reason: &'static str, n: u64) {
        self.metrics
            .kafka
            .failed
            .get_or_create(&crate::observability::metrics::ReasonLabels { reason })
            .inc_by(n);
    }

    fn sink_failure(&self, reason: &'static str) {
        self.metrics
            .sink_failures
            .get_or_create(&Self::reason(reason))
            .inc();
    }

    fn buffered(&self) -> u64 {
        self.buffer.pending().0
    }

    /// Runs until the input closes or the shutdown token is cancelled (then drains).
    pub async fn run(mut self) {
        self.metrics.init_sink(SINK, true);
        self.metrics
            .buffer_max_bytes
            .get_or_create(&Self::labels())
            .set(i64::try_from(self.config.buffer.max_bytes.0).unwrap_or(i64::MAX));
        self.update_buffer_gauges();
        self.status.set_dead_letters(self.dead_letters.pending().0);
        let retry = (self.config.retry.initial.0, self.config.retry.max.0);
        let now = Instant::now();
        let mut m = Machine {
            mode: if self.buffered() > 0 {
                Mode::Buffered
            } else {
                Mode::Live
            },
            draining: false,
            grace_until: now,
            abandoning: false,
            deliveries: Deliveries::default(),
            waiting: VecDeque::new(),
            slots: Slots::default(),
            spilled: Vec::new(),
            spill: false,
            dead: VecDeque::new(),
            replay: None,
            producer: None,
            recreate: false,
            producer_at: now,
            producer_backoff: Backoff::new(retry.0, retry.1),
            queue_full: false,
            last_progress: now,
            failing: false,
            acked: 0,
            purge_at: now,
            append_at: now,
            append_backoff: Backoff::new(retry.0, retry.1),
            buffer_full: false,
            chunk_one: false,
            disk_at: now,
            disk_backoff: Backoff::new(retry.0, retry.1),
            replay_at: now,
            replay_backoff: Backoff::new(retry.0, retry.1),
        };
        if m.mode == Mode::Buffered {
            info!(
                sink = SINK,
                records = self.buffered(),
                "the on-disk buffer holds records from an earlier run; replaying them first"
            );
        }
        let (tx, mut events) = mpsc::unbounded_channel();
        let mut got = Vec::with_capacity(4096);
        let mut input_open = true;
        loop {
            if self.abandon.is_cancelled() {
                self.abandon_rest(&m, "pipeline.shutdown_timeout ran out");
                break;
            }
            while input_open {
                match self.input.try_recv() {
                    Ok(d) => self.take(&mut m, d),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => input_open = false,
                }
            }
            for _ in 0..100_000 {
                match events.try_recv() {
                    Ok(ev) => self.on_event(&mut m, ev),
                    Err(_) => break,
                }
            }
            self.ensure_producer(&mut m, &tx);
            self.flush_counts(&mut m);
            if (self.shutdown.is_cancelled() || !input_open) && !m.draining {
                self.start_draining(&mut m);
            }
            if m.abandoning {
                break;
            }
            self.advance(&mut m);
            if self.disk_step(&mut m).await {
                continue;
            }
            if m.abandoning || (m.draining && !input_open && m.idle()) {
                break;
            }
            self.metrics.kafka.in_flight.set(m.slots.len() as i64);
            let wake = self.next_wake(&m);
            tokio::select! {
                biased;
                _ = self.abandon.cancelled() => {}
                n = events.recv_many(&mut got, 4096) => {
                    if n > 0 {
                        for ev in got.drain(..) {
                            self.on_event(&mut m, ev);
                        }
                    }
                }
                d = self.input.recv(), if input_open => match d {
                    Some(d) => self.take(&mut m, d),
                    None => input_open = false,
                },
                _ = sleep_until(wake) => {}
                _ = self.shutdown.cancelled(), if !m.draining => {}
            }
        }
        if let Some(p) = m.producer.take() {
            p.close().await;
        }
        self.metrics.kafka.in_flight.set(0);
        self.update_buffer_gauges();
        let records = self.buffered();
        if records > 0 {
            info!(
                sink = SINK,
                records,
                "records left in the on-disk buffer; they are produced after the next start"
            );
        }
    }

    fn start_draining(&self, m: &mut Machine) {
        m.draining = true;
        let healthy = m.mode == Mode::Live && !m.failing && m.producer.is_some();
        m.grace_until = Instant::now()
            + if healthy {
                SHUTDOWN_GRACE
            } else {
                Duration::ZERO
            };
        info!(
            sink = SINK,
            mode = ?m.mode,
            waiting = m.waiting.len(),
            in_flight = m.slots.len(),
            healthy,
            "shutting down: draining"
        );
    }

    /// Stops producing live: purges librdkafka's queue; what comes back goes to the buffer.
    fn start_quiesce(&self, m: &mut Machine) {
        m.mode = Mode::Quiesce;
        m.spill = true;
        if let Some(p) = &m.producer {
            p.purge_queue();
        }
        m.purge_at = Instant::now() + PURGE_EVERY;
    }

    fn ensure_producer(&self, m: &mut Machine, tx: &mpsc::UnboundedSender<Event>) {
        if m.producer.is_some() || m.recreate || Instant::now() < m.producer_at {
            return;
        }
        match KafkaProducer::create(&self.client, tx.clone(), self.metrics.kafka.clone()) {
            Ok(p) => {
                m.producer = Some(p);
                m.producer_backoff.reset();
                self.status.recovered(PRODUCER_FAILURE);
            }
            Err(e) => {
                self.sink_failure("producer");
                self.status.failed(
                    PRODUCER_FAILURE,
                    &format!("cannot create the producer: {e}"),
                );
                error!(sink = SINK, error = %e, "cannot create the Kafka producer; retrying");
                m.producer_at = Instant::now() + m.producer_backoff.next_delay();
            }
        }
    }

    /// The synchronous part of a turn: produce, watch for the spill, end a quiesce.
    fn advance(&self, m: &mut Machine) {
        let now = Instant::now();
        if m.draining
            && m.mode == Mode::Live
            && now >= m.grace_until
            && (!m.waiting.is_empty() || !m.slots.is_empty())
        {
            info!(
                sink = SINK,
                "shutdown grace over: what is left goes to the on-disk buffer"
            );
            self.start_quiesce(m);
        }
        match m.mode {
            Mode::Live => {
                let spill_after = self.config.buffer.spill_after.0;
                if !m.slots.is_empty() && now >= m.last_progress + spill_after {
                    self.failed("timeout", 1);
                    self.sink_failure("timeout");
                    m.failing = true;
                    let text = format!(
                        "no delivery acknowledged for {spill_after:?} with {} messages outstanding",
                        m.slots.len()
                    );
                    self.status.failed(SEND_FAILURE, &text);
                    warn!(sink = SINK, "{text}; spilling to the on-disk buffer");
                    self.start_quiesce(m);
                    return;
                }
                self.produce_waiting(m);
            }
            Mode::Quiesce => {
                if !m.slots.is_empty() {
                    if now >= m.purge_at {
                        if let Some(p) = &m.producer {
                            if m.recreate {
                                p.purge_all();
                            } else {
                                p.purge_queue();
                            }
                        }
                        m.purge_at = now + PURGE_EVERY;
                    }
                    return;
                }
                if m.recreate {
                    // The async step closes the producer first.
                    return;
                }
                let mut back = std::mem::take(&mut m.spilled);
                back.sort_unstable_by_key(|i| (i.dix, i.line));
                let n = back.len();
                back.extend(m.waiting.drain(..));
                m.waiting = back.into();
                if m.spill || self.buffered() > 0 {
                    info!(
                        sink = SINK,
                        taken_back = n,
                        waiting = m.waiting.len(),
                        "producing stopped; messages go to the on-disk buffer"
                    );
                    m.mode = Mode::Buffered;
                    m.buffer_full = false;
                    m.chunk_one = false;
                } else {
                    m.mode = Mode::Live;
                    m.last_progress = now;
                }
                m.spill = false;
            }
            Mode::Buffered => {
                if m.draining {
                    if let Some(rp) = &m.replay {
                        if rp.outstanding > 0 && now >= m.purge_at {
                            if let Some(p) = &m.producer {
                                p.purge_queue();
                            }
                            m.purge_at = now + PURGE_EVERY;
                        } else if rp.outstanding == 0 && !rp.complete() {
                            // Not replayed now; the record stays for the next start.
                            m.replay = None;
                        }
                    }
                } else if now >= m.replay_at {
                    self.produce_replay(m);
                }
                // Buffer empty: live again, unless waiting messages can still go to the buffer
                // (always their way when draining).
                if self.buffered() == 0
                    && m.replay.is_none()
                    && (m.waiting.is_empty() || (!m.draining && !self.can_append(m, now)))
                {
                    if !m.waiting.is_empty() || m.failing {
                        info!(sink = SINK, "on-disk buffer empty: producing live again");
                    }
                    m.mode = Mode::Live;
                    m.last_progress = now;
                    self.produce_waiting(m);
                }
            }
        }
    }

    /// Waiting messages may be appended to the buffer now.
    fn can_append(&self, m: &Machine, now: Instant) -> bool {
        !m.buffer_full && now >= m.append_at
    }

    /// Shutdown: what is left is not acknowledged (capture reads it again after the restart).
    fn abandon_rest(&self, m: &Machine, why: &str) {
        let lines = m.waiting.len() + m.slots.live() + m.spilled.len();
        if lines > 0 || m.deliveries.len() > 0 {
            error!(
                sink = SINK,
                lines,
                deliveries = m.deliveries.len(),
                "shutdown: {why}; these lines are not acknowledged and will be read again after restart"
            );
        }
    }
}

/// Sleeps until `at` (never, for None). A past instant returns at once... after a millisecond,
/// so that a wake-up nothing acts on cannot spin.
async fn sleep_until(at: Option<Instant>) {
    match at {
        None => std::future::pending().await,
        Some(at) => {
            let floor = Instant::now() + Duration::from_millis(1);
            tokio::time::sleep_until(at.max(floor)).await
        }
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
