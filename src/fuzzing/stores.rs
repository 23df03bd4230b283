//! The fuzz entry points for what is read from disk: the disk-buffer segment store, the
//! checkpoint file, and the config.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::buffer::{FsyncPolicy, SegmentStore, StoreOptions};
use crate::capture::{Cursor, ResumeFilter};
use crate::checkpoint::CheckpointStore;
use crate::config::Config;
use crate::observability::metrics::Metrics;
use crate::pipeline::{LogLine, StreamKind};

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
/// through a resume-filter session (a line at its position on each stream, then a later one), is
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
    let mut resume = ResumeFilter::new(cursor);
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
    resume.filter(&mut lines);
    let after = resume.cursor(None);
    assert!(
        after.is_at_or_after(&cursor),
        "the resume filter moved the cursor back"
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
