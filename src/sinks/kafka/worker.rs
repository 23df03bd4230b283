//! The Kafka sink's worker.
//!
//! - **Acknowledgement.** A delivery is acknowledged in the ledger (`ledger.acknowledge(container,
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
//! - **Refused requests.** librdkafka fails every message of a request the broker refused,
//!   so a refused message is first produced again *alone*: from its report on, nothing new is
//!   produced (live or replayed); once nothing is in flight, the refused messages are produced
//!   one at a time, in the order their reports came (for one partition: the order they were
//!   produced), each waiting for its report. One refused again alone is a dead letter for good
//!   (no loop); a retriable failure sends it back the usual way (spill, or its replayed
//!   record). **Order per key (partition) is kept**: a message produced after a refusal was
//!   reported never overtakes the refused one; a later message of its partition already in
//!   flight when the refusal came (a later request) may be delivered first, and then the
//!   refused message is a dead letter instead of being produced again behind it. So a refused
//!   request costs no dead letter when nothing of its partitions was in flight behind it, and
//!   at most its own messages otherwise.
//! - **Shutdown** as the Loki worker: a short grace for what is in memory, the rest to the
//!   buffer; at `abandon`, nothing more is buffered or dead-lettered (an append already under
//!   way that completes is acknowledged: the lines are kept).
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
//!   (the queue purged; in-flight requests get the request time-out to report, then are
//!   purged too), then the producer is recreated (after a back-off) and what came back is
//!   produced again (possibly-persisted ones counted as possible duplicates).
//! - **Buffered** (the buffer holds records, also at start-up): waiting messages are appended
//!   behind the buffer (the ordering rule; a partial record at most every
//!   [`stores::APPEND_LINGER`], so a trickle of deliveries makes few big records; buffer full
//!   or failing: they wait in memory and capture pauses through the queue budget). The oldest
//!   records are replayed through a window ([`replay`], bounded by messages and bytes): read
//!   ahead, produced in store order (so per key in capture order), and consumed strictly in
//!   store order as each is wholly done (delivered, or refused for good and dead-lettered);
//!   a record delivered but not consumed is not produced again. A message coming back to be
//!   produced again stops all replay producing until nothing of the window is in flight, then
//!   (after a back-off) production resumes from the oldest message not done. Buffer empty
//!   and window empty → Live.
//! - **Draining** (shutdown token or input closed; a flag over the modes): Live gets
//!   [`SHUTDOWN_GRACE`] if Kafka was healthy, then quiesces; nothing more is replayed (what is
//!   in flight is waited for, librdkafka's queue purged; records of the window not wholly done
//!   stay in the buffer, and are produced again whole after the restart: the crash window);
//!   waiting messages go to the buffer. What is still in flight [`IN_FLIGHT_GRACE`] after the
//!   grace (a broker that stopped answering) is purged too (possible duplicates, counted). A
//!   failed append, or the buffer full, stops the drain: those lines and everything after stay
//!   unacknowledged (read again after the restart; none of them also in the buffer).

mod advance;
mod produce;
mod producer;
mod replay;
mod reports;
mod state;
mod stores;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::encode::MessageEncoder;
use crate::backoff::Backoff;
use crate::buffer::SharedStore;
use crate::config::KafkaSinkConfig;
use crate::observability::metrics::{Metrics, SinkLabels, SinkReasonLabels};
use crate::observability::reasons::KafkaSinkFailureReason;
use crate::observability::status::SinkStatus;
use crate::pipeline::{AckLedger, Delivery};
use producer::{Event, KafkaProducer};
use replay::ReplayWindow;
use state::{Deliveries, Isolated, Item, Slots};
use stores::DeadLetter;

const SINK: &str = super::SINK;
/// At shutdown, what is in memory gets this long to be delivered (when Kafka was healthy).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Draining: what is in flight after the grace gets this much longer to be reported, then it
/// is purged too (a broker that stopped answering must not hold the drain until abandon).
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(1);
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
    /// Refused with their whole request: to be produced again alone, in this order.
    isolate: VecDeque<Isolated>,
    /// While isolating: per (topic, partition), the highest token delivered (not alone). An
    /// isolated message with a lower token would land behind it: a dead letter instead.
    delivered: std::collections::HashMap<(Arc<str>, i32), u64>,
    dead: VecDeque<DeadLetter>,
    replay: ReplayWindow,
    producer: Option<KafkaProducer>,
    /// A fatal error: the producer is closed and created again once nothing is outstanding.
    recreate: bool,
    /// After a fatal error, in-flight requests get until then to report before being purged.
    fatal_until: Instant,
    producer_at: Instant,
    producer_backoff: Backoff,
    queue_full: bool,
    /// Kafka failed (spill or error) and has not delivered since.
    failing: bool,
    /// Acknowledged messages not yet counted in the metrics.
    acked: u64,
    /// Read once per batch of delivery reports (for their delivery time), not per report.
    reports_at: std::time::Instant,
    purge_at: Instant,
    append_at: Instant,
    /// `append_at` is the end of [`stores::APPEND_LINGER`] (not of a back-off).
    append_lingering: bool,
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
            && self.isolate.is_empty()
            && self.dead.is_empty()
            && self.replay.is_empty()
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
    fn failed(&self, reason: KafkaSinkFailureReason, n: u64) {
        self.metrics
            .kafka
            .failed
            .get_or_create(&crate::observability::metrics::ReasonLabels {
                reason: reason.as_label(),
            })
            .inc_by(n);
    }

    fn sink_failure(&self, reason: KafkaSinkFailureReason) {
        self.metrics
            .sink_failures
            .get_or_create(&Self::reason(reason.as_label()))
            .inc();
    }

    fn buffered(&self) -> u64 {
        self.buffer.pending().0
    }

    /// Runs until the input closes or the shutdown token is cancelled (then drains).
    pub async fn run(mut self) {
        self.metrics
            .init_buffered_sink(SINK, self.config.buffer.max_bytes.0);
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
            isolate: VecDeque::new(),
            delivered: Default::default(),
            dead: VecDeque::new(),
            replay: ReplayWindow::default(),
            producer: None,
            recreate: false,
            fatal_until: now,
            producer_at: now,
            producer_backoff: Backoff::new(retry.0, retry.1),
            queue_full: false,
            failing: false,
            acked: 0,
            reports_at: std::time::Instant::now(),
            purge_at: now,
            append_at: now,
            append_lingering: false,
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
            m.reports_at = std::time::Instant::now();
            for _ in 0..100_000 {
                match events.try_recv() {
                    Ok(ev) => self.on_event(&mut m, ev),
                    Err(_) => break,
                }
            }
            self.ensure_producer(&mut m, &tx).await;
            self.flush_counts(&mut m);
            // After the reports (the select below only runs when nothing else is due).
            self.metrics.kafka.in_flight.set(m.slots.len() as i64);
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
                        m.reports_at = std::time::Instant::now();
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
        // Buffered: the replay window gets the grace too (what it finishes is not produced again
        // after the restart).
        let healthy =
            matches!(m.mode, Mode::Live | Mode::Buffered) && !m.failing && m.producer.is_some();
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

    async fn ensure_producer(&self, m: &mut Machine, tx: &mpsc::UnboundedSender<Event>) {
        if m.producer.is_some() || m.recreate || Instant::now() < m.producer_at {
            return;
        }
        match KafkaProducer::create(&self.client, tx.clone(), self.metrics.kafka.clone()).await {
            Ok(p) => {
                m.producer = Some(p);
                m.producer_backoff.reset();
                self.status.recovered(PRODUCER_FAILURE);
            }
            Err(e) => {
                self.sink_failure(KafkaSinkFailureReason::Producer);
                self.status.failed(
                    PRODUCER_FAILURE,
                    &format!("cannot create the producer: {e}"),
                );
                error!(sink = SINK, error = %e, "cannot create the Kafka producer; retrying");
                m.producer_at = Instant::now() + m.producer_backoff.next_delay();
            }
        }
    }

    /// Shutdown: what is left is not acknowledged (capture reads it again after the restart).
    fn abandon_rest(&self, m: &Machine, why: &str) {
        let lines = m.waiting.len() + m.slots.live() + m.spilled.len() + m.isolate.len();
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
#[path = "worker_test_support.rs"]
mod test_support;
#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
