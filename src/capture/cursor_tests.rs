//! Tests of the resume cursor and its filter (`cursor.rs`), with a model of json-file's
//! interleaved, split and reordered entries read in sessions cut anywhere.

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
    let mut resume = ResumeFilter::new(c);
    let mut assembler = super::super::Assembler::new(1024);
    let mut lines = Vec::new();
    assembler.push(OUT, bytes::Bytes::from_static(b"no stamp\n"), &mut lines);
    assert_eq!(assembler.unstamped, 1, "counted (line_without_timestamp)");
    resume.filter(&mut lines);
    assert_eq!(lines.len(), 1, "kept");
    assert_eq!(&lines[0].message[..], b"no stamp");
    assert_eq!(
        lines[0].ts_ns, 5_000,
        "stamped with the last delivered stamp"
    );
    // It moved no cursor: the two lines at 5 000 are still skipped, the third is new.
    assert_eq!(resume.cursor(None), c);
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
    resume.filter(&mut more);
    assert_eq!(
        more.iter().map(|l| l.ts_ns).collect::<Vec<_>>(),
        [5_000, 6_000]
    );
    let mut late = vec![LogLine {
        ts_ns: UNSTAMPED,
        ..stamped(0)
    }];
    resume.filter(&mut late);
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
        let mut resume = ResumeFilter::new(committed);
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
            if resume.admit(*stream, *ts) {
                emitted.push((*stream, *id, text));
                let unfinished = pending.iter().flatten().map(|p| p.0).min();
                committed = resume.cursor(unfinished);
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
