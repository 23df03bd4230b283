//! Following one file by path across rotations: the primitive under the host-file source and
//! the json-file capture mode. Blocking (regular files do not wait): call from a blocking
//! thread or in short steps.
//!
//! A [`Followed`] owns one open descriptor and the byte offset read from it. The descriptor,
//! not the path, is what is read: after a rename (logrotate's `create` mode, Docker's own
//! rotation) or a delete, the old file is read to its end through it, and only then does the
//! caller move on ([`Followed::path_state`] says to where).

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::checkpoint::{FileId, Fingerprint};

/// The identity of what `path` names now (following symlinks), or None if nothing.
pub fn id_of_path(path: &Path) -> io::Result<Option<FileId>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the followed path names now, compared with the open descriptor. Asked at end of file:
/// only then may the caller leave the descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathState {
    /// The same file, at least as long as what was read.
    Same,
    /// The same file, now shorter than the offset read (copytruncate, or `> file`): reading
    /// starts again from 0.
    Truncated { size: u64 },
    /// Another file is at the path (rename + create): the open one is finished once read to
    /// its end.
    Replaced(FileId),
    /// Nothing is at the path (deleted, or renamed with nothing created yet).
    Gone,
}

pub struct Followed {
    file: File,
    pub path: PathBuf,
    pub id: FileId,
    /// Bytes of the file consumed so far (the next read starts here).
    pub offset: u64,
}

impl Followed {
    /// Opens `path` and positions it at `offset` (clamped to nothing: the caller checks the
    /// size against a stored offset first, with [`Followed::size`]).
    pub fn open(path: &Path, offset: u64) -> io::Result<Followed> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))?;
        }
        Ok(Followed::at(file, &meta, path, offset))
    }

    /// Follows an already open file (opened earlier, e.g. before its path could go away), read
    /// from its current read position; `path` is where it was opened.
    pub fn from_file(file: File, path: &Path) -> io::Result<Followed> {
        let mut file = file;
        let meta = file.metadata()?;
        let offset = file.stream_position()?;
        Ok(Followed::at(file, &meta, path, offset))
    }

    /// `file` (with its metadata `meta`, opened at `path`), read from `offset`.
    fn at(file: File, meta: &fs::Metadata, path: &Path, offset: u64) -> Followed {
        Followed {
            file,
            path: path.to_path_buf(),
            id: FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            offset,
        }
    }

    /// The open file (for positional reads, which leave the read position alone).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The open file's current size.
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Appends up to `max` bytes to `buf` (reading until the end of the file or `max`); Ok(0)
    /// at the end of the file (for now). The spare capacity is filled without being zeroed
    /// first (`read_to_end`): a reader woken for a few hundred bytes does not pay for clearing
    /// a whole chunk-sized buffer.
    pub fn read(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let start = buf.len();
        buf.reserve(max);
        let result = (&mut self.file).take(max as u64).read_to_end(buf);
        // Whatever was read before an error is kept: the offset follows the buffer.
        let n = buf.len() - start;
        self.offset += n as u64;
        match result {
            Ok(_) => Ok(n),
            Err(_) if n > 0 => Ok(n),
            Err(e) => Err(e),
        }
    }

    /// Starts again from byte 0 (after a truncation).
    pub fn rewind(&mut self) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        self.offset = 0;
        Ok(())
    }

    /// Moves the read position to `offset` (e.g. back to the start of a held partial line).
    pub fn seek_to(&mut self, offset: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        self.offset = offset;
        Ok(())
    }

    /// What the path names now (see [`PathState`]).
    pub fn path_state(&self) -> io::Result<PathState> {
        match id_of_path(&self.path)? {
            None => Ok(PathState::Gone),
            Some(id) if id != self.id => Ok(PathState::Replaced(id)),
            Some(_) => {
                let size = self.size()?;
                Ok(if size < self.offset {
                    PathState::Truncated { size }
                } else {
                    PathState::Same
                })
            }
        }
    }

    /// The fingerprint of the open file: CRC-32 of its first `len` bytes, or of all it has if
    /// shorter (then `Fingerprint::len` is its size).
    pub fn fingerprint(&self, len: u64) -> io::Result<Fingerprint> {
        fingerprint_of(&self.file, len)
    }
}

/// CRC-32 of the first `len` bytes of `file` (fewer if it is shorter), read with `pread`
/// (the read position is not moved).
pub fn fingerprint_of(file: &File, len: u64) -> io::Result<Fingerprint> {
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(1 << 20)];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Fingerprint {
        len: filled as u64,
        crc32: crc32fast::hash(&buf[..filled]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// `app.log` holding `contents`, in a temporary directory that lives as long as the guard.
    fn app_log(contents: &[u8]) -> io::Result<(tempfile::TempDir, PathBuf)> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        File::create(&path)?.write_all(contents)?;
        Ok((dir, path))
    }

    #[test]
    fn reads_the_renamed_file_to_its_end_then_sees_the_new_one() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        let mut w = File::create(&path)?;
        w.write_all(b"one\n")?;
        let mut f = Followed::open(&path, 0)?;
        let mut buf = Vec::new();
        assert_eq!(f.read(&mut buf, 64)?, 4);
        w.write_all(b"two\n")?;
        fs::rename(&path, dir.path().join("app.log.1"))?;
        assert_eq!(f.path_state()?, PathState::Gone);
        File::create(&path)?.write_all(b"three\n")?;
        assert!(matches!(f.path_state()?, PathState::Replaced(_)));
        assert_eq!(f.read(&mut buf, 64)?, 4, "the renamed file's last line");
        assert_eq!(f.read(&mut buf, 64)?, 0);
        assert_eq!(buf, b"one\ntwo\n");
        Ok(())
    }

    #[test]
    fn a_file_shorter_than_the_offset_was_truncated() -> io::Result<()> {
        let (_dir, path) = app_log(b"0123456789\n")?;
        let mut f = Followed::open(&path, 0)?;
        let mut buf = Vec::new();
        f.read(&mut buf, 64)?;
        File::create(&path)?.write_all(b"ab\n")?;
        assert_eq!(f.path_state()?, PathState::Truncated { size: 3 });
        f.rewind()?;
        buf.clear();
        f.read(&mut buf, 64)?;
        assert_eq!(buf, b"ab\n");
        Ok(())
    }

    #[test]
    fn the_fingerprint_covers_at_most_len_bytes() -> io::Result<()> {
        let (_dir, path) = app_log(b"abcdef")?;
        let f = Followed::open(&path, 0)?;
        assert_eq!(f.fingerprint(4)?.len, 4);
        assert_eq!(f.fingerprint(4)?.crc32, crc32fast::hash(b"abcd"));
        assert_eq!(f.fingerprint(100)?.len, 6);
        Ok(())
    }
}
