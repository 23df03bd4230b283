//! Entry points for the fuzz targets under `fuzz/` (cargo-fuzz, libFuzzer): one function per
//! target, each feeding arbitrary bytes to the real decoder and checking, besides "no panic",
//! the invariants that are cheap to check. Not an API: hidden from the docs, and always
//! compiled so that the unit tests below run the committed seed corpora on stable (CI covers
//! these entry points even where no nightly toolchain exists).
//!
//! Every function panics when an invariant does not hold: that is what a fuzzer reports. The
//! ones that read files (segment store, checkpoints) work in a scratch directory under
//! `std::env::temp_dir()` (set `TMPDIR=/dev/shm` for speed) that they remove again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};

use crate::buffer::{FsyncPolicy, SegmentStore, StoreOptions};
use crate::capture::{Assembler, Cursor, DecodeError, Decoder, Message, Replay};
use crate::checkpoint::CheckpointStore;
use crate::config::Config;
use crate::docker::body::BodyDecoder;
use crate::docker::timestamp::{
    SecondCache, format_rfc3339_nanos, parse_rfc3339_nanos, parse_rfc3339_nanos_cached, since_param,
};
use crate::observability::metrics::Metrics;
use crate::pipeline::{LogLine, StreamKind};

/// Splits a fuzz input into read boundaries and the bytes to decode: the first byte gives the
/// number of cuts (mod 17), each cut is a little-endian u16 (taken mod the length + 1).
fn cuts_and_bytes(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let n = usize::from(n % 17).min(rest.len() / 2);
    let (head, bytes) = rest.split_at(2 * n);
    let mut cuts: Vec<usize> = head
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (bytes.len() + 1))
        .collect();
    cuts.sort_unstable();
    (cuts, bytes)
}

/// `bytes` as the reads a socket could have returned: cut at `cuts`.
fn reads<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        out.push(&bytes[start..cut.max(start)]);
        start = cut.max(start);
    }
    out
}

/// `bytes` in reads of `stride` bytes (at least 1), with the stride raised so that there are at
/// most 512 reads: small inputs are also tried one byte per read, large ones stay fast to fuzz
/// (the cut points cover arbitrary boundaries in them).
fn stride_reads(bytes: &[u8], stride: u8) -> Vec<&[u8]> {
    let stride = usize::from(stride).max(1).max(bytes.len().div_ceil(512));
    bytes.chunks(stride).collect()
}

/// What a decoder made of a whole stream: its messages, the error that stopped it, and the
/// message `finish` returned at the end.
type Decoded = (Vec<Message>, Option<DecodeError>);

fn decode_reads(tty: bool, reads: &[&[u8]]) -> Decoded {
    let mut decoder = Decoder::new(tty);
    let mut out = Vec::new();
    for read in reads {
        decoder.push(Bytes::copy_from_slice(read));
        loop {
            match decoder.next_message() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    out.extend(decoder.finish());
    (out, None)
}

/// The frame decoder (`capture::decoder`). Input: byte 0 bit 0 selects TTY mode; then the cuts
/// (see `cuts_and_bytes`); the rest is the stream. Checks that the stream gives the same
/// messages and the same error whether it arrives in one read, cut at the given points, or
/// in reads of a fixed size (byte 0 bits 1-7; one byte per read for small inputs); and that the messages account for the bytes (TTY: they are the input,
/// in order; multiplexed: each is a slice of one frame).
pub fn frame_decoder(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let tty = flags & 1 == 1;
    let (cuts, bytes) = cuts_and_bytes(rest);
    let whole = decode_reads(tty, &[bytes]);
    let cut = decode_reads(tty, &reads(bytes, &cuts));
    assert_eq!(whole, cut, "cut at {cuts:?}");
    // TTY text without a newline is cut at 1 MiB *of what is buffered*, which depends on the
    // reads; below that size the chunking must not matter at all.
    if bytes.len() < 1024 * 1024 {
        let strided = stride_reads(bytes, flags >> 1);
        assert_eq!(
            whole,
            decode_reads(tty, &strided),
            "reads of {}",
            strided.first().map_or(0, |r| r.len())
        );
    }
    let (messages, error) = whole;
    let mut total = 0usize;
    let mut text = Vec::new();
    for m in &messages {
        match m {
            Message::Log { stream, payload } => {
                assert_eq!(*stream == StreamKind::Tty, tty, "stream kind of the mode");
                total += payload.len() + if tty { 0 } else { 8 };
                if tty {
                    assert!(!payload.is_empty(), "empty TTY message");
                    text.extend_from_slice(payload);
                }
            }
            Message::SystemError(payload) => {
                assert!(!tty, "system error frame in TTY mode");
                total += payload.len() + 8;
            }
        }
    }
    assert!(
        total <= bytes.len(),
        "{total} bytes of messages from {}",
        bytes.len()
    );
    if tty {
        assert_eq!(text, bytes, "TTY messages are the input, in order");
        assert!(error.is_none(), "TTY mode has no decode errors");
    }
}

fn body_decoder_for(kind: u8, length: u64) -> BodyDecoder {
    match kind % 3 {
        0 => BodyDecoder::chunked(),
        1 => BodyDecoder::length(length),
        _ => BodyDecoder::until_close(),
    }
}

/// What a body decoder made of a body: the payload, whether it ended with an error, whether
/// the body is complete after the close, and how many bytes are left after it.
#[derive(Debug, PartialEq, Eq)]
struct Body {
    payload: Vec<u8>,
    failed: bool,
    done: bool,
    left: usize,
}

fn decode_body(mut decoder: BodyDecoder, reads: &[&[u8]]) -> Body {
    let mut buf = BytesMut::new();
    let mut payload = Vec::new();
    let mut given = 0usize;
    let mut failed = false;
    'reads: for read in reads {
        buf.extend_from_slice(read);
        given += read.len();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(b)) => {
                    assert!(!b.is_empty(), "empty payload returned as Some");
                    payload.extend_from_slice(&b);
                    assert!(
                        payload.len() + buf.len() <= given,
                        "{} payload bytes and {} left from {given} given",
                        payload.len(),
                        buf.len()
                    );
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'reads;
                }
            }
        }
    }
    let done = !failed && decoder.end_of_input().is_ok() && decoder.is_done();
    Body {
        payload,
        failed,
        done,
        left: buf.len(),
    }
}

/// The HTTP body decoder (`docker::body`). Input: byte 0 picks the framing (chunked,
/// `Content-Length`, until close; bits 2-7: a read size, see `stride_reads`), bytes 1..9 the length (LE u64, only the low 20 bits used so
/// that lengths hit the input), then the cuts, then the body. Checks that the payload never
/// holds more bytes than were given, that a `Content-Length` body stops at its length, and
/// that the result does not depend on the read boundaries (one read, the cuts, fixed-size reads).
pub fn body_decoder(data: &[u8]) {
    if data.len() < 9 {
        return;
    }
    let kind = data[0];
    let mut length = [0u8; 8];
    length.copy_from_slice(&data[1..9]);
    let length = u64::from_le_bytes(length) & 0xF_FFFF;
    let (cuts, bytes) = cuts_and_bytes(&data[9..]);
    let whole = decode_body(body_decoder_for(kind, length), &[bytes]);
    let cut = decode_body(body_decoder_for(kind, length), &reads(bytes, &cuts));
    let strided = stride_reads(bytes, kind >> 2);
    let single = decode_body(body_decoder_for(kind, length), &strided);
    assert!(whole.payload.len() <= bytes.len());
    match kind % 3 {
        1 => {
            let expected = bytes
                .len()
                .min(usize::try_from(length).unwrap_or(usize::MAX));
            assert_eq!(whole.payload, &bytes[..expected], "Content-Length body");
            assert_eq!(
                whole.done,
                bytes.len() >= expected && expected as u64 == length
            );
        }
        2 => assert_eq!(whole.payload, bytes, "body until close"),
        _ => {}
    }
    // After an error, what was left unread depends on where the reads stopped; the payload
    // delivered before it and the error itself do not.
    if whole.failed {
        assert!(cut.failed && single.failed, "error depends on the reads");
        assert_eq!(whole.payload, cut.payload, "cut at {cuts:?}");
        assert_eq!(
            whole.payload,
            single.payload,
            "reads of {}",
            strided.first().map_or(0, |r| r.len())
        );
    } else {
        assert_eq!(whole, cut, "cut at {cuts:?}");
        assert_eq!(
            whole,
            single,
            "reads of {}",
            strided.first().map_or(0, |r| r.len())
        );
    }
}

/// The HTTP response head parser (`docker::http_stream::parse_head`) and the body decoder it
/// picks, on the bytes after the head. Checks that the head length lies within the input, that
/// the head alone parses the same, that no shorter prefix of it is a complete head, and the
/// body decoder's byte accounting.
pub fn response_head(data: &[u8]) {
    let Ok(Some((status, body, head_len))) = crate::docker::http_stream::parse_head(data) else {
        return;
    };
    assert!(
        head_len <= data.len(),
        "head of {head_len} bytes in {}",
        data.len()
    );
    let again = crate::docker::http_stream::parse_head(&data[..head_len]);
    match again {
        Ok(Some((s, b, n))) => {
            assert_eq!((s, n), (status, head_len), "the head alone");
            assert_eq!(format!("{b:?}"), format!("{body:?}"), "the head alone");
        }
        other => panic!("the head alone does not parse: {other:?}"),
    }
    if head_len > 0 {
        assert!(
            !matches!(
                crate::docker::http_stream::parse_head(&data[..head_len - 1]),
                Ok(Some(_))
            ),
            "a prefix of the head is a complete head"
        );
    }
    let rest = &data[head_len..];
    let decoded = decode_body(body, &[rest]);
    assert!(decoded.payload.len() + decoded.left <= rest.len());
}

/// The timestamp parser (`docker::timestamp`). Checks that the cached parser agrees with the
/// plain one (with an empty cache and one primed by another stamp), that an instant that
/// parses formats back to a stamp that parses to the same instant, and that Docker's own
/// fixed-width form (a valid day, no leap second) formats back to the very same text.
pub fn timestamp(data: &[u8]) {
    let parsed = parse_rfc3339_nanos(data);
    let mut cache = SecondCache::default();
    assert_eq!(
        parse_rfc3339_nanos_cached(data, &mut cache),
        parsed,
        "empty cache"
    );
    assert_eq!(
        parse_rfc3339_nanos_cached(data, &mut cache),
        parsed,
        "primed by itself"
    );
    let mut other = SecondCache::default();
    let _ = parse_rfc3339_nanos_cached(b"2026-11-28T23:49:08.780644778Z", &mut other);
    assert_eq!(
        parse_rfc3339_nanos_cached(data, &mut other),
        parsed,
        "primed by another"
    );
    let Some(ts) = parsed else {
        return;
    };
    let text = format_rfc3339_nanos(ts);
    assert_eq!(text.len(), 30, "{text}");
    let _ = since_param(ts);
    // i64 nanoseconds span 1677..2262, well inside the years the formatter writes unclamped.
    assert_eq!(parse_rfc3339_nanos(text.as_bytes()), Some(ts), "{text}");
    let fixed = data.len() == 30 && data[10] == b'T' && data[19] == b'.' && data[29] == b'Z';
    let day_valid = data.get(8..10).is_some_and(|d| d <= b"28".as_slice());
    let second_valid = data.get(17..19).is_some_and(|s| s <= b"59".as_slice());
    if fixed && day_valid && second_valid {
        assert_eq!(
            text.as_bytes(),
            data,
            "Docker's form formats back to itself"
        );
    }
}

/// A fresh scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lc-fuzz-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Splits `data` into parts, each but the last prefixed by its length (u16 LE, clamped).
fn parts(mut data: &[u8], count: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(count);
    for _ in 1..count {
        let len = match data {
            [a, b, rest @ ..] => {
                data = rest;
                usize::from(u16::from_le_bytes([*a, *b])).min(data.len())
            }
            _ => 0,
        };
        let (part, rest) = data.split_at(len);
        out.push(part);
        data = rest;
    }
    out.push(data);
    out
}

fn segment_options() -> StoreOptions {
    StoreOptions {
        max_bytes: 1 << 30,
        segment_bytes: 512,
        fsync: FsyncPolicy::Never,
    }
}

fn write(path: &Path, bytes: &[u8]) {
    if let Err(e) = std::fs::write(path, bytes) {
        panic!("fuzz scratch {}: {e}", path.display());
    }
}

/// The disk-buffer segment store's reader (`buffer::segment`): `open` (scan, repair) then
/// reading every record. Input: byte 0 bit 0: a `position` file exists; bits 1-2: 1 to 3
/// segment files; bits 3-5: gaps between their numbers; then the position text and the
/// segments' bytes (see `parts`). Checks that `records` and `peek`/`consume` return the same
/// payloads, as many as `open` reported pending, without an error on data unchanged since
/// `open`; and that after draining, one appended record is all a reopen finds.
pub fn segment_store(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let scratch = Scratch::new("segment");
    let dir = &scratch.0;
    if let Err(e) = std::fs::create_dir_all(dir) {
        panic!("fuzz scratch {}: {e}", dir.display());
    }
    let segments = usize::from((flags >> 1) % 3) + 1;
    let files = parts(rest, segments + 1);
    if flags & 1 == 1 {
        write(&dir.join("position"), files[0]);
    }
    let mut number = 0u64;
    for (i, bytes) in files[1..].iter().enumerate() {
        number += 1 + u64::from((flags >> (3 + i)) & 1);
        write(&dir.join(format!("{number:020}.seg")), bytes);
    }
    let (mut store, report) = match SegmentStore::open(dir, segment_options()) {
        Ok(opened) => opened,
        Err(e) => panic!("open failed on a readable directory: {e}"),
    };
    let listed = match store.records() {
        Ok(records) => records,
        Err(e) => panic!("records() failed after open: {e}"),
    };
    assert_eq!(
        listed.len() as u64,
        report.pending_records,
        "records() vs report"
    );
    assert_eq!(store.pending_records(), report.pending_records);
    let mut drained = Vec::new();
    loop {
        match store.peek() {
            Ok(Some((id, payload))) => {
                assert!(!payload.is_empty(), "empty record {id}");
                if let Err(e) = store.consume(id) {
                    panic!("consume({id}) after peek: {e}");
                }
                drained.push((id, payload));
                assert!(
                    drained.len() <= listed.len(),
                    "peek returns more than records()"
                );
            }
            Ok(None) => break,
            Err(e) => panic!("peek failed on data unchanged since open: {e}"),
        }
    }
    assert_eq!(drained, listed, "peek/consume vs records()");
    assert_eq!(store.pending_records(), 0);
    assert_eq!(store.pending_bytes(), 0);
    if let Err(e) = store.append(b"after") {
        panic!("append after draining: {e}");
    }
    drop(store);
    let (mut store, report) = match SegmentStore::open(dir, segment_options()) {
        Ok(opened) => opened,
        Err(e) => panic!("reopen failed: {e}"),
    };
    assert_eq!(report.pending_records, 1, "reopen: {:?}", report.problems);
    match store.peek() {
        Ok(Some((_, payload))) => assert_eq!(payload, b"after"),
        other => panic!("reopen: {other:?}"),
    }
}

fn metrics() -> Arc<Metrics> {
    static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();
    METRICS.get_or_init(|| Arc::new(Metrics::new())).clone()
}

/// The container id the checkpoint target's file is named after.
pub const CHECKPOINT_ID: &str = "0123456789ab";

/// The checkpoint reader (`checkpoint::CheckpointStore::open`): the input is the content of
/// `checkpoints/0123456789ab.json`. Whatever the store accepts must be usable: the cursor goes
/// through a replay session (a line at its position on each stream, then a later one), is
/// acknowledged and persisted, and a reopen must find that cursor (a cursor still skipping an
/// older version's count: the same resume point and count).
pub fn checkpoint_file(data: &[u8]) {
    let scratch = Scratch::new("checkpoint");
    let dir = &scratch.0;
    let checkpoints = dir.join("checkpoints");
    if let Err(e) = std::fs::create_dir_all(&checkpoints) {
        panic!("fuzz scratch {}: {e}", checkpoints.display());
    }
    write(&checkpoints.join(format!("{CHECKPOINT_ID}.json")), data);
    let store = match CheckpointStore::open(dir, metrics()) {
        Ok(store) => store,
        Err(e) => panic!("open failed on a readable directory: {e}"),
    };
    let Some(cursor) = store.get(CHECKPOINT_ID) else {
        return;
    };
    let since = cursor.since_ns();
    let _ = cursor.count_at_since();
    let mut replay = Replay::new(cursor);
    let mut lines: Vec<LogLine> = [
        (StreamKind::Stdout, since),
        (StreamKind::Stderr, since),
        (StreamKind::Stdout, since.saturating_add(1)),
        (StreamKind::Stderr, since.saturating_add(1)),
    ]
    .into_iter()
    .map(|(stream, ts_ns)| LogLine {
        ts_ns,
        stream,
        message: Bytes::from_static(b"x"),
        truncated: false,
        extra: None,
    })
    .collect();
    replay.filter(&mut lines);
    let after = replay.cursor(None);
    assert!(
        after.is_at_or_after(&cursor),
        "a replay moved the cursor back"
    );
    store.ack(CHECKPOINT_ID, after);
    assert!(store.persist(), "persist failed");
    drop(store);
    let store = match CheckpointStore::open(dir, metrics()) {
        Ok(store) => store,
        Err(e) => panic!("reopen failed: {e}"),
    };
    let reread = store.get(CHECKPOINT_ID);
    if after.legacy_count == 0 {
        assert_eq!(reread, Some(after), "a persisted cursor reads back");
    } else {
        // Still skipping an older version's count: written back in that version's form,
        // which keeps what it means (where reading resumes, how many lines there to skip).
        let meaning = |c: Cursor| (c.since_ns(), c.count_at_since());
        assert_eq!(
            reread.map(meaning),
            Some(meaning(after)),
            "a legacy cursor reads back"
        );
    }
}

/// The config loader (`config::Config::parse`) on YAML text (invalid UTF-8 replaced, as it
/// could never reach the parser). Checks that an error names its source and says something.
pub fn config_yaml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = Config::parse(&text, "fuzz.yaml") {
        assert_eq!(e.file(), "fuzz.yaml");
        assert!(!e.message().trim().is_empty(), "empty config error");
    }
}

/// The capture path after the socket: frame decoder, assembler (pieces merged, lines cut at
/// `max_line_bytes`) and replay filter. Input: byte 0 bit 0 TTY, bytes 1-2 `max_line_bytes`
/// (LE u16, at least 1), byte 3 where a first session stops (a fraction of the lines), then
/// the stream. Checks that no line exceeds `max_line_bytes` and, when the lines are in an
/// order Docker can produce (non-decreasing per stream, the other stream at most the reorder
/// slack behind), that a second session from the first one's cursor yields exactly the lines
/// the first did not deliver.
pub fn capture_session(data: &[u8]) {
    let [flags, m0, m1, stop, stream @ ..] = data else {
        return;
    };
    let tty = flags & 1 == 1;
    let max_line = usize::from(u16::from_le_bytes([*m0, *m1]).max(1));
    let mut decoder = Decoder::new(tty);
    decoder.push(Bytes::copy_from_slice(stream));
    let mut assembler = Assembler::new(max_line);
    let mut lines = Vec::new();
    while let Ok(Some(message)) = decoder.next_message() {
        if let Message::Log { stream, payload } = message {
            assembler.push(stream, payload, &mut lines);
        }
    }
    if let Some(Message::Log { stream, payload }) = decoder.finish() {
        assembler.push(stream, payload, &mut lines);
    }
    assembler.flush(&mut lines);
    assert!(!assembler.has_open_line());
    for line in &lines {
        assert!(
            line.message.len() <= max_line,
            "line of {} bytes over max_line_bytes {max_line}",
            line.message.len()
        );
    }
    if !docker_order(&lines) {
        return;
    }
    let k = lines.len() * usize::from(*stop) / 256;
    let start = Cursor::at(lines.iter().map(|l| l.ts_ns).min().unwrap_or(0));
    let mut first = Replay::new(start);
    let mut delivered = lines[..k].to_vec();
    first.filter(&mut delivered);
    assert_eq!(delivered.len(), k, "a first session drops lines");
    let cursor = first.cursor(None);
    let since = cursor.since_ns();
    let mut second = Replay::new(cursor);
    let mut reopened: Vec<LogLine> = lines.iter().filter(|l| l.ts_ns >= since).cloned().collect();
    second.filter(&mut reopened);
    let key = |l: &LogLine| (l.ts_ns, l.stream, l.message.clone());
    assert_eq!(
        reopened.iter().map(key).collect::<Vec<_>>(),
        lines[k..].iter().map(key).collect::<Vec<_>>(),
        "the second session after {k} lines (since {since})"
    );
}

/// Whether the lines are in an order a log file can hold: all stamped, non-decreasing per
/// stream, and no line stamped more than the reorder slack before an earlier one.
fn docker_order(lines: &[LogLine]) -> bool {
    let mut last = [i64::MIN; 2];
    let mut highest = i64::MIN;
    for line in lines {
        if line.ts_ns == crate::capture::assembler::UNSTAMPED {
            return false;
        }
        let slot = usize::from(line.stream == StreamKind::Stderr);
        if line.ts_ns < last[slot]
            || line.ts_ns < highest.saturating_sub(crate::capture::cursor::REORDER_SLACK_NS)
        {
            return false;
        }
        last[slot] = line.ts_ns;
        highest = highest.max(line.ts_ns);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs every file of `fuzz/corpus/<target>` through `entry`; returns how many there were.
    fn run_corpus(target: &str, entry: fn(&[u8])) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut count = 0;
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()));
        for item in entries {
            let path = item.expect("corpus entry").path();
            let bytes = std::fs::read(&path).expect("corpus file");
            let name = path.display().to_string();
            let result = std::panic::catch_unwind(|| entry(&bytes));
            assert!(result.is_ok(), "{name} fails");
            count += 1;
        }
        assert!(count > 0, "empty seed corpus {}", dir.display());
        count
    }

    #[test]
    fn frame_decoder_corpus() {
        run_corpus("frame_decoder", frame_decoder);
    }

    #[test]
    fn body_decoder_corpus() {
        run_corpus("body_decoder", body_decoder);
    }

    #[test]
    fn response_head_corpus() {
        run_corpus("response_head", response_head);
    }

    #[test]
    fn timestamp_corpus() {
        run_corpus("timestamp", timestamp);
    }

    #[test]
    fn segment_store_corpus() {
        run_corpus("segment_store", segment_store);
    }

    #[test]
    fn checkpoint_file_corpus() {
        run_corpus("checkpoint_file", checkpoint_file);
    }

    #[test]
    fn config_yaml_corpus() {
        run_corpus("config_yaml", config_yaml);
    }

    #[test]
    fn capture_session_corpus() {
        run_corpus("capture_session", capture_session);
    }
}
