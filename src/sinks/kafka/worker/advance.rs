//! The synchronous part of a turn of the worker's loop: produce, watch for the spill, end a
//! quiesce, drive the replay window, go live again.

use tokio::time::Instant;
use tracing::{info, warn};

use super::{IN_FLIGHT_GRACE, KafkaWorker, Machine, Mode, PURGE_EVERY, SEND_FAILURE, SINK, stores};
use crate::observability::reasons::KafkaSinkFailureReason;

impl KafkaWorker {
    /// Stops producing live: purges librdkafka's queue; what comes back goes to the buffer.
    pub(super) fn start_quiesce(&self, m: &mut Machine) {
        m.mode = Mode::Quiesce;
        m.spill = true;
        if let Some(p) = &m.producer {
            p.purge_queue();
        }
        m.purge_at = Instant::now() + PURGE_EVERY;
    }

    /// The synchronous part of a turn: produce, watch for the spill, end a quiesce.
    pub(super) fn advance(&self, m: &mut Machine) {
        let now = Instant::now();
        // "Queue full" is cleared by the next delivery report; with nothing in flight none
        // will come (a message produced alone refused as `Retry`, its topic unknown for a
        // while): try again at this turn (the loop wakes `QUEUE_FULL_WAIT` later).
        if m.queue_full && m.slots.is_empty() {
            m.queue_full = false;
        }
        if m.draining
            && m.mode == Mode::Live
            && now >= m.grace_until
            && (!m.waiting.is_empty() || !m.slots.is_empty() || !m.isolate.is_empty())
        {
            info!(
                sink = SINK,
                "shutdown grace over: what is left goes to the on-disk buffer"
            );
            self.start_quiesce(m);
        }
        if m.mode != Mode::Quiesce && !(m.draining && m.mode == Mode::Buffered) {
            self.produce_isolated(m);
        }
        match m.mode {
            Mode::Live => {
                let spill_after = self.config.buffer.spill_after.0;
                // The oldest outstanding message, not the last report: one stuck partition
                // spills while the others still deliver.
                if let Some(oldest) = m.slots.oldest_sent()
                    && now.into_std() >= oldest + spill_after
                {
                    self.failed(KafkaSinkFailureReason::Timeout, m.slots.len() as u64);
                    self.sink_failure(KafkaSinkFailureReason::Timeout);
                    m.failing = true;
                    let text = format!(
                        "a message not acknowledged for {spill_after:?} ({} messages outstanding)",
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
                            if (m.recreate && now >= m.fatal_until) || self.in_flight_over(m, now) {
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
                self.release_isolated(m);
                let mut back = std::mem::take(&mut m.spilled);
                back.sort_unstable_by_key(|i| (i.dix, i.line));
                let n = back.len();
                // Produced again live (after a fatal error) unless spilled: counted as retried
                // here; possibly-sent ones are counted when produced (`produce_waiting`).
                let again = back.iter().filter(|i| !i.maybe_sent).count() as u64;
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
                    self.count_retried(again);
                }
                m.spill = false;
            }
            Mode::Buffered => {
                if m.draining {
                    self.release_isolated(m);
                    if now < m.grace_until && !m.replay.failed {
                        self.produce_replay(m);
                    } else if m.replay.outstanding() > 0 {
                        if now >= m.purge_at {
                            if let Some(p) = &m.producer {
                                if self.in_flight_over(m, now) {
                                    p.purge_all();
                                } else {
                                    p.purge_queue();
                                }
                            }
                            m.purge_at = now + PURGE_EVERY;
                        }
                    } else {
                        // Not replayed now; those records stay for the next start.
                        m.replay.drop_unfinished();
                    }
                    if m.replay.is_empty() && m.buffer_full && !m.waiting.is_empty() {
                        // Nothing frees buffer space while draining: the waiting lines stay
                        // unacknowledged (read again after the restart), as in the Loki worker.
                        self.abandon_rest(m, "the on-disk buffer is full");
                        m.abandoning = true;
                        return;
                    }
                } else {
                    // After a fatal error, what is in flight gets the request time-out to
                    // report (as in Quiesce), then is purged, so the producer can be recreated
                    // even when a broker stopped answering.
                    if m.recreate && !m.slots.is_empty() && now >= m.purge_at {
                        if let Some(p) = &m.producer {
                            if now >= m.fatal_until {
                                p.purge_all();
                            } else {
                                p.purge_queue();
                            }
                        }
                        m.purge_at = now + PURGE_EVERY;
                    }
                    if now >= m.replay_at {
                        self.produce_replay(m);
                    }
                }
                // Buffer empty: live again, unless waiting messages can still go to the buffer
                // (always their way when draining).
                // (The store's lock last: not taken on every turn.)
                if m.replay.is_empty()
                    && (m.waiting.is_empty() || (!m.draining && !self.can_append(m, now)))
                    && self.buffered() == 0
                {
                    if !m.waiting.is_empty() || m.failing {
                        info!(sink = SINK, "on-disk buffer empty: producing live again");
                    }
                    m.mode = Mode::Live;
                    self.produce_waiting(m);
                }
            }
        }
    }

    /// Draining, and what is in flight had its time: purge it too (it comes back possibly
    /// persisted, counted as a possible duplicate, and goes to the buffer).
    fn in_flight_over(&self, m: &Machine, now: Instant) -> bool {
        m.draining && now >= m.grace_until + IN_FLIGHT_GRACE
    }

    /// Waiting messages may be appended to the buffer now.
    pub(super) fn can_append(&self, m: &Machine, now: Instant) -> bool {
        !m.buffer_full
            && (now >= m.append_at
                || (m.append_lingering
                    && (m.draining || m.waiting.len() >= stores::RECORD_MESSAGES)))
    }
}
