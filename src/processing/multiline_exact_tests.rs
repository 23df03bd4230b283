//! Tests of `multiline`, the exactness contract: a capture session may end anywhere
//! (rotation, reconnect, crash) with groups open, and the records of all sessions together
//! are those of one uninterrupted read.

use super::*;

/// One line of the daemon's log file: stream, timestamp, id (its place in the file), and
/// whether it starts a group (`S<id>`) or continues one (`\tc<id>`).
#[derive(Clone, Copy, Debug)]
struct Entry {
    stream: StreamKind,
    ts: i64,
    id: usize,
    start: bool,
}

impl Entry {
    fn text(&self) -> String {
        if self.start {
            format!("S{}", self.id)
        } else {
            format!("\tc{}", self.id)
        }
    }

    fn line(&self) -> LogLine {
        line(self.stream, self.ts, &self.text())
    }
}

/// A log file as json-file writes it (see `capture::cursor`): timestamps non-decreasing per
/// stream, ties common, and a line stamped up to the reorder slack earlier than entries of the
/// other stream written before it. Each step of `script`: the stream (bit 0), whether the line
/// starts a group (bits 1-2: one in four does), how far the clock moves (bits 3-4, half-slack
/// ticks; 0 gives ties) and how far back the line is stamped (bits 5-6).
fn log_file(script: &[u8]) -> Vec<Entry> {
    const TICK: i64 = REORDER_SLACK_NS / 2;
    let mut clock = 1_000 * TICK;
    let mut last = [0i64; 2];
    let mut file = Vec::new();
    for (id, &b) in script.iter().enumerate() {
        let s = usize::from(b & 1);
        clock += i64::from((b >> 3) & 3) * TICK;
        let back = i64::from((b >> 5) & 3).min(2) * TICK;
        let ts = (clock - back).max(last[s]);
        last[s] = ts;
        file.push(Entry {
            stream: [OUT, ERR][s],
            ts,
            id,
            start: (b >> 1) & 3 == 0,
        });
    }
    file
}

fn config(max_lines: usize, max_bytes: u64) -> MultilineConfig {
    MultilineConfig {
        start: Some("^S".to_string()),
        max_lines,
        max_bytes: ByteSize(max_bytes),
        flush_after: HumanDuration(Duration::from_secs(3600)),
        ..MultilineConfig::default()
    }
}

/// A committed record: stream, timestamp, message, lines joined.
type Record = (StreamKind, i64, String, u32);

fn record(r: &LogLine) -> Record {
    (r.stream, r.ts_ns, text(r).to_string(), joined(r))
}

/// What the sessions handed over: the records, the group counters (by end), and the input
/// lines the stage reported done with (`take_finished`, per stream).
struct Delivered {
    records: Vec<Record>,
    ends: [u64; 5],
    finished_lines: [u64; 2],
}

/// Reads `file` in sessions as the capture task does: each session is served, in file order,
/// every entry stamped at or after the committed cursor's `since`, passes each through the
/// resume filter and, if admitted, into a fresh `Multiline` with the stream's resume position
/// before it. Every `batch` entries, the records completed since are handed over with the
/// batch's cursor (the resume filter's, held back by the open groups), which is committed, and the
/// stage's counts are taken. A session ends once it reaches file position `cut`: its open
/// groups and the records of its unfinished batch are lost. The last one reads to the end
/// and, the container having stopped, flushes every group. `flush_at`: file positions before
/// which a session calls `flush_due` with the timestamp of the latest line it read (a wall
/// clock that moves).
fn read_in_sessions(
    file: &[Entry],
    cuts: &[usize],
    flush_at: &[usize],
    batch: usize,
    config: &MultilineConfig,
) -> Delivered {
    let mut committed = Cursor::at(0);
    let mut delivered = Delivered {
        records: Vec::new(),
        ends: [0; 5],
        finished_lines: [0; 2],
    };
    let ends: [Counter; 5] = Default::default();
    // Compiled once; each session starts from a fresh copy (no group open).
    let fresh = match Multiline::build(config, ends.clone()) {
        Ok(ml) => ml,
        Err(e) => panic!("{}: {}", e.key, e.message),
    };
    let hand_over = |ml: &mut Multiline,
                     resume: &ResumeFilter,
                     out: &mut Vec<LogLine>,
                     delivered: &mut Delivered|
     -> Cursor {
        delivered.records.extend(out.drain(..).map(|r| record(&r)));
        let (lines, _) = ml.take_finished();
        delivered.finished_lines[0] += lines[0];
        delivered.finished_lines[1] += lines[1];
        let mut cursor = resume.cursor(None);
        ml.hold(&mut cursor);
        cursor
    };
    for &cut in cuts.iter().chain(std::iter::once(&usize::MAX)) {
        let since = committed.since_ns();
        let mut resume = ResumeFilter::new(committed);
        let mut ml = fresh.clone();
        let mut now = 0;
        let mut out = Vec::new();
        for (at, entry) in file.iter().enumerate() {
            if at >= cut {
                break;
            }
            if flush_at.contains(&at) {
                ml.flush_due(now, &mut out);
            }
            if entry.ts >= since {
                now = now.max(entry.ts);
                let before = resume.position(entry.stream);
                if resume.admit(entry.stream, entry.ts) {
                    ml.push(entry.line(), before, &mut out);
                }
            }
            if (at + 1) % batch == 0 {
                committed = hand_over(&mut ml, &resume, &mut out, &mut delivered);
            }
        }
        if cut == usize::MAX {
            ml.flush_all(&mut out);
            committed = hand_over(&mut ml, &resume, &mut out, &mut delivered);
            assert_eq!(
                committed,
                resume.cursor(None),
                "nothing held after flush_all"
            );
        }
    }
    delivered.ends = ends.each_ref().map(Counter::get);
    delivered
}

fn per_stream(records: &[Record], stream: StreamKind) -> Vec<&Record> {
    records.iter().filter(|r| r.0 == stream).collect()
}

/// The ids of the lines a record joined, from its text.
fn line_ids(record: &Record) -> Vec<usize> {
    record
        .2
        .split('\n')
        .map(|l| match l.trim_start_matches(['S', '\t', 'c']).parse() {
            Ok(id) => id,
            Err(_) => panic!("not a test line: {l:?}"),
        })
        .collect()
}

/// Every group emitted, counted and reported done with once: the group counters sum to the
/// records handed over, and the stage's finished lines to the lines in them, per stream.
fn check_counts(file: &[Entry], got: &Delivered) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.ends.iter().sum::<u64>(), got.records.len() as u64);
    for (i, stream) in [OUT, ERR].into_iter().enumerate() {
        let lines: usize = per_stream(&got.records, stream)
            .iter()
            .map(|r| line_ids(r).len())
            .sum();
        prop_assert_eq!(got.finished_lines[i], lines as u64);
        prop_assert_eq!(lines, file.iter().filter(|e| e.stream == stream).count());
    }
    Ok(())
}

/// Sessions cut at `cuts`, without `flush_due`: per stream, exactly the records of one
/// uninterrupted read (`whole`) — none lost, none twice, none half.
fn check_exact(
    file: &[Entry],
    whole: &[Record],
    cuts: &[usize],
    batch: usize,
    config: &MultilineConfig,
) -> Result<(), TestCaseError> {
    let got = read_in_sessions(file, cuts, &[], batch, config);
    for stream in [OUT, ERR] {
        prop_assert_eq!(
            per_stream(&got.records, stream),
            per_stream(whole, stream),
            "cuts {:?}, batch {}, file {:?}",
            cuts,
            batch,
            file
        );
    }
    check_counts(file, &got)
}

/// Found by the property below before `hold` marked the group's first line unfinished: a
/// stderr trace line stamped (legitimately) before stdout lines written ahead of it, stdout
/// going on, the session ending with the stderr group open — the reopen's `since` skipped it.
#[test]
fn an_open_group_behind_the_other_stream_survives_a_reopen() {
    let file = log_file(&[69, 8, 8]);
    let config = config(500, 1 << 20);
    let whole = read_in_sessions(&file, &[], &[], 1, &config).records;
    assert_eq!(whole.len(), 3);
    if let Err(e) = check_exact(&file, &whole, &[3], 1, &config) {
        panic!("{e}");
    }
}

proptest! {

    /// Two streams of start and continuation lines, sessions cut at arbitrary points (with
    /// groups open on either stream, or both), small max_lines/max_bytes cutting groups: the
    /// records of all sessions are those of one uninterrupted read.
    #[test]
    fn sessions_cut_anywhere_yield_the_records_of_one_read(
        script in proptest::collection::vec(any::<u8>(), 1..120),
        cuts in proptest::collection::vec(0usize..130, 0..10),
        max_lines in 1usize..8,
        max_bytes in prop_oneof![Just(1u64 << 20), 4u64..40],
        batch in 1usize..5,
    ) {
        let mut cuts = cuts;
        cuts.sort_unstable();
        let file = log_file(&script);
        let config = config(max_lines, max_bytes);
        let whole = read_in_sessions(&file, &[], &[], 1, &config);
        check_counts(&file, &whole)?;
        check_exact(&file, &whole.records, &cuts, batch, &config)?;
    }

    /// One cut at every position of the file in turn, then a second at every later one.
    #[test]
    fn a_cut_at_every_point_loses_and_duplicates_nothing(
        script in proptest::collection::vec(any::<u8>(), 1..20),
        max_lines in prop_oneof![Just(500usize), 1usize..6],
        batch in 1usize..3,
    ) {
        let file = log_file(&script);
        let config = config(max_lines, 1 << 20);
        let whole = read_in_sessions(&file, &[], &[], 1, &config).records;
        for first in 0..=file.len() {
            check_exact(&file, &whole, &[first], batch, &config)?;
            for second in first + 1..=file.len() {
                check_exact(&file, &whole, &[first, second], batch, &config)?;
            }
        }
    }

    /// With `flush_due` at arbitrary moments the grouping depends on when the clock moved, so
    /// records may differ from one read's; still every line is in exactly one record, each
    /// stream's lines in their order, and a record is a run of consecutive lines of its stream
    /// stamped with its first line's timestamp.
    #[test]
    fn with_flushes_every_line_is_in_exactly_one_record(
        script in proptest::collection::vec(any::<u8>(), 1..120),
        cuts in proptest::collection::vec(0usize..130, 0..10),
        flush_at in proptest::collection::vec(0usize..130, 0..20),
        flush_after_ticks in 0u64..4,
        max_lines in prop_oneof![Just(500usize), 1usize..6],
        batch in 1usize..5,
    ) {
        let mut cuts = cuts;
        cuts.sort_unstable();
        let config = MultilineConfig {
            flush_after: HumanDuration(Duration::from_nanos(
                1 + flush_after_ticks * (REORDER_SLACK_NS as u64 / 2),
            )),
            ..config(max_lines, 1 << 20)
        };
        let file = log_file(&script);
        let got = read_in_sessions(&file, &cuts, &flush_at, batch, &config);
        check_counts(&file, &got)?;
        let got = got.records;
        for stream in [OUT, ERR] {
            let expected: Vec<usize> =
                file.iter().filter(|e| e.stream == stream).map(|e| e.id).collect();
            let records = per_stream(&got, stream);
            let ids: Vec<usize> = records.iter().flat_map(|r| line_ids(r)).collect();
            prop_assert_eq!(&ids, &expected, "cuts {:?}, flushes {:?}", cuts, flush_at);
            for r in records {
                let first = line_ids(r)[0];
                prop_assert_eq!(r.1, file[first].ts, "a record has its first line's stamp");
                prop_assert!(r.3 as usize <= max_lines);
            }
        }
    }
}

/// task/session.rs's processing branch, step by step (before = resume.position; admit_line;
/// push; cursor = resume.cursor(..); hold; hand over when records or `cursor != shared`).
/// A session that re-reads from a held cursor first reads only an already-delivered stderr
/// line (stamped 10 µs after the held stdout group's first line but written before it, the
/// copier race of capture::cursor): the cursor-only ("settled") batch drops the held
/// `unfinished_ns`, `since` jumps past the group, and a crash right after loses it.
#[test]
fn a_settled_batch_keeps_a_held_group_readable() {
    const SEC: i64 = 1_000_000_000;
    const T: i64 = 1_000 * SEC;
    let file = [
        line(OUT, T - 5 * SEC, "S0"),
        line(ERR, T + 10_000, "S1"),
        line(OUT, T, "S2"),
        line(OUT, T + 1_000, "\tc3"),
        line(ERR, T + 2 * SEC, "S4"),
        line(ERR, T + 3 * SEC, "S5"),
        line(OUT, T + 4 * SEC, "S6"),
    ];
    let fresh = match Multiline::build(&config(500, 1 << 20), Default::default()) {
        Ok(ml) => ml,
        Err(e) => panic!("{}", e.message),
    };
    let mut shared = Cursor::at(0);
    let mut delivered: Vec<String> = Vec::new();
    // One session: `reads` gives how many served entries each read gathers; `last`: the
    // container stopped, flush at the end.
    let mut session = |shared: &mut Cursor, reads: &[usize], last: bool| {
        let since = shared.since_ns();
        let served: Vec<LogLine> = file.iter().filter(|l| l.ts_ns >= since).cloned().collect();
        let mut resume = ResumeFilter::new(*shared);
        let mut ml = fresh.clone();
        let mut served = served.into_iter();
        for (i, &n) in reads.iter().enumerate() {
            let mut out = Vec::new();
            for mut l in served.by_ref().take(n) {
                let before = resume.position(l.stream);
                if resume.admit_line(&mut l) {
                    ml.push(l, before, &mut out);
                }
            }
            if last && i + 1 == reads.len() {
                ml.flush_all(&mut out);
            }
            let mut cursor = resume.cursor(None);
            ml.hold(&mut cursor);
            if !out.is_empty() || cursor.positions_differ(shared) {
                delivered.extend(out.iter().map(|r| text(r).to_string()));
                *shared = cursor;
            }
        }
    };
    session(&mut shared, &[6], false); // rotation with S2 (stdout) and S5 (stderr) open
    session(&mut shared, &[1], false); // first read: only S1 (skipped); then SIGKILL
    session(&mut shared, &[usize::MAX], true);
    assert!(
        delivered.iter().any(|r| r == "S2\n\tc3"),
        "group S2 lost: delivered {delivered:?}"
    );
}
