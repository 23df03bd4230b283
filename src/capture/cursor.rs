//! The resume position of a container, and the filter that makes a reopened stream exact.
//!
//! What the daemon does (json-file, verified): a log entry is one message of one stream, stamped
//! when it was read from the container. Docker splits a line over 16 KiB into pieces that all
//! carry the *first* piece's timestamp, and the other stream's entries can come between them,
//! so timestamps are non-decreasing within a stream but not across streams in file order
//! (`out piece t1`, `err t2`, `out tail t1`). `since=T` serves, in file order, every entry
//! stamped `>= T`.
//!
//! Nor is a line's stamp the moment it reaches the file: each stream has its own copier in
//! dockerd, which stamps an entry when it reads it from the container's pipe and writes it
//! once it holds the log file's lock. So an entry can land in the file after an entry of the
//! other stream stamped later than it (seen: a 16 KiB piece stamped 12 µs before an `err`
//! line, and written after it). Within one stream, file order is stamp order.
//!
//! The cursor therefore keeps, per stream, the position of the last delivered line — its
//! timestamp and how many lines of that stream with exactly that timestamp were delivered —
//! and the timestamp of the earliest line begun but not delivered yet (its pieces must be
//! served again). A reopen asks for a `since` at or before every entry not yet delivered (see
//! [`Cursor::since_ns`]), and [`ResumeFilter`] skips, per stream, exactly the lines already
//! delivered. Whatever point of a session a rotation, reconnect or crash falls on, no entry the
//! agent has not delivered is skipped, and none is delivered twice.
//!
//! One container has three cursors, each with its name:
//! - the session's own, inside the [`ResumeFilter`]: what this session has admitted so far;
//! - the [`DeliveredCursor`]: what capture has handed over to the pipeline (moved with each
//!   delivery, shared with discovery and the status board);
//! - the [`AckedCursor`]: what every sink has acknowledged, released by the ledger in order;
//!   the checkpoint stores it and a restart resumes from it.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

use super::assembler::UNSTAMPED;
use crate::pipeline::{LogLine, StreamKind};

/// A `since` (ns since the epoch) as logged: RFC 3339 (UTC, ns), or `start of log` for 0.
pub fn since_text(since_ns: i64) -> String {
    if since_ns <= 0 {
        "start of log".to_string()
    } else {
        crate::docker::timestamp::format_rfc3339_nanos(since_ns)
    }
}

/// How much earlier than an entry already in the log file a later entry of the other stream
/// may be stamped (the copiers' race between stamping and writing, above). It lasts
/// microseconds; a second leaves room for a daemon starved of CPU. A reopen re-reads at most
/// this much of the stream that is ahead, and the filter drops it again.
pub const REORDER_SLACK_NS: i64 = 1_000_000_000;

/// Where one stream stands: the last delivered line's timestamp and how many lines of this
/// stream carrying exactly that timestamp were delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub timestamp_ns: i64,
    pub count: u64,
}

impl Position {
    fn deliver(&mut self, ts_ns: i64) {
        if ts_ns > self.timestamp_ns {
            *self = Position {
                timestamp_ns: ts_ns,
                count: 1,
            };
        } else if ts_ns == self.timestamp_ns {
            self.count += 1;
        }
    }
}

/// The per-stream part of a cursor, as persisted in checkpoint files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamPositions {
    /// stdout, or the only stream of a TTY container.
    pub stdout: Position,
    pub stderr: Position,
    /// Earliest timestamp of a line begun (some of its pieces read) but not delivered yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unfinished_ns: Option<i64>,
}

/// The cursor handed over to the pipeline: moved by the capture task at each delivery, read by
/// discovery (which keeps it across stops and starts of the container) and the status board.
/// Clones share it. No `Default` on purpose: a default one would be shared with no one.
#[derive(Clone, Debug)]
pub struct DeliveredCursor(Arc<Mutex<Cursor>>);

impl DeliveredCursor {
    pub fn new(start: Cursor) -> Self {
        DeliveredCursor(Arc::new(Mutex::new(start)))
    }

    /// The cursor now. A poisoned lock still holds a whole cursor (it is `Copy` and written in
    /// one assignment), so it is read all the same.
    pub fn get(&self) -> Cursor {
        match self.0.lock() {
            Ok(c) => *c,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Moves it (the capture task, at each delivery).
    pub(crate) fn set(&self, value: Cursor) {
        match self.0.lock() {
            Ok(mut c) => *c = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}

/// The cursor every sink has acknowledged: what the ledger releases and the checkpoint stores
/// (see `pipeline::AckPosition`, `checkpoint::CheckpointStore::ack`). A type alias: it is a
/// [`Cursor`] by value, and a newtype would have to be unwrapped wherever a checkpoint is read.
pub type AckedCursor = Cursor;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub streams: StreamPositions,
    /// From a checkpoint written by an older version, which counted the lines delivered at its
    /// timestamp over both streams together: that many lines stamped `since_ns()` are skipped,
    /// whatever their stream, before anything is admitted. 0 otherwise.
    pub legacy_count: u64,
}

impl Cursor {
    /// Nothing delivered yet; start reading at `ts_ns`.
    pub fn at(ts_ns: i64) -> Self {
        let start = Position {
            timestamp_ns: ts_ns,
            count: 0,
        };
        Cursor {
            streams: StreamPositions {
                stdout: start,
                stderr: start,
                unfinished_ns: None,
            },
            legacy_count: 0,
        }
    }

    /// A cursor of an older version's checkpoint: `count` lines stamped `ts_ns` delivered.
    pub fn legacy(ts_ns: i64, count: u64) -> Self {
        Cursor {
            legacy_count: count,
            ..Cursor::at(ts_ns)
        }
    }

    /// The `since` of the next reopen (inclusive): at or before every entry not delivered yet.
    /// That is the earliest unfinished line, and for the rest, each stream's next entry is
    /// stamped at or after both its own last delivered line and, less the reorder slack, the
    /// other stream's (it comes after that one in the file). Asking for the later stream's
    /// position alone lost a line whose first piece was written after an `err` stamped later.
    pub fn since_ns(&self) -> i64 {
        let s = &self.streams;
        let (behind, ahead) = (
            s.stdout.timestamp_ns.min(s.stderr.timestamp_ns),
            s.stdout.timestamp_ns.max(s.stderr.timestamp_ns),
        );
        let settled = behind.max(ahead.saturating_sub(REORDER_SLACK_NS));
        s.unfinished_ns.map_or(settled, |u| u.min(settled))
    }

    /// `since_ns()` for people: an RFC 3339 time (UTC, ns), or `start of log` for 0 (what a
    /// container without checkpoint read from its first line asks for). Logged next to the
    /// raw value, which is what `since=` sends and the checkpoint file holds.
    pub fn since_text(&self) -> String {
        since_text(self.since_ns())
    }

    /// Lines stamped `since_ns()` already delivered, over both streams (what older versions
    /// stored as `count`; kept in checkpoint files so they stay readable by people and tools).
    pub fn count_at_since(&self) -> u64 {
        let since = self.since_ns();
        let s = &self.streams;
        // Saturating: counts come from checkpoint files, which can hold anything.
        [s.stdout, s.stderr]
            .iter()
            .filter(|p| p.timestamp_ns == since)
            .fold(self.legacy_count, |sum, p| sum.saturating_add(p.count))
    }

    fn position_mut(&mut self, stream: StreamKind) -> &mut Position {
        match stream {
            StreamKind::Stderr => &mut self.streams.stderr,
            StreamKind::Stdout | StreamKind::Tty => &mut self.streams.stdout,
        }
    }

    /// Nothing was ever delivered from this cursor (it is still `Cursor::at` its start).
    pub fn delivered_nothing(&self) -> bool {
        *self == Cursor::at(self.streams.stdout.timestamp_ns)
    }

    /// Records one more delivered line of `stream`.
    pub fn deliver(&mut self, stream: StreamKind, ts_ns: i64) {
        self.position_mut(stream).deliver(ts_ns);
    }

    /// Whether the positions differ (either stream, or the legacy count) — `unfinished_ns`
    /// aside: a batch that only changes that has nothing to hand over (see the capture task).
    pub fn positions_differ(&self, other: &Cursor) -> bool {
        self.streams.stdout != other.streams.stdout
            || self.streams.stderr != other.streams.stderr
            || self.legacy_count != other.legacy_count
    }

    /// Whether `self` is at or beyond `other`: neither stream has gone back.
    pub fn is_at_or_after(&self, other: &Cursor) -> bool {
        self.streams.stdout >= other.streams.stdout && self.streams.stderr >= other.streams.stderr
    }
}

/// Filters a reopened stream so that only lines not yet delivered pass, and keeps the cursor of
/// what has been delivered since.
#[derive(Debug)]
pub struct ResumeFilter {
    target: Cursor,
    /// Lines seen per stream at the target position's timestamp (stdout/tty, stderr).
    seen: [u64; 2],
    legacy_left: u64,
    cursor: Cursor,
    /// Timestamp of the latest line seen, for a line that comes without one.
    last_ts_ns: i64,
}

impl ResumeFilter {
    pub fn new(target: Cursor) -> Self {
        ResumeFilter {
            target,
            seen: [0, 0],
            legacy_left: target.legacy_count,
            cursor: target,
            last_ts_ns: target
                .streams
                .stdout
                .timestamp_ns
                .max(target.streams.stderr.timestamp_ns),
        }
    }

    /// Whether a complete line of `stream` stamped `ts_ns` is new; if so it counts as delivered.
    pub fn admit(&mut self, stream: StreamKind, ts_ns: i64) -> bool {
        self.last_ts_ns = self.last_ts_ns.max(ts_ns);
        let (target, seen) = match stream {
            StreamKind::Stderr => (self.target.streams.stderr, &mut self.seen[1]),
            StreamKind::Stdout | StreamKind::Tty => (self.target.streams.stdout, &mut self.seen[0]),
        };
        if ts_ns < target.timestamp_ns {
            return false;
        }
        if ts_ns == target.timestamp_ns && *seen < target.count {
            *seen += 1;
            return false;
        }
        if self.legacy_left > 0 {
            if ts_ns == self.target.since_ns() {
                // Delivered by the older version: skip it, and now count it per stream.
                self.legacy_left -= 1;
                self.cursor.legacy_count = self.legacy_left;
                self.cursor.deliver(stream, ts_ns);
                return false;
            }
            self.legacy_left = 0;
            self.cursor.legacy_count = 0;
        }
        self.cursor.deliver(stream, ts_ns);
        true
    }

    /// Keeps the lines not delivered yet, in order. A line that came without a timestamp
    /// cannot be placed by the filter: it is always kept (the assembler counted it), stamped
    /// with the latest timestamp seen (at first, the latest delivered before the session) so
    /// it sorts where it was read, and it moves no cursor.
    pub fn filter(&mut self, lines: &mut Vec<LogLine>) {
        lines.retain_mut(|line| self.admit_line(line));
    }

    /// [`ResumeFilter::filter`] for one line: whether it is new (then it counts as delivered).
    pub fn admit_line(&mut self, line: &mut LogLine) -> bool {
        if line.ts_ns == UNSTAMPED {
            line.ts_ns = self.last_ts_ns;
            return true;
        }
        self.admit(line.stream, line.ts_ns)
    }

    /// Where `stream` stands now: after the last line of it admitted.
    pub fn position(&self, stream: StreamKind) -> Position {
        match stream {
            StreamKind::Stderr => self.cursor.streams.stderr,
            StreamKind::Stdout | StreamKind::Tty => self.cursor.streams.stdout,
        }
    }

    /// What has been delivered so far, with `unfinished_ns` the earliest timestamp of a line
    /// begun but not complete.
    pub fn cursor(&self, unfinished_ns: Option<i64>) -> Cursor {
        let mut c = self.cursor;
        c.streams.unfinished_ns = unfinished_ns;
        c
    }
}

#[cfg(test)]
#[path = "cursor_tests.rs"]
mod tests;
