//! Producing: waiting messages (live) and the replayed record's, and when the loop wakes.

use std::sync::Arc;
use tokio::time::Instant;

use super::producer::Refused;
use super::state::{Owner, Slot};
use super::stores::DeadLetter;
use super::{KafkaWorker, Machine, Mode, PRODUCE_BURST, QUEUE_FULL_WAIT, SEND_FAILURE, SINK};
use crate::observability::reasons::{KafkaDeadLetterReason, KafkaSinkFailureReason};

impl Machine {
    /// Messages refused with their request wait to be produced alone, or one is: nothing
    /// else is produced meanwhile (so nothing produced later overtakes them).
    pub(super) fn isolating(&self) -> bool {
        !self.isolate.is_empty() || self.slots.alone() > 0
    }
}

impl KafkaWorker {
    /// Produces the oldest message refused with its request again, alone: once nothing else
    /// is in flight, and one at a time (librdkafka cannot batch it with anything). Refused
    /// again, it is a dead letter for good; so is one a later message of its partition was
    /// delivered before (produced again it would land behind that: out of order).
    pub(super) fn produce_isolated(&self, m: &mut Machine) {
        if !m.isolating() {
            if !m.delivered.is_empty() {
                m.delivered.clear();
            }
            return;
        }
        if m.isolate.is_empty() || !m.slots.is_empty() || m.queue_full || m.recreate {
            return;
        }
        let Some(p) = &m.producer else {
            return;
        };
        let Some(iso) = m.isolate.front() else {
            return;
        };
        let msg = match (iso.owner, &iso.msg) {
            (Owner::Live { .. }, Some(msg)) => Some(msg),
            (Owner::BufferReplay { rec, index }, _) => {
                m.replay.get(rec).and_then(|rp| rp.msgs.get(index as usize))
            }
            (Owner::Live { .. }, None) => None,
        };
        let Some(msg) = msg else {
            // Not reachable (live ones keep their bytes; the record stays while any of its
            // messages is outstanding): leave it unacknowledged.
            m.isolate.pop_front();
            return;
        };
        let overtaken = m
            .delivered
            .get(&(Arc::clone(&msg.topic), iso.partition))
            .is_some_and(|&t| t > iso.token);
        let sent = if overtaken {
            Err(format!(
                "broker: {} (refused with its produce request; later messages of its partition were delivered meanwhile, so it is not produced again out of order)",
                iso.reason
            ))
        } else {
            match p.send(m.slots.next_token(), msg) {
                Ok(()) => Ok(()),
                Err(Refused::QueueFull | Refused::Retry(_)) => {
                    // (Retry: waits as for a full queue, then again.)
                    m.queue_full = true;
                    return;
                }
                Err(Refused::Fatal(e)) => {
                    // It stays first in line for the new producer.
                    self.failed(KafkaSinkFailureReason::Producer, 1);
                    let reason = p.fatal_error().unwrap_or(e);
                    self.fatal(m, &reason);
                    return;
                }
                Err(Refused::Permanent(e)) => Err(format!("producer: {e}")),
            }
        };
        let Some(iso) = m.isolate.pop_front() else {
            return;
        };
        match sent {
            Ok(()) => {
                self.metrics.kafka.produced.inc();
                self.count_retried(1);
                m.slots.insert(Slot {
                    owner: iso.owner,
                    msg: iso.msg,
                    sent_at: std::time::Instant::now(),
                    maybe_sent: iso.maybe_sent,
                    alone: true,
                });
            }
            Err(reason) => {
                self.sink_failure(KafkaSinkFailureReason::Rejected);
                match (iso.owner, iso.msg) {
                    (Owner::Live { dix, line }, Some(msg)) => m.dead.push_back(DeadLetter {
                        items: vec![super::Item {
                            dix,
                            line,
                            msg,
                            maybe_sent: iso.maybe_sent,
                        }],
                        reason,
                        label: KafkaDeadLetterReason::Rejected,
                    }),
                    (Owner::BufferReplay { rec, index }, _) => {
                        m.replay.reported(rec, index, Some(Some(reason)))
                    }
                    (Owner::Live { .. }, None) => {}
                }
            }
        }
    }

    /// Messages waiting to be produced alone go back: live ones to `spilled` (the buffer),
    /// replayed ones to be produced again with their record (a quiesce, a drain).
    pub(super) fn release_isolated(&self, m: &mut Machine) {
        for iso in std::mem::take(&mut m.isolate) {
            match (iso.owner, iso.msg) {
                (Owner::Live { dix, line }, Some(msg)) => m.spilled.push(super::Item {
                    dix,
                    line,
                    msg,
                    maybe_sent: iso.maybe_sent,
                }),
                (Owner::BufferReplay { rec, index }, _) => {
                    m.replay.reported(rec, index, Some(None))
                }
                (Owner::Live { .. }, None) => {}
            }
        }
    }

    pub(super) fn produce_waiting(&self, m: &mut Machine) {
        let Some(p) = m.producer.as_ref().filter(|_| !m.recreate) else {
            return;
        };
        if m.queue_full || m.isolating() || (m.draining && Instant::now() >= m.grace_until) {
            return;
        }
        let now = std::time::Instant::now();
        let (mut produced, mut retried) = (0u64, 0u64);
        let mut fatal = None;
        let mut retry = None;
        while (produced as usize) < PRODUCE_BURST {
            let Some(item) = m.waiting.front() else {
                break;
            };
            match p.send(m.slots.next_token(), &item.msg) {
                Ok(()) => {
                    let Some(item) = m.waiting.pop_front() else {
                        break;
                    };
                    if item.maybe_sent {
                        retried += 1;
                    }
                    produced += 1;
                    m.slots.insert(Slot {
                        owner: Owner::Live {
                            dix: item.dix,
                            line: item.line,
                        },
                        msg: Some(item.msg),
                        sent_at: now,
                        maybe_sent: item.maybe_sent,
                        alone: false,
                    });
                }
                Err(Refused::QueueFull) => {
                    m.queue_full = true;
                    break;
                }
                Err(Refused::Fatal(e)) => {
                    // The message stays first in line; the producer is recreated.
                    fatal = Some(e);
                    break;
                }
                Err(Refused::Retry(e)) => {
                    // It stays first in line; it goes to the buffer and is produced again
                    // from there.
                    retry = Some(e);
                    break;
                }
                Err(Refused::Permanent(e)) => {
                    let Some(item) = m.waiting.pop_front() else {
                        break;
                    };
                    self.failed(KafkaSinkFailureReason::Rejected, 1);
                    self.sink_failure(KafkaSinkFailureReason::Rejected);
                    m.dead.push_back(DeadLetter {
                        items: vec![item],
                        reason: format!("producer: {e}"),
                        label: KafkaDeadLetterReason::Rejected,
                    });
                }
            }
        }
        self.metrics.kafka.produced.inc_by(produced);
        self.count_retried(retried);
        if let Some(e) = retry
            && m.mode == Mode::Live
        {
            self.failed(KafkaSinkFailureReason::Error, 1);
            self.sink_failure(KafkaSinkFailureReason::Error);
            m.failing = true;
            self.status
                .failed(SEND_FAILURE, &format!("cannot produce: {e}"));
            tracing::warn!(sink = SINK, error = %e, "Kafka refused a message for now; spilling to the on-disk buffer and producing again from there");
            self.start_quiesce(m);
        }
        if let Some(e) = fatal {
            self.failed(KafkaSinkFailureReason::Producer, 1);
            let reason = m.producer.as_ref().and_then(|p| p.fatal_error());
            self.fatal(m, &reason.unwrap_or(e));
        }
    }

    /// Produces what the replay window holds, record by record in store order.
    pub(super) fn produce_replay(&self, m: &mut Machine) {
        let Some(p) = &m.producer else {
            return;
        };
        if m.queue_full || m.recreate || m.replay.failed || !m.isolate.is_empty() {
            return;
        }
        if m.slots.alone() > 0 {
            return;
        }
        let now = std::time::Instant::now();
        let mut produced = 0u64;
        let mut fatal = None;
        let mut retry = false;
        let mut rejected = Vec::new();
        'records: for (rec, rp) in m.replay.iter_mut() {
            while let Some(index) = rp.next_to_produce() {
                let Some(msg) = rp.msgs.get(index) else {
                    break;
                };
                match p.send(m.slots.next_token(), msg) {
                    Ok(()) => {
                        rp.produced(index);
                        produced += 1;
                        m.slots.insert(Slot {
                            owner: Owner::BufferReplay {
                                rec,
                                index: index as u32,
                            },
                            msg: None,
                            sent_at: now,
                            maybe_sent: false,
                            alone: false,
                        });
                    }
                    Err(Refused::QueueFull) => {
                        m.queue_full = true;
                        break 'records;
                    }
                    Err(Refused::Fatal(e)) => {
                        // Not produced: the record's message stays to be produced.
                        fatal = Some(e);
                        break 'records;
                    }
                    Err(Refused::Retry(e)) => {
                        // Not produced: the replay backs off, then produces it again.
                        tracing::warn!(sink = SINK, error = %e, "Kafka refused a replayed message for now; retrying after a back-off");
                        retry = true;
                        break 'records;
                    }
                    Err(Refused::Permanent(e)) => {
                        rp.produced(index);
                        rejected.push((rec, index as u32, format!("producer: {e}")));
                    }
                }
            }
        }
        for (rec, index, reason) in rejected {
            self.failed(KafkaSinkFailureReason::Rejected, 1);
            self.sink_failure(KafkaSinkFailureReason::Rejected);
            m.replay.reported(rec, index, Some(Some(reason)));
        }
        self.metrics.kafka.produced.inc_by(produced);
        if retry {
            m.replay.failed = true;
        }
        self.count_retried(produced);
        if let Some(e) = fatal {
            self.failed(KafkaSinkFailureReason::Producer, 1);
            let reason = m.producer.as_ref().and_then(|p| p.fatal_error());
            self.fatal(m, &reason.unwrap_or(e));
        }
    }

    /// When the loop has something to do next (besides events and input).
    pub(super) fn next_wake(&self, m: &Machine) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut at_least = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        if m.producer.is_none() && !m.recreate {
            at_least(m.producer_at);
        }
        if m.queue_full {
            at_least(Instant::now() + QUEUE_FULL_WAIT);
        }
        if !m.dead.is_empty() {
            at_least(m.disk_at);
        }
        match m.mode {
            Mode::Live => {
                if let Some(oldest) = m.slots.oldest_sent() {
                    at_least(Instant::from_std(oldest) + self.config.buffer.spill_after.0);
                }
                if m.draining
                    && (!m.slots.is_empty() || !m.waiting.is_empty() || !m.isolate.is_empty())
                {
                    at_least(m.grace_until);
                }
            }
            Mode::Quiesce => {
                if !m.slots.is_empty() {
                    at_least(m.purge_at);
                }
            }
            Mode::Buffered => {
                if !m.waiting.is_empty() && !m.buffer_full {
                    at_least(m.append_at);
                }
                let rp = &m.replay;
                if rp.front().is_some_and(|r| r.all_reported())
                    || (rp.failed && rp.outstanding() == 0)
                {
                    at_least(m.disk_at);
                }
                if m.draining {
                    if rp.outstanding() > 0 {
                        at_least(m.purge_at.max(m.grace_until));
                    }
                } else {
                    if m.recreate && !m.slots.is_empty() {
                        at_least(m.purge_at);
                    }
                    if rp.has_room() && self.buffered() > rp.len() as u64 {
                        at_least(m.replay_at.max(m.disk_at));
                    }
                    // Not without a usable producer (its own wake-up comes): no 1 ms spin.
                    if rp.to_produce()
                        && !m.isolating()
                        && !m.queue_full
                        && m.producer.is_some()
                        && !m.recreate
                    {
                        at_least(m.replay_at);
                    }
                }
            }
        }
        at
    }

    /// Messages produced again (from the buffer, or after a failure).
    pub(super) fn count_retried(&self, n: u64) {
        if n > 0 {
            self.metrics.kafka.retried.inc_by(n);
            self.metrics
                .sink_retries
                .get_or_create(&Self::labels())
                .inc_by(n);
        }
    }
}
