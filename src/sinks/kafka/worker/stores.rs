//! The worker's disk side: dead letters, appends behind the on-disk buffer, and reading and
//! consuming the records of the replay window ([`super::replay`]). One store operation per call (run on a blocking thread by
//! [`SharedStore`](crate::buffer::SharedStore)), so the loop looks at reports and input in
//! between.

use std::time::Duration;
use tokio::time::Instant;
use tracing::{error, warn};

use super::super::encode::Message;
use super::super::store::{decode_record, encode_record};
use super::replay::ReplayRecord;
use super::{DEAD_LETTER_FAILURE, KafkaWorker, Machine, Mode, SINK};
use crate::buffer::{AppendError, RecordId};
use crate::observability::reasons::{
    BufferErrorReason, KafkaDeadLetterReason, KafkaSinkFailureReason,
};

/// Messages per buffer record (and bytes of values): one record is consumed as a whole when
/// replayed.
pub(super) const RECORD_MESSAGES: usize = 10_000;
const RECORD_BYTES: usize = 1 << 20;
/// A partial record (everything waiting) is appended at most this often, so that a trickle of
/// small deliveries during an outage makes fewer, bigger records.
pub(super) const APPEND_LINGER: Duration = Duration::from_millis(250);

/// Lines refused for good, to be kept in the dead-letter store.
pub(super) struct DeadLetter {
    pub items: Vec<super::Item>,
    pub reason: String,
    /// `log_capturer_dead_letters_total` reason.
    pub label: KafkaDeadLetterReason,
}

impl KafkaWorker {
    pub(super) fn update_buffer_gauges(&self) {
        let (records, bytes) = self.buffer.pending();
        let labels = Self::labels();
        self.metrics
            .buffer_records
            .get_or_create(&labels)
            .set(records as i64);
        self.metrics
            .buffer_bytes
            .get_or_create(&labels)
            .set(bytes as i64);
        self.status.set_buffered(records, bytes);
    }

    /// One store operation if one is due; true if it ran.
    pub(super) async fn disk_step(&self, m: &mut Machine) -> bool {
        let now = Instant::now();
        if m.recreate && m.slots.is_empty() {
            if let Some(p) = m.producer.take() {
                p.close().await;
            }
            m.recreate = false;
            m.producer_at = Instant::now() + m.producer_backoff.next_delay();
            return true;
        }
        if !m.dead.is_empty() && now >= m.disk_at {
            self.write_dead_letter(m).await;
            return true;
        }
        if m.mode == Mode::Buffered && !m.waiting.is_empty() && self.can_append(m, now) {
            self.append_waiting(m).await;
            return true;
        }
        if m.mode == Mode::Buffered && now >= m.disk_at {
            if m.replay.failed && m.replay.outstanding() == 0 && !m.draining {
                // Produce again what came back (what was delivered is not) after a back-off.
                m.replay.failed = false;
                m.replay_at = now + m.replay_backoff.next_delay();
                return false;
            }
            if m.replay.front().is_some_and(ReplayRecord::all_reported) {
                self.finish_replay(m).await;
                return true;
            }
            if !m.draining
                && now >= m.replay_at
                && m.replay.has_room()
                && self.buffered() > m.replay.len() as u64
            {
                self.read_replay(m).await;
                return true;
            }
        }
        false
    }

    fn disk_ok(&self, m: &mut Machine) {
        m.disk_backoff.reset();
        m.disk_at = Instant::now();
    }

    fn disk_failed(&self, m: &mut Machine) {
        m.disk_at = Instant::now() + m.disk_backoff.next_delay();
    }

    /// Draining: a line could not be kept, so nothing after it is either.
    fn stop_draining(&self, m: &mut Machine, why: &str) {
        if m.draining {
            self.abandon_rest(m, why);
            m.abandoning = true;
        }
    }

    async fn write_dead_letter(&self, m: &mut Machine) {
        let Some(dl) = m.dead.front() else {
            return;
        };
        let msgs: Vec<Message> = dl.items.iter().map(|i| i.msg.clone()).collect();
        let record = encode_record(Some(dl.reason.clone()), &msgs);
        match self.dead_letters.append(record).await {
            Ok(id) => {
                let Some(dl) = m.dead.pop_front() else {
                    return;
                };
                self.kept_dead_letter(id, dl.label, dl.items.len(), &dl.reason);
                self.disk_ok(m);
                for item in &dl.items {
                    self.lines_kept(m, item.dix, 1);
                }
            }
            Err(e) => {
                self.dead_letter_failed(&e, &dl.reason);
                self.disk_failed(m);
                self.stop_draining(m, "a dead letter could not be written");
            }
        }
    }

    fn kept_dead_letter(&self, id: RecordId, label: KafkaDeadLetterReason, n: usize, reason: &str) {
        self.status.recovered(DEAD_LETTER_FAILURE);
        self.status.set_dead_letters(self.dead_letters.pending().0);
        self.metrics
            .dead_letters
            .get_or_create(&Self::reason(label.as_label()))
            .inc_by(n as u64);
        warn!(sink = SINK, %id, messages = n, %reason, "Kafka message refused; kept as a dead letter (see `log-capturer dlq list`)");
    }

    fn dead_letter_failed(&self, e: &AppendError, reason: &str) {
        self.status
            .failed(DEAD_LETTER_FAILURE, &format!("dead-letter store: {e}"));
        self.sink_failure(KafkaSinkFailureReason::DeadLetter);
        self.failed(KafkaSinkFailureReason::DeadLetter, 1);
        error!(sink = SINK, error = %e, %reason,
            "a Kafka message was refused and the dead-letter store cannot keep it; it waits (not acknowledged) and the append is retried");
    }

    /// Appends the oldest waiting messages to the buffer (one record).
    async fn append_waiting(&self, m: &mut Machine) {
        let limit = if m.chunk_one { 1 } else { RECORD_MESSAGES };
        let (mut n, mut bytes) = (0, 0);
        for item in &m.waiting {
            if n > 0 && (n >= limit || bytes + item.msg.value.len() > RECORD_BYTES) {
                break;
            }
            n += 1;
            bytes += item.msg.value.len();
        }
        let msgs: Vec<Message> = m.waiting.iter().take(n).map(|i| i.msg.clone()).collect();
        let result = self.buffer.append(encode_record(None, &msgs)).await;
        self.update_buffer_gauges();
        match result {
            Ok(_) => {
                m.append_backoff.reset();
                m.append_lingering = n == m.waiting.len();
                m.append_at = Instant::now()
                    + if m.append_lingering {
                        APPEND_LINGER
                    } else {
                        Duration::ZERO
                    };
                let mut run: Option<(u64, usize)> = None;
                for item in m.waiting.drain(..n).collect::<Vec<_>>() {
                    match &mut run {
                        Some((dix, k)) if *dix == item.dix => *k += 1,
                        _ => {
                            if let Some((dix, k)) = run.take() {
                                self.lines_kept(m, dix, k);
                            }
                            run = Some((item.dix, 1));
                        }
                    }
                }
                if let Some((dix, k)) = run {
                    self.lines_kept(m, dix, k);
                }
            }
            Err(AppendError::Full { used, max }) => {
                m.buffer_full = true;
                if self.buffered() == 0 {
                    m.append_lingering = false;
                    m.append_at = Instant::now() + m.append_backoff.next_delay();
                }
                self.metrics
                    .buffer_full
                    .get_or_create(&Self::labels())
                    .inc();
                error!(
                    sink = SINK,
                    used,
                    max,
                    "on-disk buffer is full; new messages wait in memory (capture pauses) while the buffer is replayed"
                );
                self.stop_draining(m, "the on-disk buffer is full");
            }
            Err(AppendError::TooLarge { len }) if n > 1 => {
                warn!(
                    sink = SINK,
                    len, "buffer record too large for the buffer; appending one message at a time"
                );
                m.chunk_one = true;
            }
            Err(AppendError::TooLarge { len }) => {
                // As `Full` above (kept apart: another cause in the log and in the drain's
                // stop reason, and no back-off: it will never fit).
                m.buffer_full = true;
                self.metrics
                    .buffer_full
                    .get_or_create(&Self::labels())
                    .inc();
                error!(
                    sink = SINK,
                    len,
                    "message larger than the on-disk buffer can ever hold; it waits in memory for Kafka, in order"
                );
                self.stop_draining(m, "a message is larger than the on-disk buffer");
            }
            Err(AppendError::Io(e)) => {
                m.append_lingering = false;
                m.append_at = Instant::now() + m.append_backoff.next_delay();
                self.metrics
                    .buffer_errors
                    .get_or_create(&Self::reason(BufferErrorReason::Append.as_label()))
                    .inc();
                error!(sink = SINK, error = %e, "cannot write the on-disk buffer; retrying");
                self.stop_draining(m, "the on-disk buffer cannot be written");
            }
        }
    }

    /// Reads the next record into the replay window: the store's head when the window is
    /// empty, else the record after the window's last.
    async fn read_replay(&self, m: &mut Machine) {
        let read = match m.replay.last() {
            None => self.buffer.with(|s| s.peek()).await,
            Some((after, len)) => {
                match self.buffer.with(move |s| read_ahead(s, after, len)).await {
                    Ok((records, _)) if !records.is_empty() => {
                        // An error after them comes back on the next read.
                        for (id, bytes) in records {
                            self.push_replay(m, id, &bytes);
                        }
                        return;
                    }
                    Ok((_, Some(e))) => Ok(Err(e)),
                    Ok((_, None)) => Ok(Ok(None)),
                    Err(e) => Err(e),
                }
            }
        };
        let (id, bytes) = match read {
            Ok(Ok(Some(x))) => x,
            Ok(Ok(None)) => {
                self.disk_failed(m);
                return;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData && !m.replay.is_empty() => {
                // Reported (and skipped) once it is the head.
                warn!(sink = SINK, error = %e, "corrupt on-disk buffer record ahead; replaying up to it");
                m.replay.blocked = true;
                return;
            }
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
                error!(sink = SINK, error = %e, skipped, "corrupt on-disk buffer record; skipped it and the rest of its segment");
                m.buffer_full = false;
                if skipped == 0 {
                    self.disk_failed(m);
                }
                self.update_buffer_gauges();
                return;
            }
            Ok(Err(e)) => return self.buffer_error(m, BufferErrorReason::Read, &e.to_string()),
            Err(e) => return self.buffer_error(m, BufferErrorReason::Read, &e.to_string()),
        };
        self.push_replay(m, id, &bytes);
    }

    fn push_replay(&self, m: &mut Machine, id: RecordId, bytes: &[u8]) {
        let msgs = match decode_record(bytes) {
            Ok((_, msgs)) => msgs,
            Err(e) => {
                self.metrics
                    .buffer_corrupt
                    .get_or_create(&Self::labels())
                    .inc();
                error!(sink = SINK, %id, error = %e, "undecodable buffer record skipped");
                Vec::new()
            }
        };
        m.replay.push(ReplayRecord::new(id, bytes.len(), msgs));
    }

    /// Dead-letters what the brokers refused of the window's oldest record, then consumes it.
    async fn finish_replay(&self, m: &mut Machine) {
        let Some(rp) = m.replay.front_mut() else {
            return;
        };
        if let Some((index, reason)) = rp.rejected.last() {
            let msg = rp.msgs.get(*index).cloned();
            let record = encode_record(Some(reason.clone()), msg.as_slice());
            match self.dead_letters.append(record).await {
                Ok(id) => {
                    self.kept_dead_letter(id, KafkaDeadLetterReason::Rejected, 1, reason);
                    rp.rejected.pop();
                    self.disk_ok(m);
                }
                Err(e) => {
                    self.dead_letter_failed(&e, reason);
                    self.disk_failed(m);
                }
            }
            return;
        }
        // The done records at the front of the window, in the segment being read: consumed
        // at once (one persisted position).
        let Some((last, len, count)) = m.replay.done_run() else {
            return;
        };
        match self
            .buffer
            .with(move |s| s.consume_through(last, len, count as u64))
            .await
        {
            Ok(Ok(())) => {
                for _ in 0..count {
                    m.replay.pop_front();
                }
                m.buffer_full = false;
                m.chunk_one = false;
                m.replay_backoff.reset();
                self.disk_ok(m);
                self.update_buffer_gauges();
            }
            Ok(Err(e)) => self.buffer_error(m, BufferErrorReason::Consume, &e.to_string()),
            Err(e) => self.buffer_error(m, BufferErrorReason::Consume, &e.to_string()),
        }
    }

    fn buffer_error(&self, m: &mut Machine, op: BufferErrorReason, e: &str) {
        self.disk_failed(m);
        // Counted and logged as by the Loki sink.
        crate::sinks::buffer_errors::BufferErrors {
            sink: SINK,
            record: "record",
            delivered: "produced",
        }
        .report(&self.metrics, op, e);
    }
}

/// Records read ahead per store operation (and payload bytes).
const READ_AHEAD_RECORDS: usize = 256;
const READ_AHEAD_BYTES: usize = 2 << 20;

/// Up to [`READ_AHEAD_RECORDS`] records after `after`, and the error that stopped the
/// reading, if one did.
fn read_ahead(
    s: &mut crate::buffer::SegmentStore,
    mut after: RecordId,
    mut len: usize,
) -> (Vec<(RecordId, Vec<u8>)>, Option<std::io::Error>) {
    let (mut out, mut bytes) = (Vec::new(), 0);
    while out.len() < READ_AHEAD_RECORDS && bytes < READ_AHEAD_BYTES {
        match s.peek_next(after, len) {
            Ok(Some((id, payload))) => {
                (after, len) = (id, payload.len());
                bytes += payload.len();
                out.push((id, payload));
            }
            Ok(None) => break,
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}
