//! Producing: waiting messages (live) and the replayed record's, and when the loop wakes.

use tokio::time::Instant;

use super::producer::Refused;
use super::state::{Owner, Slot};
use super::stores::DeadLetter;
use super::{KafkaWorker, Machine, Mode, PRODUCE_BURST, QUEUE_FULL_WAIT};

impl KafkaWorker {
    pub(super) fn produce_waiting(&self, m: &mut Machine) {
        let Some(p) = m.producer.as_ref().filter(|_| !m.recreate) else {
            return;
        };
        if m.queue_full || (m.draining && Instant::now() >= m.grace_until) {
            return;
        }
        let now = std::time::Instant::now();
        let (mut produced, mut retried) = (0u64, 0u64);
        while (produced as usize) < PRODUCE_BURST {
            let Some(item) = m.waiting.front() else {
                break;
            };
            match p.send(m.slots.next_token(), &item.msg) {
                Ok(()) => {
                    let Some(item) = m.waiting.pop_front() else {
                        break;
                    };
                    if m.slots.is_empty() {
                        m.last_progress = Instant::now();
                    }
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
                    });
                }
                Err(Refused::QueueFull) => {
                    m.queue_full = true;
                    break;
                }
                Err(Refused::Permanent(e)) => {
                    let Some(item) = m.waiting.pop_front() else {
                        break;
                    };
                    self.failed("rejected", 1);
                    self.sink_failure("rejected");
                    m.dead.push_back(DeadLetter {
                        items: vec![item],
                        reason: format!("producer: {e}"),
                        label: "rejected",
                    });
                }
            }
        }
        self.metrics.kafka.produced.inc_by(produced);
        self.count_retried(retried);
    }

    pub(super) fn produce_replay(&self, m: &mut Machine) {
        let (Some(p), Some(rp)) = (&m.producer, &mut m.replay) else {
            return;
        };
        if m.queue_full || m.recreate {
            return;
        }
        let now = std::time::Instant::now();
        let mut produced = 0u64;
        while let Some(index) = rp.next_to_produce() {
            let Some(msg) = rp.msgs.get(index) else {
                break;
            };
            match p.send(m.slots.next_token(), msg) {
                Ok(()) => {
                    if m.slots.is_empty() {
                        m.last_progress = Instant::now();
                    }
                    rp.produced(index);
                    produced += 1;
                    m.slots.insert(Slot {
                        owner: Owner::Replay {
                            index: index as u32,
                        },
                        msg: None,
                        sent_at: now,
                        maybe_sent: false,
                    });
                }
                Err(Refused::QueueFull) => {
                    m.queue_full = true;
                    break;
                }
                Err(Refused::Permanent(e)) => {
                    self.failed("rejected", 1);
                    self.sink_failure("rejected");
                    rp.produced(index);
                    rp.reported(index as u32, Some(Some(format!("producer: {e}"))));
                }
            }
        }
        self.metrics.kafka.produced.inc_by(produced);
        self.count_retried(produced);
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
                if !m.slots.is_empty() {
                    at_least(m.last_progress + self.config.buffer.spill_after.0);
                }
                if m.draining && (!m.slots.is_empty() || !m.waiting.is_empty()) {
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
                match &m.replay {
                    None if !m.draining => at_least(m.replay_at.max(m.disk_at)),
                    Some(rp) if rp.complete() => at_least(m.disk_at),
                    Some(rp) if rp.failed && rp.outstanding == 0 => at_least(m.disk_at),
                    Some(rp) if m.draining && rp.outstanding > 0 => at_least(m.purge_at),
                    Some(rp) if rp.next_to_produce().is_some() => at_least(m.replay_at),
                    _ => {}
                }
            }
        }
        at
    }

    /// Messages produced again (from the buffer, or after a failure).
    fn count_retried(&self, n: u64) {
        if n > 0 {
            self.metrics.kafka.retried.inc_by(n);
            self.metrics
                .sink_retries
                .get_or_create(&Self::labels())
                .inc_by(n);
        }
    }
}
