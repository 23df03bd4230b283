//! One session of a capture task: a source read from the cursor until rotation, EOF, an
//! error or cancellation, its lines filtered, processed and handed over in batches.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{Level, enabled, trace, warn};

use super::batch::{LineCounts, SessionCounters, compact, line_summary};
use super::{CaptureTask, SessionEnd};
use crate::capture::assembler::Assembler;
use crate::capture::coalesce::Coalescer;
use crate::capture::cursor::ResumeFilter;
use crate::capture::error::{CaptureError, StreamErrorReason};
use crate::capture::pause::PauseTimer;
use crate::capture::rotation::{AtDeadline, RotationGate};
use crate::capture::source::{Source, Taken};
use crate::clock::now_ns;
use crate::observability::status::ContainerStatus;
use crate::pipeline::{Batch, Delivery, LogLine};
use crate::processing::{Processor, StageContext};

/// How long a stream must have sent nothing before its due multiline group is flushed.
const QUIET_BEFORE_FLUSH: Duration = Duration::from_millis(250);

impl CaptureTask {
    /// Reads one source until rotation, EOF, error or cancellation. `final_read`: the container
    /// has stopped, so a line still open at the end of the stream is complete as it is.
    pub(in crate::capture) async fn session(
        &mut self,
        mut source: Source,
        opened: Instant,
        rotation_interval: Duration,
        final_read: bool,
        status: &ContainerStatus,
    ) -> SessionEnd {
        let ctx = Arc::clone(&self.ctx);
        let deadline = tokio::time::sleep_until((opened + rotation_interval).into());
        tokio::pin!(deadline);
        let mut rotation = RotationGate::new(rotation_interval, opened, now_ns());
        let mut resume = ResumeFilter::new(self.cursor.get());
        let mut assembler = Assembler::new(ctx.max_line_bytes);
        let mut lines: Vec<LogLine> = Vec::new();
        let mut emitted: u64 = 0;
        let mut counters =
            SessionCounters::new(&ctx.metrics, &self.meta.borrow_and_update().name, self.tty);
        let mut coalescer = Coalescer::new(Instant::now());
        let mut timer = PauseTimer::default();
        let mut processor = self.processor.clone();
        // When the open multiline group of a quiet stream is due (see `flush_after`).
        let flush_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(flush_timer);
        let mut last_read = Instant::now();
        loop {
            let flush_due = processor.as_ref().and_then(Processor::due_ns);
            if let Some(due) = flush_due {
                let wait = Duration::from_nanos(u64::try_from(due - now_ns()).unwrap_or(0));
                // Due by Docker's timestamps, and the stream quiet for a moment: a reopen
                // serves an old group's lines in several chunks, and a due group must not
                // be cut between two of them.
                let at = (Instant::now() + wait).max(last_read + QUIET_BEFORE_FLUSH);
                flush_timer.as_mut().reset(at.into());
            }
            // Lines already there are read before a due group is flushed: the group may
            // still get its continuation (the stream arm comes first).
            let event = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return SessionEnd::Cancelled,
                _ = &mut deadline => match rotation.at_deadline(Instant::now()) {
                    AtDeadline::Rotate => return SessionEnd::Rotate,
                    AtDeadline::NotBefore(at) => {
                        deadline.as_mut().reset(at.into());
                        continue;
                    }
                },
                c = source.ready() => Some(c),
                _ = &mut flush_timer, if flush_due.is_some() => None,
            };
            let flushing = event.is_none();
            // Gather what is already there into one batch (see `Source::take`).
            // A failure ends the session, but only after the lines completed before it are
            // handed over: the daemon may not be able to serve them again (a removed container).
            let Taken {
                gathered,
                eof,
                failure,
            } = match event {
                Some(ready) => source.take(ready, &mut assembler, &mut lines),
                None => Taken {
                    gathered: 0,
                    eof: false,
                    failure: None,
                },
            };
            let read_lines = lines.len();
            if gathered > 0 {
                let newest = if rotation.caught_up() {
                    None
                } else {
                    lines.iter().map(|l| l.ts_ns).max()
                };
                last_read = Instant::now();
                rotation.on_read(last_read, newest);
            }
            if eof && failure.is_none() {
                source.finish(&mut assembler, &mut lines);
                // While the container runs, a line open at the end of the stream may still get
                // its last pieces: it stays unfinished, and the reopen serves it again.
                if final_read {
                    assembler.flush(&mut lines);
                }
            }
            if assembler.unstamped > 0 {
                ctx.metrics
                    .stream_error(StreamErrorReason::LineWithoutTimestamp);
                assembler.unstamped = 0;
            }
            let before_filter = lines.len();
            let (cursor, processed) = match &mut processor {
                None => {
                    resume.filter(&mut lines);
                    (resume.cursor(assembler.earliest_open_ns()), None)
                }
                Some(p) => {
                    let meta = self.meta.borrow().clone();
                    let cx = StageContext {
                        container: &meta,
                        now_ns: now_ns(),
                    };
                    let mut records = Vec::with_capacity(lines.len());
                    let mut admitted = 0;
                    for mut line in lines.drain(..) {
                        let before = resume.position(line.stream);
                        if resume.admit_line(&mut line) {
                            admitted += 1;
                            p.push(line, before, &cx, &mut records);
                        }
                    }
                    if flushing {
                        p.flush_due(now_ns(), &cx, &mut records);
                    }
                    // The stream ended cleanly: its open groups end with it. Most often the
                    // container stopped, and may be removed before a reopen could serve the
                    // group again (`--rm`: its last stack trace would be lost). After a daemon
                    // restart a group may be cut in two; nothing is lost or repeated.
                    if eof && failure.is_none() {
                        p.flush_all(&cx, &mut records);
                    }
                    lines = records;
                    let mut cursor = resume.cursor(assembler.earliest_open_ns());
                    // Not past the first line of a group still open.
                    p.hold(&mut cursor);
                    (cursor, Some(admitted))
                }
            };
            if processed.is_none() && before_filter > lines.len() {
                trace!(container = %self.name(), skipped = before_filter - lines.len(),
                    "lines already delivered skipped");
            }
            // With processing, a read whose lines were all dropped (or all went into an open
            // group) can still move the cursor: hand that over too, so dropped lines are
            // acknowledged and never read again.
            // Positions only: a cursor that differs just in `unfinished_ns` (a reopen that
            // has not re-read a held group yet) must not replace the held one.
            let moved = processed.is_some() && cursor.positions_differ(&self.cursor.get());
            if !lines.is_empty() || moved {
                let line_count = lines.len();
                // The lines are slices of the read buffers; copied into one buffer of their
                // exact size, a batch holds what the budget charges and no more (see `compact`).
                let message_bytes = compact(&mut lines);
                // The next batch will likely be as large: size it once instead of regrowing
                // (within reason: an idle stream should not keep a burst-sized vector).
                let next_lines = Vec::with_capacity(line_count.min(1024));
                let batch = Batch {
                    container: self.meta.borrow().clone(),
                    lines: std::mem::replace(&mut lines, next_lines),
                    position: cursor.into(),
                };
                // Waiting for budget and queue room is where backpressure pauses reading. Both
                // race rotation too (for a caught-up stream): an unsent batch is simply re-read
                // after the reopen, because the shared cursor only moves once the batch is
                // handed over.
                // What processing added lives as long as the batch: charged with it (only a
                // pipeline adds extras, so the path without one skips the pass).
                let extra_bytes: usize = if processed.is_some() {
                    batch
                        .lines
                        .iter()
                        .filter_map(|l| l.extra.as_deref())
                        .map(crate::processing::Extra::heap_bytes)
                        .sum()
                } else {
                    0
                };
                let charge = ctx
                    .budget
                    .charge(batch.lines.capacity(), message_bytes + extra_bytes);
                let permit = tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return SessionEnd::Cancelled,
                    _ = &mut deadline, if rotation.may_rotate_while_not_reading() => return SessionEnd::Rotate,
                    p = ctx.budget.acquire(charge, line_count) => match p {
                        Some(p) => p,
                        None => return SessionEnd::Cancelled,
                    },
                };
                let first_ts_ns = batch.lines.first().map_or(0, |l| l.ts_ns);
                let mut delivered = LineCounts::of(&batch.lines);
                let summary = enabled!(Level::TRACE).then(|| line_summary(&batch.lines));
                tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return SessionEnd::Cancelled,
                    _ = &mut deadline, if rotation.may_rotate_while_not_reading() => return SessionEnd::Rotate,
                    sent = ctx.pipeline.send(Delivery::new(batch, permit)) => {
                        if sent.is_err() {
                            return SessionEnd::Cancelled;
                        }
                    }
                }
                if let Some(lines) = summary {
                    trace!(container = %self.name(), lines, since = %cursor.since_text(),
                        cursor = ?cursor.streams,
                        "batch handed over");
                }
                self.cursor.set(cursor);
                if let Some(p) = &mut processor {
                    // Collected counts what was read, not what processing made of it: the
                    // input lines emitted (in a group or alone) or dropped since the last batch.
                    let ([first, err], bytes) = p.take_finished();
                    delivered = LineCounts {
                        first,
                        err,
                        bytes,
                        truncated: delivered.truncated,
                    };
                }
                // Counted once handed over: a batch dropped by a rotation is re-read, and must
                // not be counted twice. A rename since the last batch counts under the new name.
                if self.meta.has_changed().unwrap_or(false) {
                    counters = SessionCounters::new(
                        &ctx.metrics,
                        &self.meta.borrow_and_update().name,
                        self.tty,
                    );
                }
                counters.count(&delivered, &ctx.metrics);
                status.delivered(line_count as u64, first_ts_ns);
                // New lines read, whatever processing made of them (the end-of-stream logic
                // asks whether a session brought anything).
                emitted += processed.unwrap_or(line_count) as u64;
            }
            if let Some(end) = failure {
                return end;
            }
            if eof {
                return SessionEnd::Eof {
                    lines: emitted,
                    // Open multiline groups were flushed at the end of the stream.
                    unfinished: assembler.has_open_line(),
                };
            }
            // A busy stream that has been caught up with waits a moment before the next read,
            // so that one read brings many lines instead of a few (see `coalesce`).
            let pause = coalescer.after_read(read_lines, gathered, Instant::now());
            if let Some(pause) = pause.filter(|_| source.coalesces()) {
                if let Err(e) = source.park() {
                    return SessionEnd::Error(CaptureError::failed(
                        StreamErrorReason::Read,
                        e.to_string(),
                    ));
                }
                tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return SessionEnd::Cancelled,
                    _ = &mut deadline, if rotation.may_rotate_while_not_reading() => return SessionEnd::Rotate,
                    failed = timer.sleep(pause) => if let Some(e) = failed {
                        ctx.metrics.stream_error(StreamErrorReason::PauseTimer);
                        warn!(container = %self.name(), error = %e,
                            "no sub-millisecond timer; pausing with the 1 ms one for this stream");
                    }
                }
            }
        }
    }
}
