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
#[path = "reader_tests.rs"]
mod tests;
