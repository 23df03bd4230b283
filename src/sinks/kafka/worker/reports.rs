//! Input and delivery reports: a delivery's lines become messages (or dead letters at once);
//! a report completes a line, sends it back to be spilled or produced again, or makes it a
//! dead letter; a fatal producer error starts the producer's recreation.

use std::sync::Arc;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::producer::{Event, Failure, KafkaProducer, Report};
use super::state::{Isolated, Item, Owner, Slot};
use super::stores::DeadLetter;
use super::{KafkaWorker, Machine, Mode, PRODUCER_FAILURE, PURGE_EVERY, SEND_FAILURE, SINK};
use crate::observability::reasons::{KafkaDeadLetterReason, KafkaSinkFailureReason};
use crate::pipeline::Delivery;

impl KafkaWorker {
    /// A delivery from the input: its lines' messages wait to be produced (or buffered);
    /// those over `message_max_bytes` become dead letters at once.
    pub(super) fn take(&self, m: &mut Machine, d: Arc<Delivery>) {
        if d.end_of_stream || d.batch.lines.is_empty() {
            return;
        }
        self.status.received(d.charged_bytes());
        let mut msgs = Vec::with_capacity(d.batch.lines.len());
        self.encoder.encode(&d.batch, &mut msgs);
        let dix = m.deliveries.add(Arc::clone(&d), msgs.len());
        if msgs.is_empty() {
            self.lines_done(m, dix, 0);
            return;
        }
        let max = self.config.message_max_bytes.0;
        for (line, msg) in msgs.into_iter().enumerate() {
            let item = Item {
                dix,
                line: line as u32,
                msg,
                maybe_sent: false,
            };
            if item.msg.value.len() as u64 > max {
                self.failed(KafkaSinkFailureReason::TooLarge, 1);
                self.sink_failure(KafkaSinkFailureReason::TooLarge);
                let reason = format!(
                    "message of {} bytes is over message_max_bytes ({max})",
                    item.msg.value.len()
                );
                m.dead.push_back(DeadLetter {
                    items: vec![item],
                    reason,
                    label: KafkaDeadLetterReason::TooLarge,
                });
            } else {
                m.waiting.push_back(item);
            }
        }
    }

    /// `n` lines of delivery `dix` are done; completes it in the ledger once all are. Nothing
    /// is acknowledged once abandoned.
    pub(super) fn lines_done(&self, m: &mut Machine, dix: u64, n: usize) {
        if self.abandon.is_cancelled() || m.abandoning {
            return;
        }
        self.lines_kept(m, dix, n);
    }

    /// `n` lines of delivery `dix` were durably appended (buffer or dead letters): acknowledged
    /// even after `abandon` (the append completed; not acknowledging it would read them again
    /// on top of the stored copy). The agent waits a moment for the worker before its last
    /// checkpoint write.
    pub(super) fn lines_kept(&self, m: &mut Machine, dix: u64, n: usize) {
        if let Some(d) = m.deliveries.done(dix, n) {
            self.ledger.acknowledge(&d.batch.container.id, d.seq);
            self.status.finished(d.charged_bytes());
            let labels = Self::labels();
            self.metrics.sink_batches.get_or_create(&labels).inc();
            self.metrics
                .sink_latency
                .get_or_create(&labels)
                .observe(d.enqueued.elapsed().as_secs_f64());
        }
    }

    pub(super) fn on_event(&self, m: &mut Machine, ev: Event) {
        match ev {
            Event::Report(r) => self.on_report(m, r),
            Event::Error => {
                if let Some(reason) = m.producer.as_ref().and_then(KafkaProducer::fatal_error) {
                    self.fatal(m, &reason);
                }
            }
        }
    }

    /// The producer is in a fatal state: take everything back, recreate it, produce again.
    pub(super) fn fatal(&self, m: &mut Machine, reason: &str) {
        if m.recreate {
            return;
        }
        self.sink_failure(KafkaSinkFailureReason::Fatal);
        self.status
            .failed(PRODUCER_FAILURE, &format!("fatal producer error: {reason}"));
        error!(sink = SINK, %reason, outstanding = m.slots.len(),
            "fatal Kafka producer error; recreating the producer and producing again what was not delivered (possible duplicates are counted)");
        m.recreate = true;
        m.failing = true;
        // As librdkafka does on a fatal error: only the queue is taken back; what is in flight
        // gets its real outcome (purging it could duplicate what the broker wrote). Requests
        // that never answer are purged after the request time-out (`advance`).
        if let Some(p) = &m.producer {
            p.purge_queue();
        }
        let now = Instant::now();
        m.purge_at = now + PURGE_EVERY;
        m.fatal_until = now + self.config.timeout.0 + PURGE_EVERY;
        if m.mode == Mode::Live {
            m.mode = Mode::Quiesce;
        }
    }

    pub(super) fn on_report(&self, m: &mut Machine, r: Report) {
        m.queue_full = false;
        let Some(slot) = m.slots.take(r.token) else {
            return;
        };
        let kafka = &self.metrics.kafka;
        match r.result {
            Ok(()) => {
                if m.isolating() && !slot.alone {
                    self.note_delivered(m, &slot, r.token, r.partition);
                }
                // Counted per batch of reports (`flush_counts`): no label lookup per message.
                m.acked += 1;
                kafka.delivery_seconds.observe(
                    m.reports_at
                        .saturating_duration_since(slot.sent_at)
                        .as_secs_f64(),
                );
                if m.failing {
                    m.failing = false;
                    self.status.recovered(SEND_FAILURE);
                    self.status.recovered(PRODUCER_FAILURE);
                    info!(sink = SINK, "Kafka acknowledges messages again");
                }
                match slot.owner {
                    Owner::Live { dix, .. } => self.lines_done(m, dix, 1),
                    Owner::BufferReplay { rec, index } => m.replay.reported(rec, index, None),
                }
            }
            Err(f) => self.on_failure(m, slot, f, r.token, r.partition),
        }
    }

    /// Isolating: `token` of `partition` was delivered (see `Machine::delivered`).
    fn note_delivered(&self, m: &mut Machine, slot: &Slot, token: u64, partition: i32) {
        let topic = match (&slot.msg, slot.owner) {
            (Some(msg), _) => Some(Arc::clone(&msg.topic)),
            (None, Owner::BufferReplay { rec, index }) => m
                .replay
                .get(rec)
                .and_then(|rp| rp.msgs.get(index as usize))
                .map(|msg| Arc::clone(&msg.topic)),
            (None, Owner::Live { .. }) => None,
        };
        if let Some(topic) = topic {
            let max = m.delivered.entry((topic, partition)).or_insert(token);
            *max = (*max).max(token);
        }
    }

    pub(super) fn on_failure(
        &self,
        m: &mut Machine,
        slot: Slot,
        f: Failure,
        token: u64,
        partition: i32,
    ) {
        let permanent = f.is_permanent();
        let again = !permanent;
        if f.possibly_persisted && again {
            self.metrics.kafka.possible_duplicates.inc();
        }
        if f.code == rdkafka::error::RDKafkaErrorCode::Fatal {
            self.failed(KafkaSinkFailureReason::Fatal, 1);
            self.fatal(m, &f.text);
        } else if f.is_purge() {
            self.failed(KafkaSinkFailureReason::Purged, 1);
        } else if permanent && !slot.alone {
            // librdkafka fails every message of a refused request: the culprit is found by
            // producing each again alone (`produce_isolated`).
            self.failed(KafkaSinkFailureReason::Rejected, 1);
            if m.isolate.is_empty() {
                warn!(sink = SINK, error = %f.text, "Kafka refused a produce request; producing its messages again one at a time (one refused alone is a dead letter)");
            }
            m.isolate.push_back(Isolated {
                owner: slot.owner,
                msg: slot.msg,
                maybe_sent: slot.maybe_sent || f.possibly_persisted,
                token,
                partition,
                reason: f.text,
            });
            return;
        } else if permanent {
            self.failed(KafkaSinkFailureReason::Rejected, 1);
            self.sink_failure(KafkaSinkFailureReason::Rejected);
        } else {
            self.failed(KafkaSinkFailureReason::Error, 1);
            self.sink_failure(KafkaSinkFailureReason::Error);
            if !m.failing || m.mode == Mode::Live {
                warn!(sink = SINK, error = %f.text, "Kafka delivery failed; spilling to the on-disk buffer and producing again from there");
            }
            m.failing = true;
            self.status
                .failed(SEND_FAILURE, &format!("delivery failed: {}", f.text));
            if m.mode == Mode::Live {
                self.start_quiesce(m);
            }
        }
        match (slot.owner, slot.msg) {
            (Owner::Live { dix, line }, Some(msg)) => {
                let item = Item {
                    dix,
                    line,
                    msg,
                    maybe_sent: slot.maybe_sent || f.possibly_persisted,
                };
                if permanent {
                    m.dead.push_back(DeadLetter {
                        items: vec![item],
                        reason: format!("broker: {}", f.text),
                        label: KafkaDeadLetterReason::Rejected,
                    });
                } else {
                    m.spilled.push(item);
                }
            }
            (Owner::Live { dix, .. }, None) => {
                // Not reachable: live slots keep their message. Leave the line unacknowledged
                // rather than claim it.
                error!(
                    sink = SINK,
                    dix,
                    "a live message without its bytes came back; its delivery stays unacknowledged"
                );
            }
            (Owner::BufferReplay { rec, index }, _) => {
                let reason = permanent.then(|| format!("broker: {}", f.text));
                m.replay.reported(rec, index, Some(reason));
            }
        }
    }

    /// Adds the messages acknowledged since the last call to the counters.
    pub(super) fn flush_counts(&self, m: &mut Machine) {
        if m.acked > 0 {
            self.metrics.kafka.acknowledged.inc_by(m.acked);
            self.metrics
                .sink_lines
                .get_or_create(&Self::labels())
                .inc_by(m.acked);
            m.acked = 0;
        }
    }
}
