//! The worker's disk side: dead letters, appends behind the on-disk buffer, and the replay of
//! its oldest record. One store operation per call (run on a blocking thread by
//! [`SharedStore`](crate::buffer::SharedStore)), so the loop looks at reports and input in
//! between.

use tokio::time::Instant;
use tracing::{error, warn};

use super::super::encode::Message;
use super::super::store::{decode_record, encode_record};
use super::{DEAD_LETTER_FAILURE, KafkaWorker, Machine, Mode, SINK};
use crate::buffer::{AppendError, RecordId};

/// Messages per buffer record (and bytes of values): one record is produced, and waited for,
/// as a whole when replayed.
const RECORD_MESSAGES: usize = 10_000;
const RECORD_BYTES: usize = 1 << 20;

/// Lines refused for good, to be kept in the dead-letter store.
pub(super) struct DeadLetter {
    pub items: Vec<super::Item>,
    pub reason: String,
    /// `log_capturer_dead_letters_total` reason.
    pub label: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    ToProduce,
    Outstanding,
    Done,
}

/// The buffer record being replayed.
pub(super) struct Replay {
    pub id: RecordId,
    pub msgs: Vec<Message>,
    steps: Vec<Step>,
    /// The first message that may be `ToProduce` (all before it are not).
    next: usize,
    pub outstanding: usize,
    /// Messages not done (delivered or refused for good).
    left: usize,
    /// Refused for good: (index, reason), dead-lettered before the record is consumed.
    pub rejected: Vec<(usize, String)>,
    /// A message came back to be produced again (purged or failed).
    pub failed: bool,
}

impl Replay {
    pub fn new(id: RecordId, msgs: Vec<Message>) -> Self {
        let n = msgs.len();
        Replay {
            id,
            msgs,
            steps: vec![Step::ToProduce; n],
            next: 0,
            outstanding: 0,
            left: n,
            rejected: Vec::new(),
            failed: false,
        }
    }

    pub fn next_to_produce(&self) -> Option<usize> {
        (self.next < self.steps.len() && !self.failed).then_some(self.next)
    }

    pub fn produced(&mut self, index: usize) {
        if let Some(s) = self.steps.get_mut(index) {
            *s = Step::Outstanding;
            self.outstanding += 1;
        }
        while self.next < self.steps.len() && self.steps[self.next] != Step::ToProduce {
            self.next += 1;
        }
    }

    /// A report: `None` delivered; `Some(None)` to be produced again; `Some(Some(reason))`
    /// refused for good.
    pub fn reported(&mut self, index: u32, outcome: Option<Option<String>>) {
        let index = index as usize;
        let Some(step) = self.steps.get_mut(index) else {
            return;
        };
        if *step != Step::Outstanding {
            return;
        }
        self.outstanding -= 1;
        match outcome {
            None => {
                *step = Step::Done;
                self.left -= 1;
            }
            Some(Some(reason)) => {
                *step = Step::Done;
                self.left -= 1;
                self.rejected.push((index, reason));
            }
            Some(None) => {
                *step = Step::ToProduce;
                self.failed = true;
                self.next = self.next.min(index);
            }
        }
    }

    /// Every message delivered or refused: dead letters, then the consume, are left.
    pub fn complete(&self) -> bool {
        self.left == 0
    }
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
            if let Some(rp) = &mut m.replay
                && rp.failed
                && rp.outstanding == 0
                && !m.draining
            {
                // Produce it again (what was delivered is not) after a back-off.
                rp.failed = false;
                m.replay_at = now + m.replay_backoff.next_delay();
                return false;
            }
            match &m.replay {
                Some(rp) if rp.complete() => {
                    self.finish_replay(m).await;
                    return true;
                }
                None if !m.draining && now >= m.replay_at && self.buffered() > 0 => {
                    self.start_replay(m).await;
                    return true;
                }
                _ => {}
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
                    self.lines_done(m, item.dix, 1);
                }
            }
            Err(e) => {
                self.dead_letter_failed(&e, &dl.reason);
                self.disk_failed(m);
                self.stop_draining(m, "a dead letter could not be written");
            }
        }
    }

    fn kept_dead_letter(&self, id: RecordId, label: &'static str, n: usize, reason: &str) {
        self.status.recovered(DEAD_LETTER_FAILURE);
        self.status.set_dead_letters(self.dead_letters.pending().0);
        self.metrics
            .dead_letters
            .get_or_create(&Self::reason(label))
            .inc_by(n as u64);
        warn!(sink = SINK, %id, messages = n, %reason, "Kafka message refused; kept as a dead letter (see `log-capturer dlq list`)");
    }

    fn dead_letter_failed(&self, e: &AppendError, reason: &str) {
        self.status
            .failed(DEAD_LETTER_FAILURE, &format!("dead-letter store: {e}"));
        self.sink_failure("dead_letter");
        self.failed("dead_letter", 1);
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
                m.append_at = Instant::now();
                let mut run: Option<(u64, usize)> = None;
                for item in m.waiting.drain(..n).collect::<Vec<_>>() {
                    match &mut run {
                        Some((dix, k)) if *dix == item.dix => *k += 1,
                        _ => {
                            if let Some((dix, k)) = run.take() {
                                self.lines_done(m, dix, k);
                            }
                            run = Some((item.dix, 1));
                        }
                    }
                }
                if let Some((dix, k)) = run {
                    self.lines_done(m, dix, k);
                }
            }
            Err(AppendError::Full { used, max }) => {
                m.buffer_full = true;
                if self.buffered() == 0 {
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
                m.append_at = Instant::now() + m.append_backoff.next_delay();
                self.metrics
                    .buffer_errors
                    .get_or_create(&Self::reason("append"))
                    .inc();
                error!(sink = SINK, error = %e, "cannot write the on-disk buffer; retrying");
                self.stop_draining(m, "the on-disk buffer cannot be written");
            }
        }
    }

    async fn start_replay(&self, m: &mut Machine) {
        let (id, bytes) = match self.buffer.with(|s| s.peek()).await {
            Ok(Ok(Some(x))) => x,
            Ok(Ok(None)) => {
                self.disk_failed(m);
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
            Ok(Err(e)) => return self.buffer_error(m, "read", &e.to_string()),
            Err(e) => return self.buffer_error(m, "read", &e),
        };
        let msgs = match decode_record(&bytes) {
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
        m.replay = Some(Replay::new(id, msgs));
    }

    /// Dead-letters what the brokers refused of the replayed record, then consumes it.
    async fn finish_replay(&self, m: &mut Machine) {
        let Some(rp) = &mut m.replay else {
            return;
        };
        if let Some((index, reason)) = rp.rejected.last() {
            let msg = rp.msgs.get(*index).cloned();
            let record = encode_record(Some(reason.clone()), msg.as_slice());
            match self.dead_letters.append(record).await {
                Ok(id) => {
                    self.kept_dead_letter(id, "rejected", 1, reason);
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
        let id = rp.id;
        match self.buffer.with(move |s| s.consume(id)).await {
            Ok(Ok(())) => {
                m.replay = None;
                m.buffer_full = false;
                m.chunk_one = false;
                m.replay_backoff.reset();
                self.disk_ok(m);
                self.update_buffer_gauges();
            }
            Ok(Err(e)) => self.buffer_error(m, "consume", &e.to_string()),
            Err(e) => self.buffer_error(m, "consume", &e),
        }
    }

    fn buffer_error(&self, m: &mut Machine, op: &'static str, e: &str) {
        self.disk_failed(m);
        self.metrics
            .buffer_errors
            .get_or_create(&Self::reason(op))
            .inc();
        let what = if op == "consume" {
            "cannot advance the on-disk buffer past a delivered record; retrying (it is not produced again)"
        } else {
            "cannot read the on-disk buffer; retrying"
        };
        error!(sink = SINK, op, error = %e, "{what}");
    }
}
