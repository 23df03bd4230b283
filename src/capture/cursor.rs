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

use serde::{Deserialize, Serialize};

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
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OUT: StreamKind = StreamKind::Stdout;
    const ERR: StreamKind = StreamKind::Stderr;

    #[test]
    fn since_is_logged_as_a_readable_time() {
        assert_eq!(
            since_text(1_796_048_340_575_755_762),
            "2026-11-30T14:19:00.575755762Z"
        );
        assert_eq!(since_text(0), "start of log");
    }

    #[test]
    fn skips_exactly_lines_at_cursor_per_stream() {
        let mut c = Cursor::at(0);
        for (s, t) in [(OUT, 10), (ERR, 10), (OUT, 10), (ERR, 9)] {
            c.deliver(s, t);
        }
        let mut r = ResumeFilter::new(c);
        let got: Vec<bool> = [
            (OUT, 9),
            (OUT, 10),
            (ERR, 10),
            (OUT, 10),
            (ERR, 10),
            (OUT, 10),
        ]
        .iter()
        .map(|&(s, t)| r.admit(s, t))
        .collect();
        assert_eq!(got, vec![false, false, false, false, true, true]);
    }

    #[test]
    fn since_is_before_every_entry_not_delivered() {
        const T: i64 = 1_000 * REORDER_SLACK_NS;
        let mut c = Cursor::at(T);
        c.deliver(ERR, T + 20);
        // stdout may still have entries stamped from T on (its own last position).
        assert_eq!(c.since_ns(), T);
        c.deliver(OUT, T + 10);
        assert_eq!(c.since_ns(), T + 10);
        // Far ahead: the stream behind can only have entries the slack before the other's.
        c.deliver(ERR, T + 5 * REORDER_SLACK_NS);
        assert_eq!(c.since_ns(), T + 4 * REORDER_SLACK_NS);
        // A line begun before that: its pieces first.
        c.streams.unfinished_ns = Some(T + 15);
        assert_eq!(c.since_ns(), T + 15);
        // A line begun after it does not move `since` past the other requirements.
        c.streams.unfinished_ns = Some(T + 9 * REORDER_SLACK_NS);
        assert_eq!(c.since_ns(), T + 4 * REORDER_SLACK_NS);
    }

    #[test]
    fn legacy_cursor_skips_its_count_over_both_streams_then_counts_per_stream() {
        let mut r = ResumeFilter::new(Cursor::legacy(10, 2));
        assert!(!r.admit(OUT, 10));
        assert!(!r.admit(ERR, 10));
        assert!(r.admit(OUT, 10));
        let c = r.cursor(None);
        assert_eq!(c.legacy_count, 0);
        assert_eq!(
            c.streams.stdout,
            Position {
                timestamp_ns: 10,
                count: 2
            }
        );
        assert_eq!(c.count_at_since(), 3);
        // Reopened from that cursor: the three are skipped, the next is new.
        let mut r = ResumeFilter::new(c);
        assert!(!r.admit(OUT, 10));
        assert!(!r.admit(ERR, 10));
        assert!(!r.admit(OUT, 10));
        assert!(r.admit(ERR, 10));
    }

    /// Item 8 of issue 9: a message without a timestamp at the start of a session (nothing
    /// read before it to borrow a stamp from) used to get timestamp 0, and the resume filter
    /// dropped it without a trace. It is kept, stamped with the session's `since`.
    #[test]
    fn unstamped_line_at_session_start_is_kept_not_dropped() {
        let mut c = Cursor::at(0);
        c.deliver(OUT, 5_000);
        c.deliver(OUT, 5_000);
        let mut replay = ResumeFilter::new(c);
        let mut assembler = super::super::Assembler::new(1024);
        let mut lines = Vec::new();
        assembler.push(OUT, bytes::Bytes::from_static(b"no stamp\n"), &mut lines);
        assert_eq!(assembler.unstamped, 1, "counted (line_without_timestamp)");
        replay.filter(&mut lines);
        assert_eq!(lines.len(), 1, "kept");
        assert_eq!(&lines[0].message[..], b"no stamp");
        assert_eq!(
            lines[0].ts_ns, 5_000,
            "stamped with the last delivered stamp"
        );
        // It moved no cursor: the two lines at 5 000 are still skipped, the third is new.
        assert_eq!(replay.cursor(None), c);
        let stamped = |ts| LogLine {
            ts_ns: ts,
            stream: OUT,
            message: bytes::Bytes::new(),
            truncated: false,
            extra: None,
        };
        let mut more = vec![
            stamped(5_000),
            stamped(5_000),
            stamped(5_000),
            stamped(6_000),
        ];
        replay.filter(&mut more);
        assert_eq!(
            more.iter().map(|l| l.ts_ns).collect::<Vec<_>>(),
            [5_000, 6_000]
        );
        let mut late = vec![LogLine {
            ts_ns: UNSTAMPED,
            ..stamped(0)
        }];
        replay.filter(&mut late);
        assert_eq!(late[0].ts_ns, 6_000, "later: the latest stamp seen");
    }

    /// One entry of the daemon's log file: (stream, timestamp, line id, piece, last piece).
    type Entry = (StreamKind, i64, usize, String, bool);

    /// A log file as json-file writes it: lines of two streams, each line stamped when its
    /// first piece was read, long lines split into pieces with the other stream's entries in
    /// between, and a line's stamp up to the reorder slack earlier than entries of the other
    /// stream written before it (never earlier than its own stream's last). `script` drives it:
    /// each step picks a stream (bit 0), whether its next line is long (bit 1), how far the
    /// clock moves (bits 2-3, 0 gives ties) and how far back the line is stamped (bits 5-6).
    fn log_file(script: &[u8]) -> (Vec<Entry>, Vec<(StreamKind, usize, String)>) {
        // Half the slack: a line is stamped up to two ticks (the whole slack) back.
        const TICK: i64 = REORDER_SLACK_NS / 2;
        let mut clock = 1_000 * TICK;
        let mut last = [0i64; 2];
        let mut file = Vec::new();
        let mut lines = Vec::new();
        // Per stream: the open line (id, ts, pieces left).
        let mut open: [Option<(usize, i64, usize)>; 2] = [None, None];
        let streams = [OUT, ERR];
        let step = |open: &mut [Option<(usize, i64, usize)>; 2],
                    clock: &mut i64,
                    last: &mut [i64; 2],
                    file: &mut Vec<Entry>,
                    lines: &mut Vec<(StreamKind, usize, String)>,
                    s: usize,
                    b: u8| {
            let stream = streams[s];
            match open[s] {
                Some((id, ts, left)) => {
                    let last = left == 1;
                    file.push((stream, ts, id, format!("p{left}.{id}"), last));
                    open[s] = (!last).then_some((id, ts, left - 1));
                }
                None => {
                    *clock += i64::from((b >> 2) & 3) * TICK;
                    let back = i64::from((b >> 5) & 3).min(2) * TICK;
                    let clock = (*clock - back).max(last[s]);
                    last[s] = clock;
                    let id = lines.len();
                    let pieces = if b & 2 != 0 {
                        2 + usize::from(b >> 4 & 1)
                    } else {
                        1
                    };
                    let text: String = (0..pieces)
                        .rev()
                        .map(|left| format!("p{}.{id}", left + 1))
                        .collect();
                    lines.push((stream, id, text));
                    file.push((stream, clock, id, format!("p{pieces}.{id}"), pieces == 1));
                    open[s] = (pieces > 1).then_some((id, clock, pieces - 1));
                }
            }
        };
        for &b in script {
            step(
                &mut open,
                &mut clock,
                &mut last,
                &mut file,
                &mut lines,
                usize::from(b & 1),
                b,
            );
        }
        for s in 0..2 {
            while open[s].is_some() {
                step(
                    &mut open, &mut clock, &mut last, &mut file, &mut lines, s, 0,
                );
            }
        }
        (file, lines)
    }

    /// Reads `file` in sessions: each session is served, in file order, every entry stamped at
    /// or after the cursor's `since` and is cut (crash, rotation or reconnect: the assembler's
    /// state is lost) once it reaches file position `cut`. Pieces are merged per stream; the
    /// cursor is committed after every message that completed a line, as a batch hand-over does.
    fn read_in_sessions(file: &[Entry], cuts: &[usize]) -> Vec<(StreamKind, usize, String)> {
        let mut emitted = Vec::new();
        let mut committed = Cursor::at(0);
        for &cut in cuts.iter().chain(std::iter::once(&usize::MAX)) {
            let since = committed.since_ns();
            let mut replay = ResumeFilter::new(committed);
            let mut pending: [Option<(i64, usize, String)>; 2] = [None, None];
            for (pos, (stream, ts, id, piece, last)) in file.iter().enumerate() {
                if pos >= cut {
                    break;
                }
                if *ts < since {
                    continue;
                }
                let s = usize::from(*stream == ERR);
                let mut text = pending[s].take().map(|p| p.2).unwrap_or_default();
                text.push_str(piece);
                if !last {
                    pending[s] = Some((*ts, *id, text));
                    continue;
                }
                if replay.admit(*stream, *ts) {
                    emitted.push((*stream, *id, text));
                    let unfinished = pending.iter().flatten().map(|p| p.0).min();
                    committed = replay.cursor(unfinished);
                }
            }
        }
        emitted
    }

    fn check(script: &[u8], cuts: &[usize]) -> Result<(), TestCaseError> {
        let (file, lines) = log_file(script);
        let got = read_in_sessions(&file, cuts);
        let mut sorted = got.clone();
        sorted.sort_by_key(|l| l.1);
        prop_assert_eq!(&sorted, &lines, "cuts {:?}, file {:?}", cuts, file);
        // Each stream's lines come in their order.
        for s in [OUT, ERR] {
            let ids: Vec<usize> = got.iter().filter(|l| l.0 == s).map(|l| l.1).collect();
            prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "{:?}", ids);
        }
        Ok(())
    }

    proptest! {
        /// Two streams, long lines in pieces interleaved with the other stream, sessions cut at
        /// arbitrary points: every line exactly once, merged.
        #[test]
        fn sessions_yield_each_line_once_and_merged(
            script in proptest::collection::vec(any::<u8>(), 1..120),
            cuts in proptest::collection::vec(0usize..300, 0..12),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            check(&script, &cuts)?;
        }

        /// The same with one cut at every position of the file in turn, and then a second one
        /// at every later position.
        #[test]
        fn a_cut_at_every_point_loses_and_duplicates_nothing(
            script in proptest::collection::vec(any::<u8>(), 1..40),
        ) {
            let (file, _) = log_file(&script);
            for first in 0..=file.len() {
                check(&script, &[first])?;
                for second in first..=file.len() {
                    check(&script, &[first, second])?;
                }
            }
        }
    }

    /// The sequence of the issue: 20 000 bytes on stdout (two pieces stamped t1), `err` on
    /// stderr (t2), `tail`... cut between `err` and the last piece.
    #[test]
    fn cut_between_interleaved_pieces_keeps_the_tail() {
        let file: Vec<Entry> = vec![
            (OUT, 1, 0, "a".into(), false),
            (ERR, 2, 1, "err".into(), true),
            (OUT, 1, 0, "b".into(), true),
        ];
        let got = read_in_sessions(&file, &[2]);
        assert_eq!(
            got,
            vec![(ERR, 1, "err".to_string()), (OUT, 0, "ab".to_string())]
        );
    }
}
