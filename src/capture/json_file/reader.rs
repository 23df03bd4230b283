//! Reads a container's json-file log as one byte stream across Docker's rotations: from the
//! file chosen by the cursor (see `files::start_index`) through every newer file to the one
//! Docker writes, and on when Docker rotates it. Blocking, in bounded steps (one read each).
//!
//! The file being read is held open: a rename (rotation), a compression (the plain copy is
//! deleted once the `.gz` is complete) or the container's removal does not take its bytes
//! away. Its successor is the file after it in the listing, where it is found by (dev, inode)
//! (a rename keeps them); only its `.gz` copy is recognised by its first entry, and if several
//! `.gz` files begin with that entry (pieces of one long line share a timestamp), the reader
//! asks to be reopened from the cursor ([`is_reopen`]) instead of guessing. A file that has left
//! the rotation altogether (`max-file=1`: Docker unlinks the log and creates a new one; or the
//! oldest, deleted while read) is followed by the oldest file listed: the resume filter drops
//! what was already delivered.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::files::{ChainFile, LogFiles, first_line, first_ts, start_index};
use crate::checkpoint::FileId;
use crate::sources::follow::{Followed, PathState};

/// The file being read cannot be placed in Docker's rotation with certainty: reopen from the
/// cursor (no back-off: nothing failed).
#[derive(Debug)]
pub struct Reopen(pub String);

impl std::fmt::Display for Reopen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reopen {}

/// Whether a reader error asks for a reopen from the cursor (see [`Reopen`]).
pub fn is_reopen(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Reopen>())
}

/// What one step brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Bytes appended to the buffer.
    Read(usize),
    /// Moved on to the next file (Docker rotated); read again.
    Moved,
    /// At the end of the file Docker writes (or of the last one left): nothing new for now.
    Idle,
}

enum Active {
    /// The file Docker writes (opened at its path), or a rotated plain one.
    Plain(Followed),
    Compressed {
        decoder: MultiGzDecoder<File>,
        path: std::path::PathBuf,
        id: FileId,
    },
}

pub struct ChainReader {
    files: LogFiles,
    active: Active,
    /// The active file was opened as the one Docker writes: at its end, ask whether Docker
    /// has rotated it since.
    live: bool,
    /// First entry of the active file, what it is known by (taken when leaving the written
    /// file: only a rotated file is final).
    head: Vec<u8>,
    /// Rotations followed (moves to a successor).
    pub rotations: u64,
    /// Truncations of the written file seen (older daemons rotate `max-file=1` by reopening
    /// the log with `O_TRUNC`): read again from 0.
    pub truncations: u64,
}

impl ChainReader {
    /// Opens the chain at the file that can hold `since_ns` (see `start_index`). `preopened`:
    /// the written file, opened when the container started — used when the files are gone
    /// (an `--rm` container already removed).
    pub fn open(
        files: LogFiles,
        since_ns: i64,
        preopened: Option<File>,
    ) -> io::Result<ChainReader> {
        let listed = match files.list() {
            Ok(listed) => listed,
            Err(e) if e.kind() == io::ErrorKind::NotFound && preopened.is_some() => Vec::new(),
            Err(e) => return Err(e),
        };
        if listed.is_empty() {
            return match preopened {
                Some(file) => Self::from_preopened(files, file),
                None => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} does not exist (yet)", files.current().display()),
                )),
            };
        }
        // Open each file looked at, so what was decided by its first entry is what is read
        // even if Docker renames files meanwhile.
        let mut opened: Vec<Option<io::Result<File>>> = (0..listed.len()).map(|_| None).collect();
        let start = start_index(listed.len(), since_ns, |i| {
            let file = opened[i].get_or_insert_with(|| File::open(&listed[i].path));
            match file {
                Ok(f) => first_ts(f, listed[i].compressed).ok().flatten(),
                Err(_) => None,
            }
        });
        let file = match opened[start].take() {
            Some(r) => r,
            None => File::open(&listed[start].path),
        };
        let file = match file {
            Ok(f) => f,
            // Renamed or removed between the listing and the open.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return match preopened {
                    Some(file) => Self::from_preopened(files, file),
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        // By name, not by place: a listing taken between Docker's rename of the written file
        // and its create has `.1` last, and `.1` is final.
        let live = listed[start].path == files.current();
        let (active, head) = activate(file, &listed[start], live)?;
        Ok(ChainReader {
            active,
            files,
            live,
            head,
            rotations: 0,
            truncations: 0,
        })
    }

    /// Reads the descriptor opened at start from its beginning (it may be a clone of one read
    /// before, sharing its position: the resume filter drops what was delivered).
    fn from_preopened(files: LogFiles, file: File) -> io::Result<ChainReader> {
        let path = files.current();
        let mut followed = Followed::from_file(file, &path)?;
        followed.rewind()?;
        Ok(ChainReader {
            active: Active::Plain(followed),
            files,
            live: true,
            head: Vec::new(),
            rotations: 0,
            truncations: 0,
        })
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        match &self.active {
            Active::Plain(f) => &f.path,
            Active::Compressed { path, .. } => path,
        }
    }

    fn id(&self) -> FileId {
        match &self.active {
            Active::Plain(f) => f.id,
            Active::Compressed { id, .. } => *id,
        }
    }

    /// Reads up to `max` bytes into `buf`, or moves on to the next file at the end of this one.
    pub fn step(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<Step> {
        let n = self.read(buf, max)?;
        if n > 0 {
            return Ok(Step::Read(n));
        }
        if self.live
            && let Active::Plain(f) = &mut self.active
        {
            match f.path_state()? {
                PathState::Same => return Ok(Step::Idle),
                // Older daemons rotate with `max-file=1` by reopening the log with O_TRUNC
                // (and anyone may truncate it): the rest is read from 0. What was written
                // after the last read and before the truncation is lost to us; a file that
                // has grown past the offset again by the time it is looked at is not seen
                // as truncated.
                PathState::Truncated { .. } => {
                    f.rewind()?;
                    self.truncations += 1;
                    return Ok(Step::Moved);
                }
                PathState::Replaced(_) | PathState::Gone => {
                    // Rotated: what Docker wrote before the rename first.
                    let n = self.read(buf, max)?;
                    if n > 0 {
                        return Ok(Step::Read(n));
                    }
                }
            }
        }
        self.advance()
    }

    fn read(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        match &mut self.active {
            Active::Plain(f) => {
                // Only what is there: a file at its end (polled) is not read into a zeroed
                // buffer of `max` bytes every time.
                let available = f.size()?.saturating_sub(f.offset);
                if available == 0 {
                    return Ok(0);
                }
                f.read(buf, max.min(usize::try_from(available).unwrap_or(max)))
            }
            Active::Compressed { decoder, .. } => {
                let start = buf.len();
                buf.resize(start + max, 0);
                let n = loop {
                    match decoder.read(&mut buf[start..]) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            buf.truncate(start);
                            return Err(e);
                        }
                    }
                };
                buf.truncate(start + n);
                Ok(n)
            }
        }
    }

    /// At the end of a file that will not grow: on to the file after it, if there is one.
    fn advance(&mut self) -> io::Result<Step> {
        if self.live
            && let Active::Plain(f) = &self.active
        {
            // Final now (Docker writes the next file): what its `.gz` copy will be known by.
            self.head = first_line(f.file(), false)?;
        }
        let listed = match self.files.list() {
            Ok(l) => l,
            // The container's directory is gone (removed): this file was the last.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Step::Idle),
            Err(e) => return Err(e),
        };
        let next = match self.place(&listed)? {
            Some(i) => listed.get(i + 1),
            // Not in the rotation any more (unlinked by `max-file=1`, or deleted as the oldest
            // while it was read): everything older is gone too, so the oldest file listed
            // follows it.
            None => listed.first(),
        };
        let Some(next) = next.cloned() else {
            // The newest file: Docker has not created the next one yet.
            return Ok(Step::Idle);
        };
        let file = match File::open(&next.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Step::Idle),
            Err(e) => return Err(e),
        };
        let live = next.path == self.files.current();
        // Still the file being read (its rotation not done yet): nothing new.
        if self.same_open_file(&file)? {
            return Ok(Step::Idle);
        }
        (self.active, self.head) = activate(file, &next, live)?;
        self.live = live;
        self.rotations += 1;
        Ok(Step::Moved)
    }

    /// Where the file being read is in `listed`: the file with its (dev, inode), else the one
    /// `.gz` copy of it (same first entry). None: not there. Several copies: [`Reopen`].
    fn place(&self, listed: &[ChainFile]) -> io::Result<Option<usize>> {
        use std::os::unix::fs::MetadataExt;
        let id = self.id();
        for (i, f) in listed.iter().enumerate() {
            if let Ok(m) = std::fs::metadata(&f.path)
                && m.dev() == id.dev
                && m.ino() == id.ino
            {
                return Ok(Some(i));
            }
        }
        let reading_plain = matches!(self.active, Active::Plain(_));
        if !reading_plain || self.head.is_empty() {
            return Ok(None);
        }
        let copies: Vec<usize> = listed
            .iter()
            .enumerate()
            .filter(|(_, f)| f.compressed && self.is_copy(f))
            .map(|(i, _)| i)
            .collect();
        match copies[..] {
            [] => Ok(None),
            [i] => Ok(Some(i)),
            _ => Err(io::Error::other(Reopen(format!(
                "{} has {} compressed copies in Docker's rotation (same first entry); reopening from the cursor",
                self.path().display(),
                copies.len()
            )))),
        }
    }

    fn same_open_file(&self, other: &File) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let m = other.metadata()?;
        let id = self.id();
        Ok(id.dev == m.dev() && id.ino == m.ino())
    }

    /// Whether the listed `.gz` file is a compressed copy of the one being read (same first
    /// entry).
    fn is_copy(&self, f: &ChainFile) -> bool {
        let Ok(file) = File::open(&f.path) else {
            return false;
        };
        match first_line(&file, true) {
            Ok(head) => head == self.head,
            Err(_) => false,
        }
    }
}

/// The reading state of a listed file, and its first entry if it is final (a rotated file;
/// the written one is known by them only once Docker has rotated it).
fn activate(file: File, listed: &ChainFile, live: bool) -> io::Result<(Active, Vec<u8>)> {
    let head = if live {
        Vec::new()
    } else {
        first_line(&file, listed.compressed)?
    };
    let active = if listed.compressed {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata()?;
        Active::Compressed {
            id: FileId {
                dev: m.dev(),
                ino: m.ino(),
            },
            decoder: MultiGzDecoder::new(file),
            path: listed.path.clone(),
        }
    } else {
        Active::Plain(Followed::from_file(file, &listed.path)?)
    };
    Ok((active, head))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Docker {
        files: LogFiles,
        current: File,
        max_files: u32,
        compress: bool,
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
        fn new(dir: &Path, max_files: u32, compress: bool) -> Docker {
            let files = LogFiles::of(dir, "c1");
            std::fs::create_dir_all(&files.dir).unwrap();
            let current = File::create(files.current()).unwrap();
            Docker {
                files,
                current,
                max_files,
                compress,
            }
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

    #[test]
    fn follows_rotations_plain_and_compressed_even_several_between_reads() {
        for compress in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut d = Docker::new(dir.path(), 5, compress);
            d.write(0..3);
            let mut r = ChainReader::open(d.files.clone(), 0, None).unwrap();
            assert_eq!(drain(&mut r), (0..3).collect::<Vec<_>>());
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
        let dir = tempfile::tempdir().unwrap();
        let mut d = Docker::new(dir.path(), 1, false);
        d.write(0..3);
        let mut r = ChainReader::open(d.files.clone(), 0, None).unwrap();
        assert_eq!(drain(&mut r), (0..3).collect::<Vec<_>>());
        d.write(3..5);
        d.rotate();
        d.write(5..7);
        assert_eq!(drain(&mut r), (3..7).collect::<Vec<_>>());
        // Twice while the reader does not look: the middle file is lost to everyone.
        d.rotate();
        d.write(7..9);
        d.rotate();
        d.write(9..11);
        assert_eq!(drain(&mut r), (9..11).collect::<Vec<_>>());
        assert_eq!(r.rotations, 2);
    }

    #[test]
    fn max_file_1_truncation_is_read_again_from_0() {
        use std::io::{Seek, SeekFrom};
        let dir = tempfile::tempdir().unwrap();
        let mut d = Docker::new(dir.path(), 1, false);
        d.write(0..10);
        let mut r = ChainReader::open(d.files.clone(), 0, None).unwrap();
        assert_eq!(drain(&mut r), (0..10).collect::<Vec<_>>());
        // As older daemons: the log reopened with O_TRUNC.
        d.current.set_len(0).unwrap();
        d.current.seek(SeekFrom::Start(0)).unwrap();
        d.write(10..12);
        assert_eq!(drain(&mut r), (10..12).collect::<Vec<_>>());
        assert_eq!(r.truncations, 1);
    }

    /// Every file begins with the same entry (pieces of one long line carry one timestamp):
    /// plain files are told apart by inode, so each is read once.
    #[test]
    fn files_with_identical_first_entries_are_each_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Docker::new(dir.path(), 5, false);
        let mut r = ChainReader::open(d.files.clone(), 0, None).unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let mut d = Docker::new(dir.path(), 5, true);
        d.write(999..1000);
        d.write(0..3);
        d.rotate();
        d.write(999..1000);
        d.write(10..13);
        let mut r = ChainReader::open(d.files.clone(), 0, None).unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let mut d = Docker::new(dir.path(), 5, false);
        d.write(0..3);
        let name = d.files.current();
        std::fs::rename(&name, format!("{}.1", name.display())).unwrap();
        // Docker has not created the new file yet.
        let mut r = ChainReader::open(d.files.clone(), 0, None).unwrap();
        assert!(!r.live);
        assert_eq!(drain(&mut r), (0..3).collect::<Vec<_>>());
        d.current = File::create(&name).unwrap();
        d.write(3..5);
        assert_eq!(drain(&mut r), (3..5).collect::<Vec<_>>());
    }

    #[test]
    fn starts_at_the_file_that_holds_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Docker::new(dir.path(), 10, true);
        for k in 0..4 {
            d.write(k * 10..k * 10 + 10);
            d.rotate();
        }
        d.write(40..45);
        let at = |i: i64| 1_000_000_000_000 + i * 1_000_000_000;
        // Line 25 is in the third file (lines 20..30): read from there, nothing older.
        let mut r = ChainReader::open(d.files.clone(), at(25), None).unwrap();
        assert_eq!(drain(&mut r), (20..45).collect::<Vec<_>>());
        // Within a second (the reorder slack) of the fourth file's first entry: the third too.
        let mut r = ChainReader::open(d.files.clone(), at(30), None).unwrap();
        assert_eq!(drain(&mut r)[0], 20);
        let mut r = ChainReader::open(d.files.clone(), at(32), None).unwrap();
        assert_eq!(drain(&mut r)[0], 30);
        let mut r = ChainReader::open(d.files.clone(), 0, None).unwrap();
        assert_eq!(drain(&mut r), (0..45).collect::<Vec<_>>());
    }

    #[test]
    fn a_removed_containers_log_is_read_through_the_descriptor_opened_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Docker::new(dir.path(), 5, false);
        let pre = File::open(d.files.current()).unwrap();
        d.write(0..20);
        std::fs::remove_dir_all(&d.files.dir).unwrap();
        let mut r = ChainReader::open(d.files.clone(), 0, Some(pre)).unwrap();
        assert_eq!(drain(&mut r), (0..20).collect::<Vec<_>>());
        assert!(ChainReader::open(d.files.clone(), 0, None).is_err());
    }

    /// The task keeps the descriptor opened at start and gives each reopen a duplicate (which
    /// shares its read position): a reopen after an error reads the log from its start again.
    #[test]
    fn a_reopen_from_a_duplicate_of_the_descriptor_reads_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Docker::new(dir.path(), 5, false);
        let pre = File::open(d.files.current()).unwrap();
        d.write(0..20);
        std::fs::remove_dir_all(&d.files.dir).unwrap();
        let mut r = ChainReader::open(d.files.clone(), 0, Some(pre.try_clone().unwrap())).unwrap();
        let mut buf = Vec::new();
        r.step(&mut buf, 1000).unwrap();
        drop(r);
        let mut r = ChainReader::open(d.files.clone(), 0, Some(pre.try_clone().unwrap())).unwrap();
        assert_eq!(drain(&mut r), (0..20).collect::<Vec<_>>());
    }
}
