use super::*;
use std::io::Write;

/// A container's json-file log as the daemon writes and rotates it, in a temporary directory.
struct Docker {
    files: LogFiles,
    current: File,
    max_files: u32,
    compress: bool,
    _dir: tempfile::TempDir,
}

/// Every entry begins with the same 600 bytes (as pieces of long lines of one character
/// do): only the whole first entry tells files apart.
fn entry(i: u64) -> String {
    format!(
        "{{\"log\":\"{}line {i}\\n\",\"stream\":\"stdout\",\"time\":\"{}\"}}\n",
        "x".repeat(600),
        crate::docker::timestamp::format_rfc3339_nanos(
            1_000_000_000_000 + i as i64 * 1_000_000_000
        )
    )
}

impl Docker {
    fn new(max_files: u32, compress: bool) -> Docker {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::of(dir.path(), "c1");
        std::fs::create_dir_all(&files.dir).unwrap();
        let current = File::create(files.current()).unwrap();
        Docker {
            files,
            current,
            max_files,
            compress,
            _dir: dir,
        }
    }
    /// A reader of this log from its start, without a descriptor opened beforehand.
    fn reader(&self) -> ChainReader {
        ChainReader::open(self.files.clone(), 0, None).unwrap()
    }
    fn write(&mut self, range: std::ops::Range<u64>) {
        for i in range {
            self.current.write_all(entry(i).as_bytes()).unwrap();
        }
    }
    /// As moby's `rotate` (+ `compressFile`); with `max-file=1`, newer daemons unlink the
    /// log and create a new one.
    fn rotate(&mut self) {
        if self.max_files < 2 {
            std::fs::remove_file(self.files.current()).unwrap();
            self.current = File::create(self.files.current()).unwrap();
            return;
        }
        let ext = if self.compress { ".gz" } else { "" };
        let name = self.files.current();
        let numbered = |n: u32, ext: &str| format!("{}.{n}{ext}", name.display());
        let _ = std::fs::remove_file(numbered(self.max_files - 1, ext));
        for i in (2..self.max_files).rev() {
            let _ = std::fs::rename(numbered(i - 1, ext), numbered(i, ext));
        }
        std::fs::rename(&name, numbered(1, "")).unwrap();
        self.current = File::create(&name).unwrap();
        if self.compress {
            let plain = std::fs::read(numbered(1, "")).unwrap();
            let mut enc = flate2::write::GzEncoder::new(
                File::create(numbered(1, ".gz")).unwrap(),
                flate2::Compression::fast(),
            );
            enc.write_all(&plain).unwrap();
            enc.finish().unwrap();
            std::fs::remove_file(numbered(1, "")).unwrap();
        }
    }
}

/// Every `line N` the reader gives until it is idle.
fn drain(r: &mut ChainReader) -> Vec<u64> {
    let mut buf = Vec::new();
    for step in 0.. {
        assert!(
            step < 100_000,
            "the reader never comes to rest (re-reading files?)"
        );
        match r.step(&mut buf, 100).unwrap() {
            Step::Read(_) | Step::Moved => {}
            Step::Idle => break,
        }
    }
    String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(|l| {
            l.split("line ")
                .nth(1)
                .unwrap()
                .split('\\')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

/// Asserts that the reader gives exactly the lines `want` until it is idle.
#[track_caller]
fn assert_drains(r: &mut ChainReader, want: std::ops::Range<u64>) {
    assert_eq!(drain(r), want.collect::<Vec<_>>());
}

#[test]
fn follows_rotations_plain_and_compressed_even_several_between_reads() {
    for compress in [false, true] {
        let mut d = Docker::new(5, compress);
        d.write(0..3);
        let mut r = d.reader();
        assert_drains(&mut r, 0..3);
        d.write(3..5);
        d.rotate();
        d.write(5..7);
        assert_eq!(
            drain(&mut r),
            (3..7).collect::<Vec<_>>(),
            "compress {compress}"
        );
        // Three rotations while the reader does not look.
        for k in 0..3 {
            d.write(7 + k * 2..9 + k * 2);
            d.rotate();
        }
        d.write(13..14);
        assert_eq!(
            drain(&mut r),
            (7..14).collect::<Vec<_>>(),
            "compress {compress}"
        );
        assert_eq!(r.rotations, 4);
    }
}

#[test]
fn max_file_1_unlink_and_create_is_followed_without_error() {
    let mut d = Docker::new(1, false);
    d.write(0..3);
    let mut r = d.reader();
    assert_drains(&mut r, 0..3);
    d.write(3..5);
    d.rotate();
    d.write(5..7);
    assert_drains(&mut r, 3..7);
    // Twice while the reader does not look: the middle file is lost to everyone.
    d.rotate();
    d.write(7..9);
    d.rotate();
    d.write(9..11);
    assert_drains(&mut r, 9..11);
    assert_eq!(r.rotations, 2);
}

#[test]
fn max_file_1_truncation_is_read_again_from_0() {
    use std::io::{Seek, SeekFrom};
    // Starts as the test above (write, open, read it all); kept apart: what follows differs.
    let mut d = Docker::new(1, false);
    d.write(0..10);
    let mut r = d.reader();
    assert_drains(&mut r, 0..10);
    // As older daemons: the log reopened with O_TRUNC.
    d.current.set_len(0).unwrap();
    d.current.seek(SeekFrom::Start(0)).unwrap();
    d.write(10..12);
    assert_drains(&mut r, 10..12);
    assert_eq!(r.truncations, 1);
}

/// Every file begins with the same entry (pieces of one long line carry one timestamp):
/// plain files are told apart by inode, so each is read once.
#[test]
fn files_with_identical_first_entries_are_each_read_once() {
    let mut d = Docker::new(5, false);
    let mut r = d.reader();
    let mut want = Vec::new();
    for k in 0..4 {
        d.write(999..1000);
        d.write(k * 10..k * 10 + 3);
        want.push(999);
        want.extend(k * 10..k * 10 + 3);
        d.rotate();
    }
    d.write(50..52);
    want.extend(50..52);
    assert_eq!(drain(&mut r), want);
    assert_eq!(r.rotations, 4);
}

/// Several `.gz` copies with the first entry of the plain file being read: no guess.
#[test]
fn several_compressed_copies_with_the_same_first_entry_ask_for_a_reopen() {
    let mut d = Docker::new(5, true);
    d.write(999..1000);
    d.write(0..3);
    d.rotate();
    d.write(999..1000);
    d.write(10..13);
    let mut r = d.reader();
    let mut buf = Vec::new();
    while r.step(&mut buf, 1 << 20).unwrap() != Step::Idle {}
    // Rotated and compressed while read: two `.gz` files begin with its first entry.
    d.rotate();
    let err = loop {
        match r.step(&mut buf, 1 << 20) {
            Ok(Step::Idle) => panic!("moved on by a guess"),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(is_reopen(&err), "{err}");
}

#[test]
fn a_listing_between_rename_and_create_does_not_make_the_rotated_file_live() {
    let mut d = Docker::new(5, false);
    d.write(0..3);
    let name = d.files.current();
    std::fs::rename(&name, format!("{}.1", name.display())).unwrap();
    // Docker has not created the new file yet.
    let mut r = d.reader();
    assert!(!r.live);
    assert_drains(&mut r, 0..3);
    d.current = File::create(&name).unwrap();
    d.write(3..5);
    assert_drains(&mut r, 3..5);
}

#[test]
fn starts_at_the_file_that_holds_the_cursor() {
    let mut d = Docker::new(10, true);
    for k in 0..4 {
        d.write(k * 10..k * 10 + 10);
        d.rotate();
    }
    d.write(40..45);
    let at = |i: i64| 1_000_000_000_000 + i * 1_000_000_000;
    // Line 25 is in the third file (lines 20..30): read from there, nothing older.
    let mut r = ChainReader::open(d.files.clone(), at(25), None).unwrap();
    assert_drains(&mut r, 20..45);
    // Within a second (the reorder slack) of the fourth file's first entry: the third too.
    let mut r = ChainReader::open(d.files.clone(), at(30), None).unwrap();
    assert_eq!(drain(&mut r)[0], 20);
    let mut r = ChainReader::open(d.files.clone(), at(32), None).unwrap();
    assert_eq!(drain(&mut r)[0], 30);
    let mut r = d.reader();
    assert_drains(&mut r, 0..45);
}

#[test]
fn a_removed_containers_log_is_read_through_the_descriptor_opened_at_start() {
    let mut d = Docker::new(5, false);
    let pre = File::open(d.files.current()).unwrap();
    d.write(0..20);
    std::fs::remove_dir_all(&d.files.dir).unwrap();
    let mut r = ChainReader::open(d.files.clone(), 0, Some(pre)).unwrap();
    assert_drains(&mut r, 0..20);
    assert!(ChainReader::open(d.files.clone(), 0, None).is_err());
}

/// The task keeps the descriptor opened at start and gives each reopen a duplicate (which
/// shares its read position): a reopen after an error reads the log from its start again.
#[test]
fn a_reopen_from_a_duplicate_of_the_descriptor_reads_from_the_start() {
    let mut d = Docker::new(5, false);
    let pre = File::open(d.files.current()).unwrap();
    d.write(0..20);
    std::fs::remove_dir_all(&d.files.dir).unwrap();
    let mut r = ChainReader::open(d.files.clone(), 0, Some(pre.try_clone().unwrap())).unwrap();
    let mut buf = Vec::new();
    r.step(&mut buf, 1000).unwrap();
    drop(r);
    let mut r = ChainReader::open(d.files.clone(), 0, Some(pre.try_clone().unwrap())).unwrap();
    assert_drains(&mut r, 0..20);
}
