//! `multiline`: joins continuation lines (stack traces, Go panics) into the record of the line
//! that starts the group, per stream.
//!
//! Exactness: a group's lines are admitted by the resume filter as they are read, but the
//! cursor handed to checkpoints must not move past the group's *first* line until the group
//! is emitted. So each open group remembers its stream's position just before its first line
//! ([`Multiline::hold`] puts it back into a batch's cursor). When a session ends with a group
//! open (rotation, reconnect, crash), the group is dropped unemitted, and the next session
//! reads its lines again from that position: never lost, never emitted twice or half.

use bytes::{Bytes, BytesMut};
use prometheus_client::metrics::counter::Counter;
use regex::bytes::Regex;

use super::config::MultilineConfig;
use super::metrics::GROUP_ENDS;
use super::stage::BuildError;
use crate::capture::{Cursor, Position};
use crate::pipeline::{LogLine, StreamKind};

#[derive(Clone, Debug)]
enum Boundary {
    /// A matching line starts a group.
    Start(Regex),
    /// A matching line continues the group; any other starts one.
    Continue(Regex),
}

#[derive(Clone, Debug)]
struct Group {
    /// The first line (its timestamp, stream and flags are the record's).
    first: LogLine,
    /// The joined message once a second line came (the first alone is not copied).
    joined: Option<BytesMut>,
    lines: u32,
    bytes: usize,
    truncated: bool,
    /// Docker timestamp of the last line (for `flush_after`).
    last_ts_ns: i64,
    /// The stream's position just before the first line.
    before: Position,
}

impl Group {
    fn open(line: LogLine, before: Position) -> Group {
        Group {
            bytes: line.message.len(),
            truncated: line.truncated,
            last_ts_ns: line.ts_ns,
            lines: 1,
            joined: None,
            first: line,
            before,
        }
    }

    fn append(&mut self, line: &LogLine) {
        let joined = self.joined.get_or_insert_with(|| {
            let mut b = BytesMut::with_capacity(self.bytes * 4 + line.message.len() + 1);
            b.extend_from_slice(&self.first.message);
            b
        });
        joined.extend_from_slice(b"\n");
        joined.extend_from_slice(&line.message);
        self.bytes += 1 + line.message.len();
        self.lines += 1;
        self.truncated |= line.truncated;
        self.last_ts_ns = self.last_ts_ns.max(line.ts_ns);
    }

    fn into_record(self) -> LogLine {
        let mut record = self.first;
        if let Some(joined) = self.joined {
            record.message = Bytes::from(joined);
            record.truncated = self.truncated;
            record.extra_mut().joined_lines = self.lines;
        }
        record
    }
}

/// Per-stream group state of one container (stdout or TTY, and stderr).
#[derive(Clone, Debug)]
pub struct Multiline {
    boundary: Boundary,
    max_lines: u32,
    max_bytes: usize,
    flush_after_ns: i64,
    open: [Option<Group>; 2],
    /// Groups emitted, by how they ended (indexed like [`GROUP_ENDS`]).
    ends: [Counter; 5],
    /// Groups emitted since the last [`Multiline::take_finished`], which adds them to `ends`:
    /// a group whose batch is never handed over is read and emitted again, and counted once.
    ended: [u64; 5],
    /// Input lines (per stream index) and bytes that left the stage in emitted groups since
    /// the last [`Multiline::take_finished`].
    finished: ([u64; 2], u64),
}

const NEXT_GROUP: usize = 0;
const MAX_LINES: usize = 1;
const MAX_BYTES: usize = 2;
const FLUSH_AFTER: usize = 3;
const STREAM_END: usize = 4;

fn index(stream: StreamKind) -> usize {
    match stream {
        StreamKind::Stderr => 1,
        StreamKind::Stdout | StreamKind::Tty => 0,
    }
}

impl Multiline {
    /// `ends`: the group counter for each of [`GROUP_ENDS`], in that order.
    pub fn build(config: &MultilineConfig, ends: [Counter; 5]) -> Result<Multiline, BuildError> {
        debug_assert_eq!(GROUP_ENDS.len(), 5);
        let compile = |key: &'static str, pattern: &str| {
            Regex::new(pattern).map_err(|e| BuildError::at(key, format!("invalid regex: {e}")))
        };
        let boundary = match (&config.start, &config.continue_) {
            (Some(start), None) => Boundary::Start(compile("start", start)?),
            (None, Some(cont)) => Boundary::Continue(compile("continue", cont)?),
            _ => {
                return Err(BuildError::at(
                    "",
                    "give exactly one of `start` (a regex for the first line of a group) and \
                     `continue` (a regex for the lines that continue one)",
                ));
            }
        };
        if config.max_lines == 0 {
            return Err(BuildError::at("max_lines", "must be at least 1"));
        }
        if config.max_bytes.0 == 0 {
            return Err(BuildError::at("max_bytes", "must be at least 1 byte"));
        }
        let flush_after = config.flush_after.0;
        if flush_after.is_zero() {
            return Err(BuildError::at(
                "flush_after",
                "must be above 0 (the last group of a quiet stream waits this long)",
            ));
        }
        Ok(Multiline {
            boundary,
            max_lines: u32::try_from(config.max_lines).unwrap_or(u32::MAX),
            max_bytes: usize::try_from(config.max_bytes.0).unwrap_or(usize::MAX),
            flush_after_ns: i64::try_from(flush_after.as_nanos()).unwrap_or(i64::MAX),
            open: [None, None],
            ends,
            ended: [0; 5],
            finished: ([0, 0], 0),
        })
    }

    fn starts_group(&self, message: &[u8]) -> bool {
        match &self.boundary {
            Boundary::Start(re) => re.is_match(message),
            Boundary::Continue(re) => !re.is_match(message),
        }
    }

    fn emit(&mut self, i: usize, end: usize, out: &mut Vec<LogLine>) {
        if let Some(group) = self.open[i].take() {
            self.ended[end] += 1;
            self.finished.0[i] += u64::from(group.lines);
            // The input bytes: without the newlines the join added.
            self.finished.1 += (group.bytes - (group.lines as usize - 1)) as u64;
            out.push(group.into_record());
        }
    }

    /// One line, admitted by the resume filter; `before` is its stream's position just
    /// before it. Groups it completes are appended to `out`.
    pub fn push(&mut self, line: LogLine, before: Position, out: &mut Vec<LogLine>) {
        let i = index(line.stream);
        let starts = self.starts_group(&line.message);
        if let Some(group) = &mut self.open[i] {
            if !starts {
                if group.bytes + 1 + line.message.len() <= self.max_bytes {
                    group.append(&line);
                    if group.lines >= self.max_lines {
                        self.emit(i, MAX_LINES, out);
                    }
                    return;
                }
                // Too big with this line: the group goes as it is, the line starts the next.
                self.emit(i, MAX_BYTES, out);
            } else {
                self.emit(i, NEXT_GROUP, out);
            }
        }
        // A continuation with no group open (the first line read is mid-trace) starts one.
        self.open[i] = Some(Group::open(line, before));
        if self.max_lines == 1 {
            self.emit(i, MAX_LINES, out);
        }
    }

    /// Moves `cursor` back before the first line of every open group.
    ///
    /// The group's first line also counts as begun but not delivered (`unfinished_ns`): the
    /// reopen's `since` assumes a stream's undelivered lines are stamped no earlier than the
    /// other stream's position less the reorder slack, as lines not read yet are; a held
    /// group's lines were read long before, and without this the reopen would not serve the
    /// first lines of a group that stayed open while the other stream went on.
    pub fn hold(&self, cursor: &mut Cursor) {
        if let Some(g) = &self.open[0] {
            cursor.streams.stdout = g.before;
        }
        if let Some(g) = &self.open[1] {
            cursor.streams.stderr = g.before;
        }
        for g in self.open.iter().flatten() {
            let first = g.first.ts_ns;
            let unfinished = &mut cursor.streams.unfinished_ns;
            *unfinished = Some(unfinished.map_or(first, |u| u.min(first)));
        }
    }

    pub fn has_open_group(&self) -> bool {
        self.open.iter().any(Option::is_some)
    }

    /// When (ns since the epoch, wall clock) the earliest open group is due for `flush_after`.
    pub fn due_ns(&self) -> Option<i64> {
        self.open
            .iter()
            .flatten()
            .map(|g| g.last_ts_ns.saturating_add(self.flush_after_ns))
            .min()
    }

    /// Emits the groups whose stream has been quiet for `flush_after` at `now_ns`.
    pub fn flush_due(&mut self, now_ns: i64, out: &mut Vec<LogLine>) {
        for i in 0..2 {
            let due = self.open[i]
                .as_ref()
                .is_some_and(|g| g.last_ts_ns.saturating_add(self.flush_after_ns) <= now_ns);
            if due {
                self.emit(i, FLUSH_AFTER, out);
            }
        }
    }

    /// Emits every open group: the container's output has ended.
    pub fn flush_all(&mut self, out: &mut Vec<LogLine>) {
        // stdout's group first, as a reader of `docker logs` would see them (either order is
        // exact: streams have their own positions).
        for i in 0..2 {
            self.emit(i, STREAM_END, out);
        }
    }

    /// Input lines (stdout/tty, stderr) and bytes emitted in groups since the last call; the
    /// groups emitted since are added to the group counters (call it when their batch is
    /// handed over).
    pub fn take_finished(&mut self) -> ([u64; 2], u64) {
        for (counter, n) in self.ends.iter().zip(std::mem::take(&mut self.ended)) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
        std::mem::take(&mut self.finished)
    }
}

#[cfg(test)]
#[path = "multiline_tests.rs"]
mod tests;
