//! Tests of `multiline`: the join rules, the group counters, and the exactness contract — a
//! capture session may end anywhere (rotation, reconnect, crash) with groups open, and the
//! records of all sessions together are those of one uninterrupted read (that part in
//! `multiline_exact_tests.rs`).

use super::*;
use crate::capture::{REORDER_SLACK_NS, ResumeFilter};
use crate::config::{ByteSize, HumanDuration};
use proptest::prelude::*;
use std::time::Duration;

const OUT: StreamKind = StreamKind::Stdout;
const ERR: StreamKind = StreamKind::Stderr;

/// A stage and its group counters (read back with `ends()`, in [`GROUP_ENDS`] order).
struct Fixture {
    ml: Multiline,
    ends: [Counter; 5],
}

impl Fixture {
    fn new(config: MultilineConfig) -> Fixture {
        let ends: [Counter; 5] = Default::default();
        let ml = match Multiline::build(&config, ends.clone()) {
            Ok(ml) => ml,
            Err(e) => panic!("{config:?} does not build: {}: {}", e.key, e.message),
        };
        Fixture { ml, ends }
    }

    fn start(pattern: &str) -> Fixture {
        Fixture::new(MultilineConfig {
            start: Some(pattern.to_string()),
            ..MultilineConfig::default()
        })
    }

    /// The group counters once the groups emitted so far are handed over (`take_finished`
    /// publishes them).
    fn ends(&mut self) -> [u64; 5] {
        self.ml.take_finished();
        self.ends.each_ref().map(Counter::get)
    }

    /// Pushes a line with a dummy `before` (positions are tested on their own).
    fn push(&mut self, stream: StreamKind, ts: i64, text: &str, out: &mut Vec<LogLine>) {
        self.ml
            .push(line(stream, ts, text), Position::default(), out);
    }
}

fn line(stream: StreamKind, ts_ns: i64, text: &str) -> LogLine {
    LogLine {
        ts_ns,
        stream,
        message: Bytes::copy_from_slice(text.as_bytes()),
        truncated: false,
        extra: None,
    }
}

fn text(record: &LogLine) -> &str {
    std::str::from_utf8(&record.message).unwrap_or("<not utf-8>")
}

fn joined(record: &LogLine) -> u32 {
    record.extra.as_ref().map_or(0, |e| e.joined_lines)
}

fn pos(timestamp_ns: i64, count: u64) -> Position {
    Position {
        timestamp_ns,
        count,
    }
}

// Indexes into `Fixture::ends()` (the order of GROUP_ENDS).
const E_NEXT: usize = 0;
const E_LINES: usize = 1;
const E_BYTES: usize = 2;
const E_FLUSH: usize = 3;
const E_END: usize = 4;

#[test]
fn group_ends_are_counted_in_the_order_of_their_names() {
    assert_eq!(
        [E_NEXT, E_LINES, E_BYTES, E_FLUSH, E_END].map(|i| GROUP_ENDS[i]),
        [
            "next_group",
            "max_lines",
            "max_bytes",
            "flush_after",
            "stream_end"
        ]
    );
}

#[test]
fn start_mode_joins_continuations_into_the_record_of_the_start_line() {
    let mut f = Fixture::start(r"^\d{4}-");
    let mut out = Vec::new();
    f.push(OUT, 10, "2026-12-01 ERROR boom", &mut out);
    f.push(OUT, 11, "\tat a.b(C.java:1)", &mut out);
    f.push(OUT, 12, "\tat d.e(F.java:2)", &mut out);
    assert!(out.is_empty(), "the group is open until the next start");
    f.push(OUT, 13, "2026-12-01 INFO next", &mut out);
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(
        text(r),
        "2026-12-01 ERROR boom\n\tat a.b(C.java:1)\n\tat d.e(F.java:2)"
    );
    assert_eq!(r.ts_ns, 10, "the first line's timestamp");
    assert_eq!(r.stream, OUT);
    assert_eq!(joined(r), 3);
    // A single-line group is passed as it was: no extras, the same bytes.
    f.push(OUT, 14, "2026-12-01 INFO last", &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(text(&out[1]), "2026-12-01 INFO next");
    assert!(out[1].extra.is_none(), "a lone line gets no extras");
    assert_eq!(f.ends(), [2, 0, 0, 0, 0]);
    assert!(f.ml.has_open_group());
}

#[test]
fn continue_mode_joins_matching_lines_and_any_other_starts_a_group() {
    let mut f = Fixture::new(MultilineConfig {
        continue_: Some(r"^\s".to_string()),
        ..MultilineConfig::default()
    });
    let mut out = Vec::new();
    f.push(OUT, 1, "panic: oops", &mut out);
    f.push(OUT, 2, "  goroutine 1", &mut out);
    f.push(OUT, 3, "  main.go:3", &mut out);
    f.push(OUT, 4, "plain", &mut out);
    f.push(OUT, 5, "plain again", &mut out);
    assert_eq!(
        out.iter().map(text).collect::<Vec<_>>(),
        ["panic: oops\n  goroutine 1\n  main.go:3", "plain"]
    );
    f.ml.flush_all(&mut out);
    assert_eq!(text(&out[2]), "plain again");
    assert_eq!(f.ends()[E_NEXT], 2);
    assert_eq!(f.ends()[E_END], 1);
}

#[test]
fn a_continuation_with_no_group_open_starts_one() {
    // The first line read is mid-trace (a container whose checkpoint is older than its log,
    // or a session that began inside a group of another run): it is a group of its own.
    let mut f = Fixture::start("^S");
    let mut out = Vec::new();
    f.push(OUT, 1, "\tat x", &mut out);
    f.push(OUT, 2, "\tat y", &mut out);
    f.push(OUT, 3, "S next", &mut out);
    assert_eq!(out.iter().map(text).collect::<Vec<_>>(), ["\tat x\n\tat y"]);
}

#[test]
fn max_lines_cuts_the_group_and_the_next_line_starts_one() {
    let mut f = Fixture::new(MultilineConfig {
        start: Some("^S".to_string()),
        max_lines: 3,
        ..MultilineConfig::default()
    });
    let mut out = Vec::new();
    for (ts, t) in ["S", "c1", "c2", "c3", "c4", "c5", "c6", "S2"]
        .iter()
        .enumerate()
    {
        f.push(OUT, ts as i64, t, &mut out);
    }
    assert_eq!(
        out.iter().map(text).collect::<Vec<_>>(),
        ["S\nc1\nc2", "c3\nc4\nc5", "c6"],
        "emitted as soon as the third line came; `c6` alone when `S2` came"
    );
    assert_eq!(out.iter().map(joined).collect::<Vec<_>>(), [3, 3, 0]);
    f.ml.flush_all(&mut out);
    assert_eq!(text(&out[3]), "S2");
    // c6 was ended by S2 (next group), S2 by the end of the stream.
    assert_eq!(f.ends(), [1, 2, 0, 0, 1]);
}

#[test]
fn max_lines_of_one_emits_every_line_at_once() {
    let mut f = Fixture::new(MultilineConfig {
        start: Some("^S".to_string()),
        max_lines: 1,
        ..MultilineConfig::default()
    });
    let mut out = Vec::new();
    f.push(OUT, 1, "S", &mut out);
    f.push(OUT, 2, "c", &mut out);
    assert_eq!(out.iter().map(text).collect::<Vec<_>>(), ["S", "c"]);
    assert!(!f.ml.has_open_group());
    assert_eq!(f.ends()[E_LINES], 2);
    let mut cursor = Cursor::at(7);
    f.ml.hold(&mut cursor);
    assert_eq!(cursor, Cursor::at(7), "nothing open, nothing held");
}

#[test]
fn max_bytes_emits_the_group_before_the_line_that_would_not_fit() {
    let mut f = Fixture::new(MultilineConfig {
        start: Some("^S".to_string()),
        max_bytes: ByteSize(10),
        ..MultilineConfig::default()
    });
    let mut out = Vec::new();
    f.push(OUT, 1, "S123", &mut out); // 4 bytes
    f.push(OUT, 2, "c1234", &mut out); // 4 + 1 + 5 = 10: fits exactly
    assert!(out.is_empty());
    f.push(OUT, 3, "c", &mut out); // 12: does not fit
    assert_eq!(out.iter().map(text).collect::<Vec<_>>(), ["S123\nc1234"]);
    assert!(out.iter().all(|r| r.message.len() <= 10));
    // A first line longer than the limit alone is a group of its own; it is not cut.
    f.push(OUT, 4, "S_much_longer_than_ten", &mut out);
    f.push(OUT, 5, "c", &mut out);
    assert_eq!(
        out.iter().skip(1).map(text).collect::<Vec<_>>(),
        ["c", "S_much_longer_than_ten"]
    );
    // The stage's lines and bytes out are its input's (the newlines it added are not).
    let (lines, bytes) = f.ml.take_finished();
    assert_eq!(lines, [4, 0]);
    assert_eq!(bytes, 4 + 5 + 1 + 22);
    assert_eq!(f.ml.take_finished(), ([0, 0], 0), "taken");
    assert_eq!(f.ends(), [1, 0, 2, 0, 0]);
}

/// The group counters move when the batch of the groups is handed over (`take_finished`), as
/// the pipeline's other counters do: a session that ends before (rotation while waiting for
/// queue room, shutdown) loses its groups, the next one emits them again, counted once.
#[test]
fn group_counters_move_only_when_the_groups_are_handed_over() {
    let mut f = Fixture::start("^S");
    let mut out = Vec::new();
    f.push(OUT, 1, "S a", &mut out);
    f.push(OUT, 2, "S b", &mut out);
    f.ml.flush_all(&mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(
        f.ends.each_ref().map(Counter::get),
        [0; 5],
        "not counted before the hand-over"
    );
    assert_eq!(f.ml.take_finished(), ([2, 0], 6));
    assert_eq!(f.ends.each_ref().map(Counter::get), [1, 0, 0, 0, 1]);
}

#[test]
fn a_truncated_line_marks_the_joined_record_truncated() {
    let mut f = Fixture::start("^S");
    let mut out = Vec::new();
    f.push(OUT, 1, "S", &mut out);
    let mut cut = line(OUT, 2, "c (cut)");
    cut.truncated = true;
    f.ml.push(cut, Position::default(), &mut out);
    f.ml.flush_all(&mut out);
    assert!(out[0].truncated);
}

#[test]
fn stdout_and_stderr_groups_stay_apart() {
    let mut f = Fixture::start("^S");
    let mut out = Vec::new();
    f.push(OUT, 1, "S out", &mut out);
    f.push(ERR, 2, "S err", &mut out);
    f.push(OUT, 3, "\tout 1", &mut out);
    f.push(ERR, 4, "\terr 1", &mut out);
    f.push(ERR, 5, "\terr 2", &mut out);
    f.push(OUT, 6, "\tout 2", &mut out);
    assert!(out.is_empty());
    f.push(ERR, 7, "S err 2", &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].stream, text(&out[0])),
        (ERR, "S err\n\terr 1\n\terr 2")
    );
    f.push(OUT, 8, "S out 2", &mut out);
    assert_eq!(
        (out[1].stream, text(&out[1]), out[1].ts_ns),
        (OUT, "S out\n\tout 1\n\tout 2", 1)
    );
    // A TTY container's only stream is grouped like stdout.
    let mut t = Fixture::start("^S");
    let mut tty = Vec::new();
    t.push(StreamKind::Tty, 1, "S", &mut tty);
    t.push(StreamKind::Tty, 2, "c", &mut tty);
    t.ml.flush_all(&mut tty);
    assert_eq!((tty[0].stream, text(&tty[0])), (StreamKind::Tty, "S\nc"));
    let (lines, _) = t.ml.take_finished();
    assert_eq!(lines, [2, 0]);
}

#[test]
fn hold_moves_each_stream_back_before_the_first_line_of_its_open_group() {
    let mut f = Fixture::start("^S");
    let mut out = Vec::new();
    let mut resume = ResumeFilter::new(Cursor::at(100));
    let mut feed = |f: &mut Fixture, resume: &mut ResumeFilter, stream, ts, t: &str| {
        let before = resume.position(stream);
        assert!(resume.admit(stream, ts));
        f.ml.push(line(stream, ts, t), before, &mut out);
    };
    feed(&mut f, &mut resume, OUT, 100, "S a");
    feed(&mut f, &mut resume, OUT, 100, "c");
    feed(&mut f, &mut resume, OUT, 101, "S b"); // emits `S a`; `S b` opens at (100, 2)
    feed(&mut f, &mut resume, OUT, 102, "c");
    feed(&mut f, &mut resume, ERR, 100, "S e"); // opens at (100, 0): nothing of stderr yet
    feed(&mut f, &mut resume, ERR, 103, "c");
    let mut cursor = resume.cursor(None);
    assert_eq!(cursor.streams.stdout, pos(102, 1));
    assert_eq!(cursor.streams.stderr, pos(103, 1));
    f.ml.hold(&mut cursor);
    assert_eq!(cursor.streams.stdout, pos(100, 2));
    assert_eq!(cursor.streams.stderr, pos(100, 0));
    // A reopen from the held cursor admits exactly the open groups' lines again.
    let mut again = ResumeFilter::new(cursor);
    let read = [
        (OUT, 100),
        (OUT, 100),
        (ERR, 100),
        (OUT, 101),
        (OUT, 102),
        (ERR, 103),
    ];
    let admitted: Vec<bool> = read.iter().map(|&(s, t)| again.admit(s, t)).collect();
    assert_eq!(admitted, [false, false, true, true, true, true]);
    // With stderr's group emitted, only stdout is held.
    feed(&mut f, &mut resume, ERR, 104, "S e2");
    feed(&mut f, &mut resume, ERR, 105, "c");
    let mut cursor = resume.cursor(None);
    f.ml.flush_due(105 + 1, &mut out); // nothing is due that early
    f.ml.hold(&mut cursor);
    assert_eq!(cursor.streams.stdout, pos(100, 2));
    assert_eq!(cursor.streams.stderr, pos(103, 1), "before `S e2`");
}

#[test]
fn a_held_cursor_reopens_at_or_before_the_first_line_of_an_open_group() {
    // stderr's group began at T; stdout went on for longer than the reorder slack. The
    // `since` of the reopen must still serve the group's first line.
    const T: i64 = 1_000 * REORDER_SLACK_NS;
    let mut f = Fixture::start("^S");
    let mut out = Vec::new();
    let mut resume = ResumeFilter::new(Cursor::at(T));
    for (stream, ts, t) in [
        (ERR, T, "S err"),
        (OUT, T + 1, "S out"),
        (ERR, T + 2, "\tc"),
        (OUT, T + 3 * REORDER_SLACK_NS, "S out 2"),
        (OUT, T + 3 * REORDER_SLACK_NS + 1, "S out 3"),
    ] {
        let before = resume.position(stream);
        assert!(resume.admit(stream, ts));
        f.ml.push(line(stream, ts, t), before, &mut out);
    }
    let mut cursor = resume.cursor(None);
    f.ml.hold(&mut cursor);
    assert_eq!(cursor.streams.stderr, pos(T, 0));
    assert_eq!(cursor.streams.stdout, pos(T + 3 * REORDER_SLACK_NS, 1));
    assert!(
        cursor.since_ns() <= T,
        "since {} is after the open group's first line {T}",
        cursor.since_ns()
    );
    // And the earliest unfinished line of the assembler still counts.
    let mut cursor = resume.cursor(Some(T - 5));
    f.ml.hold(&mut cursor);
    assert_eq!(cursor.since_ns(), T - 5);
}

#[test]
fn flush_due_goes_by_the_docker_timestamp_of_the_groups_last_line() {
    let mut f = Fixture::new(MultilineConfig {
        start: Some("^S".to_string()),
        flush_after: HumanDuration(Duration::from_nanos(1_000)),
        ..MultilineConfig::default()
    });
    let mut out = Vec::new();
    assert_eq!(f.ml.due_ns(), None);
    f.push(OUT, 10_000, "S out", &mut out);
    f.push(OUT, 10_500, "\tc", &mut out);
    f.push(ERR, 10_200, "S err", &mut out);
    assert_eq!(f.ml.due_ns(), Some(11_200), "the earliest: stderr's");
    f.ml.flush_due(11_199, &mut out);
    assert!(out.is_empty());
    f.ml.flush_due(11_200, &mut out);
    assert_eq!(
        out.iter().map(|r| (r.stream, text(r))).collect::<Vec<_>>(),
        [(ERR, "S err")]
    );
    assert_eq!(
        f.ml.due_ns(),
        Some(11_500),
        "stdout: its last line, not its first"
    );
    f.ml.flush_due(i64::MAX, &mut out);
    assert_eq!(text(&out[1]), "S out\n\tc");
    assert!(!f.ml.has_open_group());
    assert_eq!(f.ml.due_ns(), None);
    assert_eq!(f.ends(), [0, 0, 0, 2, 0]);
    // A continuation after the flush starts a group of its own.
    f.push(OUT, 20_000, "\tlate", &mut out);
    f.ml.flush_all(&mut out);
    assert_eq!(text(&out[2]), "\tlate");
    assert_eq!(f.ends()[E_END], 1);
}

#[test]
fn flush_all_emits_stdout_then_stderr_and_leaves_nothing_open() {
    let mut f = Fixture::start("^S");
    let mut out = Vec::new();
    f.push(ERR, 1, "S err", &mut out);
    f.push(OUT, 2, "S out", &mut out);
    f.push(ERR, 3, "c", &mut out);
    f.ml.flush_all(&mut out);
    assert_eq!(
        out.iter().map(|r| (r.stream, text(r))).collect::<Vec<_>>(),
        [(OUT, "S out"), (ERR, "S err\nc")]
    );
    assert!(!f.ml.has_open_group());
    f.ml.flush_all(&mut out);
    assert_eq!(out.len(), 2, "nothing twice");
    let (lines, bytes) = f.ml.take_finished();
    assert_eq!((lines, bytes), ([1, 2], 5 + 5 + 1));
    assert_eq!(f.ends(), [0, 0, 0, 0, 2]);
}

#[test]
fn invalid_configs_name_their_key() {
    let build = |c: MultilineConfig| Multiline::build(&c, Default::default()).err();
    let key = |c: MultilineConfig| build(c).map(|e| e.key);
    assert_eq!(key(MultilineConfig::default()), Some(""));
    assert_eq!(
        key(MultilineConfig {
            start: Some("a".into()),
            continue_: Some("b".into()),
            ..MultilineConfig::default()
        }),
        Some("")
    );
    assert_eq!(
        key(MultilineConfig {
            start: Some("(".into()),
            ..MultilineConfig::default()
        }),
        Some("start")
    );
    assert_eq!(
        key(MultilineConfig {
            continue_: Some("[".into()),
            ..MultilineConfig::default()
        }),
        Some("continue")
    );
    let valid = || MultilineConfig {
        start: Some("^S".into()),
        ..MultilineConfig::default()
    };
    assert_eq!(
        key(MultilineConfig {
            max_lines: 0,
            ..valid()
        }),
        Some("max_lines")
    );
    assert_eq!(
        key(MultilineConfig {
            max_bytes: ByteSize(0),
            ..valid()
        }),
        Some("max_bytes")
    );
    assert_eq!(
        key(MultilineConfig {
            flush_after: HumanDuration(Duration::ZERO),
            ..valid()
        }),
        Some("flush_after")
    );
    assert!(build(valid()).is_none());
}

#[path = "multiline_exact_tests.rs"]
mod exact;
