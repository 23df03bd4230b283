//! The reader's hand-over: a chunk split into lines, run through the processor, and handed
//! to the pipeline queue as one batch charged to the queue budget.

use std::sync::Arc;

use bytes::Bytes;

use super::{Flush, Open, Tail};
use crate::capture::{Cursor, Position};
use crate::clock::now_ns;
use crate::pipeline::{Batch, Delivery, LogLine};
use crate::processing::StageContext;

impl Tail {
    /// Splits `chunk` into lines, runs them through the processor, and hands the batch over.
    /// False when cancelled.
    pub(super) async fn deliver(
        &mut self,
        st: &mut Open,
        chunk: Option<Bytes>,
        flush: Flush,
    ) -> bool {
        let ts = now_ns();
        let chunk_len = chunk.as_ref().map_or(0, Bytes::len);
        // Sized for ~100-byte lines: one allocation per chunk in the common case.
        let mut lines = Vec::with_capacity(chunk_len / 96 + 1);
        let mut starts = Vec::new();
        let want_starts = self.processor.is_some();
        if let Some(chunk) = chunk {
            st.splitter
                .push(chunk, ts, &mut lines, want_starts.then_some(&mut starts));
        }
        if flush != Flush::None
            && st
                .splitter
                .flush(ts, &mut lines, want_starts.then_some(&mut starts))
        {
            self.ctx.metrics.files.partial_flushes.inc();
        }
        let read_lines = lines.len();
        let mut offset = st.splitter.committed();
        if let Some(p) = &mut self.processor {
            let cx = StageContext {
                container: &self.meta,
                now_ns: ts,
            };
            let mut records = Vec::with_capacity(lines.len());
            for (line, start) in lines.drain(..).zip(starts.drain(..)) {
                // The processor keeps positions as a cursor's; a file offset rides in a
                // stdout position's timestamp (only `hold` reads it back, below).
                let before = Position {
                    timestamp_ns: start as i64,
                    count: 0,
                };
                p.push(line, before, &cx, &mut records);
            }
            match flush {
                Flush::All => {
                    p.flush_all(&cx, &mut records);
                }
                Flush::Due | Flush::None => {
                    p.flush_due(ts, &cx, &mut records);
                }
            }
            lines = records;
            let mut cursor = Cursor::at(offset as i64);
            p.hold(&mut cursor);
            offset = u64::try_from(cursor.streams.stdout.timestamp_ns).unwrap_or(0);
        }
        let m = &self.ctx.metrics.files;
        m.lines.inc_by(read_lines as u64);
        let truncated = std::mem::take(&mut st.splitter.truncated);
        if truncated > 0 {
            self.ctx.metrics.lines_truncated.inc_by(truncated);
        }
        if lines.is_empty() && offset == st.handed {
            return true;
        }
        // Without processing the lines are slices of the chunk: the batch holds the chunk.
        // Processing may add joined messages and extras: those are counted too.
        let held = if self.processor.is_some() {
            let extra: usize = lines
                .iter()
                .filter_map(|l| l.extra.as_deref())
                .map(crate::processing::Extra::heap_bytes)
                .sum();
            chunk_len.max(batch_bytes(&lines)) + extra
        } else {
            chunk_len.max(st.splitter.committed().saturating_sub(st.handed) as usize)
        };
        let charge = self.ctx.budget.charge(lines.capacity(), held);
        let line_count = lines.len();
        let batch = Batch {
            container: Arc::clone(&self.meta),
            lines,
            position: crate::pipeline::AckPosition::File(self.position(st, offset)),
        };
        let permit = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return false,
            p = self.ctx.budget.acquire(charge, line_count) => match p {
                Some(p) => p,
                None => return false,
            },
        };
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return false,
            sent = self.ctx.pipeline.send(Delivery::new(batch, permit)) => if sent.is_err() {
                return false;
            },
        }
        st.handed = offset;
        true
    }
}

fn batch_bytes(lines: &[LogLine]) -> usize {
    lines.iter().map(|l| l.message.len()).sum()
}
